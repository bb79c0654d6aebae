from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EventMeta(_message.Message):
    __slots__ = ("event_id", "created_unix_ms", "producer")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    created_unix_ms: int
    producer: str
    def __init__(self, event_id: _Optional[str] = ..., created_unix_ms: _Optional[int] = ..., producer: _Optional[str] = ...) -> None: ...

class AnnotationSubmitted(_message.Message):
    __slots__ = ("meta", "case_id", "iteration", "annotation_key", "provenance_key", "annotator_id", "model_version")
    META_FIELD_NUMBER: _ClassVar[int]
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    ANNOTATION_KEY_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_KEY_FIELD_NUMBER: _ClassVar[int]
    ANNOTATOR_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    meta: EventMeta
    case_id: str
    iteration: int
    annotation_key: str
    provenance_key: str
    annotator_id: str
    model_version: str
    def __init__(self, meta: _Optional[_Union[EventMeta, _Mapping]] = ..., case_id: _Optional[str] = ..., iteration: _Optional[int] = ..., annotation_key: _Optional[str] = ..., provenance_key: _Optional[str] = ..., annotator_id: _Optional[str] = ..., model_version: _Optional[str] = ...) -> None: ...

class BatchCompleted(_message.Message):
    __slots__ = ("meta", "iteration", "case_ids")
    META_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    CASE_IDS_FIELD_NUMBER: _ClassVar[int]
    meta: EventMeta
    iteration: int
    case_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, meta: _Optional[_Union[EventMeta, _Mapping]] = ..., iteration: _Optional[int] = ..., case_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ModelPublished(_message.Message):
    __slots__ = ("meta", "version", "parent_version", "weights_key", "metadata_key", "iteration", "metrics", "promoted", "reason")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    META_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PARENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_KEY_FIELD_NUMBER: _ClassVar[int]
    METADATA_KEY_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    PROMOTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    meta: EventMeta
    version: str
    parent_version: str
    weights_key: str
    metadata_key: str
    iteration: int
    metrics: _containers.ScalarMap[str, float]
    promoted: bool
    reason: str
    def __init__(self, meta: _Optional[_Union[EventMeta, _Mapping]] = ..., version: _Optional[str] = ..., parent_version: _Optional[str] = ..., weights_key: _Optional[str] = ..., metadata_key: _Optional[str] = ..., iteration: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., promoted: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class ScoringRequested(_message.Message):
    __slots__ = ("meta", "model_version", "strategy", "part", "parts", "case_ids")
    META_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    CASE_IDS_FIELD_NUMBER: _ClassVar[int]
    meta: EventMeta
    model_version: str
    strategy: str
    part: int
    parts: int
    case_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, meta: _Optional[_Union[EventMeta, _Mapping]] = ..., model_version: _Optional[str] = ..., strategy: _Optional[str] = ..., part: _Optional[int] = ..., parts: _Optional[int] = ..., case_ids: _Optional[_Iterable[str]] = ...) -> None: ...
