from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetScorerStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ScorerStatus(_message.Message):
    __slots__ = ("partitions", "parts_scored", "slices_scored", "slices_per_s", "last_version")
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    PARTS_SCORED_FIELD_NUMBER: _ClassVar[int]
    SLICES_SCORED_FIELD_NUMBER: _ClassVar[int]
    SLICES_PER_S_FIELD_NUMBER: _ClassVar[int]
    LAST_VERSION_FIELD_NUMBER: _ClassVar[int]
    partitions: _containers.RepeatedScalarFieldContainer[int]
    parts_scored: int
    slices_scored: int
    slices_per_s: float
    last_version: str
    def __init__(self, partitions: _Optional[_Iterable[int]] = ..., parts_scored: _Optional[int] = ..., slices_scored: _Optional[int] = ..., slices_per_s: _Optional[float] = ..., last_version: _Optional[str] = ...) -> None: ...

class WhoAmIRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WhoAmIResponse(_message.Message):
    __slots__ = ("name", "role")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: str
    def __init__(self, name: _Optional[str] = ..., role: _Optional[str] = ...) -> None: ...

class CheckLeaseRequest(_message.Message):
    __slots__ = ("case_id", "lease_id", "annotator_id")
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    ANNOTATOR_ID_FIELD_NUMBER: _ClassVar[int]
    case_id: str
    lease_id: str
    annotator_id: str
    def __init__(self, case_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., annotator_id: _Optional[str] = ...) -> None: ...

class CheckLeaseResponse(_message.Message):
    __slots__ = ("iteration", "model_version", "lease_expires_at")
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    iteration: int
    model_version: str
    lease_expires_at: float
    def __init__(self, iteration: _Optional[int] = ..., model_version: _Optional[str] = ..., lease_expires_at: _Optional[float] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SelectorStatus(_message.Message):
    __slots__ = ("iteration", "batch", "batch_done", "model_version", "pool_size", "annotated", "initial", "complete", "max_iterations", "annotators", "scoring_slices_per_s", "scores_version", "event_lag_s")
    class EventLagSEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    BATCH_DONE_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    POOL_SIZE_FIELD_NUMBER: _ClassVar[int]
    ANNOTATED_FIELD_NUMBER: _ClassVar[int]
    INITIAL_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    MAX_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    ANNOTATORS_FIELD_NUMBER: _ClassVar[int]
    SCORING_SLICES_PER_S_FIELD_NUMBER: _ClassVar[int]
    SCORES_VERSION_FIELD_NUMBER: _ClassVar[int]
    EVENT_LAG_S_FIELD_NUMBER: _ClassVar[int]
    iteration: int
    batch: _containers.RepeatedScalarFieldContainer[str]
    batch_done: _containers.RepeatedScalarFieldContainer[str]
    model_version: str
    pool_size: int
    annotated: int
    initial: int
    complete: bool
    max_iterations: int
    annotators: _containers.RepeatedCompositeFieldContainer[AnnotatorProgress]
    scoring_slices_per_s: float
    scores_version: str
    event_lag_s: _containers.ScalarMap[str, float]
    def __init__(self, iteration: _Optional[int] = ..., batch: _Optional[_Iterable[str]] = ..., batch_done: _Optional[_Iterable[str]] = ..., model_version: _Optional[str] = ..., pool_size: _Optional[int] = ..., annotated: _Optional[int] = ..., initial: _Optional[int] = ..., complete: _Optional[bool] = ..., max_iterations: _Optional[int] = ..., annotators: _Optional[_Iterable[_Union[AnnotatorProgress, _Mapping]]] = ..., scoring_slices_per_s: _Optional[float] = ..., scores_version: _Optional[str] = ..., event_lag_s: _Optional[_Mapping[str, float]] = ...) -> None: ...

class AnnotatorProgress(_message.Message):
    __slots__ = ("annotator_id", "leased", "submitted")
    ANNOTATOR_ID_FIELD_NUMBER: _ClassVar[int]
    LEASED_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_FIELD_NUMBER: _ClassVar[int]
    annotator_id: str
    leased: int
    submitted: int
    def __init__(self, annotator_id: _Optional[str] = ..., leased: _Optional[int] = ..., submitted: _Optional[int] = ...) -> None: ...

class NextCaseRequest(_message.Message):
    __slots__ = ("annotator_id",)
    ANNOTATOR_ID_FIELD_NUMBER: _ClassVar[int]
    annotator_id: str
    def __init__(self, annotator_id: _Optional[str] = ...) -> None: ...

class NextCaseResponse(_message.Message):
    __slots__ = ("case_id", "iteration", "lease_id", "model_version", "lease_expires_at")
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    case_id: str
    iteration: int
    lease_id: str
    model_version: str
    lease_expires_at: float
    def __init__(self, case_id: _Optional[str] = ..., iteration: _Optional[int] = ..., lease_id: _Optional[str] = ..., model_version: _Optional[str] = ..., lease_expires_at: _Optional[float] = ...) -> None: ...

class GetScoresRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CaseScore(_message.Message):
    __slots__ = ("case_id", "score", "model_version")
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    case_id: str
    score: float
    model_version: str
    def __init__(self, case_id: _Optional[str] = ..., score: _Optional[float] = ..., model_version: _Optional[str] = ...) -> None: ...

class GetScoresResponse(_message.Message):
    __slots__ = ("scores", "strategy")
    SCORES_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    scores: _containers.RepeatedCompositeFieldContainer[CaseScore]
    strategy: str
    def __init__(self, scores: _Optional[_Iterable[_Union[CaseScore, _Mapping]]] = ..., strategy: _Optional[str] = ...) -> None: ...
