from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Encoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENCODING_UNSPECIFIED: _ClassVar[Encoding]
    ENCODING_RAW: _ClassVar[Encoding]
    ENCODING_ZLIB: _ClassVar[Encoding]
ENCODING_UNSPECIFIED: Encoding
ENCODING_RAW: Encoding
ENCODING_ZLIB: Encoding

class OpenSessionRequest(_message.Message):
    __slots__ = ("case_id", "annotator_id", "lease_id", "session_id")
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    ANNOTATOR_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    case_id: str
    annotator_id: str
    lease_id: str
    session_id: str
    def __init__(self, case_id: _Optional[str] = ..., annotator_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., session_id: _Optional[str] = ...) -> None: ...

class Geometry(_message.Message):
    __slots__ = ("shape", "spacing", "affine", "orientation", "slice_axis", "num_slices", "rows", "cols")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    SPACING_FIELD_NUMBER: _ClassVar[int]
    AFFINE_FIELD_NUMBER: _ClassVar[int]
    ORIENTATION_FIELD_NUMBER: _ClassVar[int]
    SLICE_AXIS_FIELD_NUMBER: _ClassVar[int]
    NUM_SLICES_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COLS_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    spacing: _containers.RepeatedScalarFieldContainer[float]
    affine: _containers.RepeatedScalarFieldContainer[float]
    orientation: str
    slice_axis: int
    num_slices: int
    rows: int
    cols: int
    def __init__(self, shape: _Optional[_Iterable[int]] = ..., spacing: _Optional[_Iterable[float]] = ..., affine: _Optional[_Iterable[float]] = ..., orientation: _Optional[str] = ..., slice_axis: _Optional[int] = ..., num_slices: _Optional[int] = ..., rows: _Optional[int] = ..., cols: _Optional[int] = ...) -> None: ...

class SliceMask(_message.Message):
    __slots__ = ("slice", "rows", "cols", "encoding", "data")
    SLICE_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COLS_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    slice: int
    rows: int
    cols: int
    encoding: Encoding
    data: bytes
    def __init__(self, slice: _Optional[int] = ..., rows: _Optional[int] = ..., cols: _Optional[int] = ..., encoding: _Optional[_Union[Encoding, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class OpenSessionResponse(_message.Message):
    __slots__ = ("session_id", "case_id", "classes", "model_version", "iteration", "geometry", "draft_slices", "draft_clicks", "draft_edits", "lease_expires_at")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    GEOMETRY_FIELD_NUMBER: _ClassVar[int]
    DRAFT_SLICES_FIELD_NUMBER: _ClassVar[int]
    DRAFT_CLICKS_FIELD_NUMBER: _ClassVar[int]
    DRAFT_EDITS_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    case_id: str
    classes: _containers.RepeatedScalarFieldContainer[str]
    model_version: str
    iteration: int
    geometry: Geometry
    draft_slices: _containers.RepeatedScalarFieldContainer[int]
    draft_clicks: int
    draft_edits: int
    lease_expires_at: float
    def __init__(self, session_id: _Optional[str] = ..., case_id: _Optional[str] = ..., classes: _Optional[_Iterable[str]] = ..., model_version: _Optional[str] = ..., iteration: _Optional[int] = ..., geometry: _Optional[_Union[Geometry, _Mapping]] = ..., draft_slices: _Optional[_Iterable[int]] = ..., draft_clicks: _Optional[int] = ..., draft_edits: _Optional[int] = ..., lease_expires_at: _Optional[float] = ...) -> None: ...

class GetSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class GetSliceRequest(_message.Message):
    __slots__ = ("session_id", "slice", "include_image", "image_only")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SLICE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_IMAGE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ONLY_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    slice: int
    include_image: bool
    image_only: bool
    def __init__(self, session_id: _Optional[str] = ..., slice: _Optional[int] = ..., include_image: _Optional[bool] = ..., image_only: _Optional[bool] = ...) -> None: ...

class SliceResponse(_message.Message):
    __slots__ = ("mask", "model_version", "image", "image_dtype", "image_encoding", "clicks_on_slice", "edits_on_slice")
    MASK_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_DTYPE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ENCODING_FIELD_NUMBER: _ClassVar[int]
    CLICKS_ON_SLICE_FIELD_NUMBER: _ClassVar[int]
    EDITS_ON_SLICE_FIELD_NUMBER: _ClassVar[int]
    mask: SliceMask
    model_version: str
    image: bytes
    image_dtype: str
    image_encoding: Encoding
    clicks_on_slice: int
    edits_on_slice: int
    def __init__(self, mask: _Optional[_Union[SliceMask, _Mapping]] = ..., model_version: _Optional[str] = ..., image: _Optional[bytes] = ..., image_dtype: _Optional[str] = ..., image_encoding: _Optional[_Union[Encoding, str]] = ..., clicks_on_slice: _Optional[int] = ..., edits_on_slice: _Optional[int] = ...) -> None: ...

class GetVolumeRequest(_message.Message):
    __slots__ = ("session_id", "slices_per_chunk")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SLICES_PER_CHUNK_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    slices_per_chunk: int
    def __init__(self, session_id: _Optional[str] = ..., slices_per_chunk: _Optional[int] = ...) -> None: ...

class VolumeChunk(_message.Message):
    __slots__ = ("first_slice", "num_slices", "image_dtype", "encoding", "data")
    FIRST_SLICE_FIELD_NUMBER: _ClassVar[int]
    NUM_SLICES_FIELD_NUMBER: _ClassVar[int]
    IMAGE_DTYPE_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    first_slice: int
    num_slices: int
    image_dtype: str
    encoding: Encoding
    data: bytes
    def __init__(self, first_slice: _Optional[int] = ..., num_slices: _Optional[int] = ..., image_dtype: _Optional[str] = ..., encoding: _Optional[_Union[Encoding, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class Voxel(_message.Message):
    __slots__ = ("i", "j", "k")
    I_FIELD_NUMBER: _ClassVar[int]
    J_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    i: int
    j: int
    k: int
    def __init__(self, i: _Optional[int] = ..., j: _Optional[int] = ..., k: _Optional[int] = ...) -> None: ...

class AddClickRequest(_message.Message):
    __slots__ = ("session_id", "class_index", "positive", "voxel", "request_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CLASS_INDEX_FIELD_NUMBER: _ClassVar[int]
    POSITIVE_FIELD_NUMBER: _ClassVar[int]
    VOXEL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    class_index: int
    positive: bool
    voxel: Voxel
    request_id: str
    def __init__(self, session_id: _Optional[str] = ..., class_index: _Optional[int] = ..., positive: _Optional[bool] = ..., voxel: _Optional[_Union[Voxel, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class EditSliceRequest(_message.Message):
    __slots__ = ("session_id", "slice", "class_index", "painted", "request_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SLICE_FIELD_NUMBER: _ClassVar[int]
    CLASS_INDEX_FIELD_NUMBER: _ClassVar[int]
    PAINTED_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    slice: int
    class_index: int
    painted: SliceMask
    request_id: str
    def __init__(self, session_id: _Optional[str] = ..., slice: _Optional[int] = ..., class_index: _Optional[int] = ..., painted: _Optional[_Union[SliceMask, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class AddBoxRequest(_message.Message):
    __slots__ = ("session_id", "slice", "class_index", "row0", "col0", "row1", "col1", "request_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SLICE_FIELD_NUMBER: _ClassVar[int]
    CLASS_INDEX_FIELD_NUMBER: _ClassVar[int]
    ROW0_FIELD_NUMBER: _ClassVar[int]
    COL0_FIELD_NUMBER: _ClassVar[int]
    ROW1_FIELD_NUMBER: _ClassVar[int]
    COL1_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    slice: int
    class_index: int
    row0: int
    col0: int
    row1: int
    col1: int
    request_id: str
    def __init__(self, session_id: _Optional[str] = ..., slice: _Optional[int] = ..., class_index: _Optional[int] = ..., row0: _Optional[int] = ..., col0: _Optional[int] = ..., row1: _Optional[int] = ..., col1: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class AddScribbleRequest(_message.Message):
    __slots__ = ("session_id", "slice", "class_index", "positive", "rows", "cols", "request_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SLICE_FIELD_NUMBER: _ClassVar[int]
    CLASS_INDEX_FIELD_NUMBER: _ClassVar[int]
    POSITIVE_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COLS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    slice: int
    class_index: int
    positive: bool
    rows: _containers.RepeatedScalarFieldContainer[int]
    cols: _containers.RepeatedScalarFieldContainer[int]
    request_id: str
    def __init__(self, session_id: _Optional[str] = ..., slice: _Optional[int] = ..., class_index: _Optional[int] = ..., positive: _Optional[bool] = ..., rows: _Optional[_Iterable[int]] = ..., cols: _Optional[_Iterable[int]] = ..., request_id: _Optional[str] = ...) -> None: ...

class UndoRequest(_message.Message):
    __slots__ = ("session_id", "slice", "request_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SLICE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    slice: int
    request_id: str
    def __init__(self, session_id: _Optional[str] = ..., slice: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class MaskResponse(_message.Message):
    __slots__ = ("mask", "model_version", "clicks_on_slice", "inference_ms", "edits_on_slice", "replayed")
    MASK_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CLICKS_ON_SLICE_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_MS_FIELD_NUMBER: _ClassVar[int]
    EDITS_ON_SLICE_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    mask: SliceMask
    model_version: str
    clicks_on_slice: int
    inference_ms: float
    edits_on_slice: int
    replayed: bool
    def __init__(self, mask: _Optional[_Union[SliceMask, _Mapping]] = ..., model_version: _Optional[str] = ..., clicks_on_slice: _Optional[int] = ..., inference_ms: _Optional[float] = ..., edits_on_slice: _Optional[int] = ..., replayed: _Optional[bool] = ...) -> None: ...

class PropagateRequest(_message.Message):
    __slots__ = ("session_id", "slice", "direction", "max_slices", "class_indices", "request_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SLICE_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    MAX_SLICES_FIELD_NUMBER: _ClassVar[int]
    CLASS_INDICES_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    slice: int
    direction: int
    max_slices: int
    class_indices: _containers.RepeatedScalarFieldContainer[int]
    request_id: str
    def __init__(self, session_id: _Optional[str] = ..., slice: _Optional[int] = ..., direction: _Optional[int] = ..., max_slices: _Optional[int] = ..., class_indices: _Optional[_Iterable[int]] = ..., request_id: _Optional[str] = ...) -> None: ...

class PropagateResponse(_message.Message):
    __slots__ = ("masks", "stopped")
    class StoppedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MASKS_FIELD_NUMBER: _ClassVar[int]
    STOPPED_FIELD_NUMBER: _ClassVar[int]
    masks: _containers.RepeatedCompositeFieldContainer[MaskResponse]
    stopped: _containers.ScalarMap[str, str]
    def __init__(self, masks: _Optional[_Iterable[_Union[MaskResponse, _Mapping]]] = ..., stopped: _Optional[_Mapping[str, str]] = ...) -> None: ...

class InterpolateRequest(_message.Message):
    __slots__ = ("session_id", "slice", "class_indices", "request_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SLICE_FIELD_NUMBER: _ClassVar[int]
    CLASS_INDICES_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    slice: int
    class_indices: _containers.RepeatedScalarFieldContainer[int]
    request_id: str
    def __init__(self, session_id: _Optional[str] = ..., slice: _Optional[int] = ..., class_indices: _Optional[_Iterable[int]] = ..., request_id: _Optional[str] = ...) -> None: ...

class Gap(_message.Message):
    __slots__ = ("low", "high")
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    low: int
    high: int
    def __init__(self, low: _Optional[int] = ..., high: _Optional[int] = ...) -> None: ...

class InterpolateResponse(_message.Message):
    __slots__ = ("masks", "gaps")
    MASKS_FIELD_NUMBER: _ClassVar[int]
    GAPS_FIELD_NUMBER: _ClassVar[int]
    masks: _containers.RepeatedCompositeFieldContainer[MaskResponse]
    gaps: _containers.RepeatedCompositeFieldContainer[Gap]
    def __init__(self, masks: _Optional[_Iterable[_Union[MaskResponse, _Mapping]]] = ..., gaps: _Optional[_Iterable[_Union[Gap, _Mapping]]] = ...) -> None: ...

class SubmitRequest(_message.Message):
    __slots__ = ("session_id", "seconds_spent", "submission_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SECONDS_SPENT_FIELD_NUMBER: _ClassVar[int]
    SUBMISSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    seconds_spent: float
    submission_id: str
    def __init__(self, session_id: _Optional[str] = ..., seconds_spent: _Optional[float] = ..., submission_id: _Optional[str] = ...) -> None: ...

class SubmitResponse(_message.Message):
    __slots__ = ("annotation_key", "provenance_key", "model_version", "event_id", "replayed")
    ANNOTATION_KEY_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_KEY_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    annotation_key: str
    provenance_key: str
    model_version: str
    event_id: str
    replayed: bool
    def __init__(self, annotation_key: _Optional[str] = ..., provenance_key: _Optional[str] = ..., model_version: _Optional[str] = ..., event_id: _Optional[str] = ..., replayed: _Optional[bool] = ...) -> None: ...
