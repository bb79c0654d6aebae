from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OpenSessionRequest(_message.Message):
    __slots__ = ("case_id", "annotator_id", "lease_id")
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    ANNOTATOR_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    case_id: str
    annotator_id: str
    lease_id: str
    def __init__(self, case_id: _Optional[str] = ..., annotator_id: _Optional[str] = ..., lease_id: _Optional[str] = ...) -> None: ...

class SliceMask(_message.Message):
    __slots__ = ("slice", "labels")
    SLICE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    slice: int
    labels: bytes
    def __init__(self, slice: _Optional[int] = ..., labels: _Optional[bytes] = ...) -> None: ...

class OpenSessionResponse(_message.Message):
    __slots__ = ("session_id", "case_id", "num_slices", "height", "width", "classes", "slice_index", "volume_shape", "masks", "model_version", "iteration")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_SLICES_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    SLICE_INDEX_FIELD_NUMBER: _ClassVar[int]
    VOLUME_SHAPE_FIELD_NUMBER: _ClassVar[int]
    MASKS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    case_id: str
    num_slices: int
    height: int
    width: int
    classes: _containers.RepeatedScalarFieldContainer[str]
    slice_index: _containers.RepeatedScalarFieldContainer[int]
    volume_shape: _containers.RepeatedScalarFieldContainer[int]
    masks: _containers.RepeatedCompositeFieldContainer[SliceMask]
    model_version: str
    iteration: int
    def __init__(self, session_id: _Optional[str] = ..., case_id: _Optional[str] = ..., num_slices: _Optional[int] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., classes: _Optional[_Iterable[str]] = ..., slice_index: _Optional[_Iterable[int]] = ..., volume_shape: _Optional[_Iterable[int]] = ..., masks: _Optional[_Iterable[_Union[SliceMask, _Mapping]]] = ..., model_version: _Optional[str] = ..., iteration: _Optional[int] = ...) -> None: ...

class AddClickRequest(_message.Message):
    __slots__ = ("session_id", "slice", "class_index", "y", "x", "positive")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SLICE_FIELD_NUMBER: _ClassVar[int]
    CLASS_INDEX_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    POSITIVE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    slice: int
    class_index: int
    y: int
    x: int
    positive: bool
    def __init__(self, session_id: _Optional[str] = ..., slice: _Optional[int] = ..., class_index: _Optional[int] = ..., y: _Optional[int] = ..., x: _Optional[int] = ..., positive: _Optional[bool] = ...) -> None: ...

class UndoRequest(_message.Message):
    __slots__ = ("session_id", "slice")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SLICE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    slice: int
    def __init__(self, session_id: _Optional[str] = ..., slice: _Optional[int] = ...) -> None: ...

class MaskResponse(_message.Message):
    __slots__ = ("mask", "model_version", "clicks_on_slice", "inference_ms")
    MASK_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CLICKS_ON_SLICE_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_MS_FIELD_NUMBER: _ClassVar[int]
    mask: SliceMask
    model_version: str
    clicks_on_slice: int
    inference_ms: float
    def __init__(self, mask: _Optional[_Union[SliceMask, _Mapping]] = ..., model_version: _Optional[str] = ..., clicks_on_slice: _Optional[int] = ..., inference_ms: _Optional[float] = ...) -> None: ...

class SubmitRequest(_message.Message):
    __slots__ = ("session_id", "seconds_spent")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SECONDS_SPENT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    seconds_spent: float
    def __init__(self, session_id: _Optional[str] = ..., seconds_spent: _Optional[float] = ...) -> None: ...

class SubmitResponse(_message.Message):
    __slots__ = ("annotation_key", "provenance_key", "model_version", "event_id")
    ANNOTATION_KEY_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_KEY_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    annotation_key: str
    provenance_key: str
    model_version: str
    event_id: str
    def __init__(self, annotation_key: _Optional[str] = ..., provenance_key: _Optional[str] = ..., model_version: _Optional[str] = ..., event_id: _Optional[str] = ...) -> None: ...
