"""HTTP gateway: the annotator page, the operator dashboard, and a small JSON API over the gRPC services.

Thin by design. Each route is one or two gRPC calls; the caller's `Authorization: Bearer` token travels with every
call and the services decide (same tokens, same roles: saim.rpc.auth), so the gateway holds no secret and no bucket
credentials. Image slices come through the annotator's scan-space API under the case lease. Masks and brush strokes
cross as base64 of the wire's zlib bytes (the browser inflates them with DecompressionStream('deflate')).

Errors, in one place: a gRPC status becomes an HTTP status with the service's message (`HTTP_OF`); malformed JSON,
a wrong content type, a body over the limit and a missing token are refused here before any call; every error body
is `{"error": message}`.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import threading
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import grpc
import nibabel as nib
import numpy as np
from cachetools import TTLCache
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt
from starlette.exceptions import HTTPException as StarletteHTTPException

from saim.rpc.replicas import Replicas
from saim.rpc.tokens import ADMIN
from saim.rpc.wire import WIRE_DTYPES
from saim.v1 import annotator_pb2, annotator_pb2_grpc, selector_pb2, selector_pb2_grpc, trainer_pb2, trainer_pb2_grpc

HTTP_OF = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
REQUESTS = Counter("saim_http_requests_total", "Gateway HTTP requests by route and status", ["route", "status"])
LATENCY = Histogram(
    "saim_http_request_seconds",
    "Gateway request latency by route",
    ["route"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10),
)
JSON = "application/json"
RETRIED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED)  # a replica gone, or a write another one won
STREAM_CALLS = 4  # a streamed reply (the volume) may take as long as this many calls
REQUEST_ID = r"^([A-Za-z0-9_-]{8,128})?$"


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Backends:
    """Stubs of the services over channels without credentials: the caller's token is added per call. The
    annotator is every replica of it (saim.rpc.replicas): a session's calls go to its replica."""

    selector: selector_pb2_grpc.SelectorServiceStub
    annotators: Replicas
    trainer: trainer_pb2_grpc.TrainerServiceStub
    timeout_s: float = 30.0
    _stubs: dict = field(default_factory=dict)  # channel -> (annotator stub, health stub)

    @classmethod
    def over(
        cls,
        selector: grpc.Channel,
        annotator: grpc.Channel | Replicas,
        trainer: grpc.Channel,
        timeout_s: float = 30.0,
    ) -> Backends:
        annotators = annotator if isinstance(annotator, Replicas) else Replicas.single(annotator)
        return cls(
            selector_pb2_grpc.SelectorServiceStub(selector),
            annotators,
            trainer_pb2_grpc.TrainerServiceStub(trainer),
            timeout_s,
        )

    def annotator(self, key: str) -> list[tuple[annotator_pb2_grpc.AnnotatorServiceStub, health_pb2_grpc.HealthStub]]:
        """The annotator replicas in the order `key` (a session or case id) tries them."""
        out = []
        for channel in self.annotators.ranked(key):
            if channel not in self._stubs:
                self._stubs[channel] = (
                    annotator_pb2_grpc.AnnotatorServiceStub(channel),
                    health_pb2_grpc.HealthStub(channel),
                )
            out.append(self._stubs[channel])
        return out


class Caller:
    """One request's token, and the gRPC calls made with it."""

    def __init__(self, backends: Backends, token: str):
        self.b, self.metadata = backends, (("authorization", f"Bearer {token}"),)

    def call(self, method: Callable[..., Any], request: Message) -> Any:
        """A selector or trainer call (one replica: a restarting one is waited for up to the deadline)."""
        return self._tried([method], request, wait_for_ready=True)

    def annotator(self, key: str, name: str, request: Message) -> Any:
        """An annotator call for the session or case `key`: to its replica, or the next-ranked one while that one is
        gone (it rebuilds the session from storage)."""
        return self._tried([getattr(stub, name) for stub, _ in self.b.annotator(key)], request, wait_for_ready=False)

    def _tried(self, methods: list[Callable[..., Any]], request: Message, wait_for_ready: bool) -> Any:
        """The call on the first of `methods` (replicas) that answers, all of them tried again while the deadline
        lasts when each was gone (UNAVAILABLE) or a draft write was lost (ABORTED): every call the page makes is safe
        to repeat (clicks, edits and undo carry request ids, Submit its submission id)."""
        deadline = time.monotonic() + self.b.timeout_s
        pause = 0.1
        while True:
            error = None
            for method in methods:
                try:
                    left = max(deadline - time.monotonic(), 0.01)
                    return method(request, metadata=self.metadata, timeout=left, wait_for_ready=wait_for_ready)
                except grpc.RpcError as exc:
                    error = exc
                    if exc.code() != grpc.StatusCode.UNAVAILABLE:  # an answer: not the next replica's to give
                        break
            if error is None:
                raise ApiError(503, "no replica to call")
            if error.code() not in RETRIED or deadline - time.monotonic() <= pause:
                raise ApiError(HTTP_OF.get(error.code(), 502), error.details() or error.code().name) from None
            time.sleep(pause)
            pause = min(2 * pause, 1.0)

    def annotator_stream(self, key: str, name: str, request: Message) -> Iterator[Any]:
        """A streamed reply's messages from the key's replica (the next-ranked while it is gone); a failure before
        the first message is an ApiError (the HTTP status is still free), later ones end the stream."""
        timeout = self.b.timeout_s * STREAM_CALLS  # the whole stream's deadline
        error = None
        for stub, _ in self.b.annotator(key):
            try:
                replies = getattr(stub, name)(request, metadata=self.metadata, timeout=timeout)
                first = next(replies)
            except StopIteration:
                return iter(())
            except grpc.RpcError as exc:
                error = exc
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    continue
                break
            return itertools.chain([first], replies)
        if error is None:
            raise ApiError(503, "no replica to call")
        raise ApiError(HTTP_OF.get(error.code(), 502), error.details() or error.code().name)

    def who(self) -> selector_pb2.WhoAmIResponse:
        return self.call(self.b.selector.WhoAmI, selector_pb2.WhoAmIRequest())


# ---- request bodies: unknown fields are refused, so a typo is an error rather than a default ---------------------
class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpenBody(Strict):
    case_id: str = Field(min_length=1, max_length=256)
    lease_id: str = Field(min_length=1, max_length=256)


class ClickBody(Strict):
    voxel: tuple[NonNegativeInt, NonNegativeInt, NonNegativeInt]
    class_index: int = Field(ge=1)
    positive: bool = True
    request_id: str = Field("", pattern=REQUEST_ID)  # a retry sends the same: applied once


class EditBody(Strict):
    slice: int = Field(ge=0)
    class_index: int = Field(ge=0)
    painted: str = Field(description="base64 of zlib(rows*cols uint8): nonzero pixels are the stroke")
    request_id: str = Field("", pattern=REQUEST_ID)


class BoxBody(Strict):
    slice: int = Field(ge=0)
    class_index: int = Field(ge=1)
    box: tuple[NonNegativeInt, NonNegativeInt, NonNegativeInt, NonNegativeInt] = Field(
        description="row0, col0, row1, col1 in the slice's pixels, corners inclusive"
    )
    request_id: str = Field("", pattern=REQUEST_ID)


class ScribbleBody(Strict):
    slice: int = Field(ge=0)
    class_index: int = Field(ge=1)
    positive: bool = True
    points: list[tuple[NonNegativeInt, NonNegativeInt]] = Field(
        min_length=1, max_length=4096, description="(row, col) in the slice's pixels, in drawing order"
    )
    request_id: str = Field("", pattern=REQUEST_ID)


class UndoBody(Strict):
    slice: int = Field(ge=0)
    request_id: str = Field("", pattern=REQUEST_ID)


class PropagateBody(Strict):
    slice: int = Field(ge=0)
    direction: int = Field(0, ge=-1, le=1)  # +1 up, -1 down, 0 both
    max_slices: int = Field(0, ge=0, le=10_000)  # per direction; 0: the annotator's setting
    class_indices: list[Annotated[int, Field(ge=1, le=255)]] = Field(default_factory=list, max_length=255)
    request_id: str = Field("", pattern=REQUEST_ID)


class InterpolateBody(Strict):
    slice: int = Field(ge=0)
    class_indices: list[Annotated[int, Field(ge=1, le=255)]] = Field(default_factory=list, max_length=255)
    request_id: str = Field("", pattern=REQUEST_ID)


class SubmitBody(Strict):
    seconds_spent: float = Field(0.0, ge=0)
    submission_id: str = Field("", pattern=r"^([A-Za-z0-9_-]{8,128})?$")  # a retry sends the same: one submission


class RollbackBody(Strict):
    version: str = Field(min_length=1, max_length=64)


def mask_json(mask: annotator_pb2.SliceMask, **extra: object) -> dict:
    if mask.encoding != annotator_pb2.ENCODING_ZLIB:  # the annotator always compresses: the page inflates
        raise ApiError(502, f"annotator sent a mask in encoding {mask.encoding}")
    return {
        "slice": mask.slice,
        "rows": mask.rows,
        "cols": mask.cols,
        "mask": base64.b64encode(mask.data).decode(),
        **extra,
    }


def reply_json(reply: annotator_pb2.MaskResponse) -> dict:
    """A MaskResponse for the page."""
    return mask_json(
        reply.mask,
        model_version=reply.model_version,
        clicks=reply.clicks_on_slice,
        edits=reply.edits_on_slice,
        inference_ms=round(reply.inference_ms, 2),
    )


def as_dict(message: Message) -> dict:
    return MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def request_id(sent: str) -> str:
    """The page's id of the request, or one of ours: the gateway's own retries are then applied once too."""
    return sent or uuid.uuid4().hex


def nifti_header(geometry: dict, dtype: np.dtype) -> bytes:
    """A NIfTI-1 header (and an empty extension block) for the scan's shape, affine and the wire's dtype: what
    nibabel writes for the same volume."""
    affine = np.array(geometry["affine"], float).reshape(4, 4)
    img = nib.Nifti1Image(np.zeros((1, 1, 1), dtype), affine)
    img.update_header()
    header = img.header.copy()
    header.set_data_shape(tuple(geometry["shape"]))
    header.set_xyzt_units("mm")
    header["vox_offset"] = 352
    header.set_slope_inter(1.0, 0.0)  # the voxels are the intensities (as nibabel writes integer data)
    return header.binaryblock + b"\0\0\0\0"


def volume_nifti(chunks: Iterator[annotator_pb2.VolumeChunk], geometry: dict, gzip: bool = True) -> Iterator[bytes]:
    """The scan as NIfTI (source voxels, source affine), gzip-compressed or not, streamed from GetVolume's chunks.
    NIfTI stores i fastest, so with the slices along k (axial scans, the usual case) each slice is written as it
    arrives and the gateway holds one chunk; along i or j the voxels of one slice are spread over the file, and the
    volume is gathered once before it is written."""
    shape, axis, rows, cols = tuple(geometry["shape"]), geometry["slice_axis"], geometry["rows"], geometry["cols"]
    gz = zlib.compressobj(1, zlib.DEFLATED, 31) if gzip else None  # wbits 31: the gzip container
    out: Callable[[bytes], bytes] = gz.compress if gz is not None else bytes
    gathered: np.ndarray | None = None
    started, received = False, 0
    for chunk in chunks:
        dtype = WIRE_DTYPES.get(chunk.image_dtype)
        if dtype is None or chunk.encoding != annotator_pb2.ENCODING_ZLIB:
            raise ApiError(502, f"annotator sent a volume chunk as {chunk.image_dtype!r}, encoding {chunk.encoding}")
        if chunk.first_slice != received:
            raise ApiError(502, f"annotator sent slice {chunk.first_slice} where {received} was next")
        planes = np.frombuffer(zlib.decompress(chunk.data), dtype).reshape(chunk.num_slices, rows, cols)
        received += chunk.num_slices
        if not started:
            yield out(nifti_header(geometry, dtype))
            started = True
        if axis == 2:
            for plane in planes:
                yield out(plane.T.tobytes())  # (i, j) with i fastest
            continue
        if gathered is None:
            gathered = np.empty(shape, dtype)
        index = [slice(None)] * 3
        index[axis] = slice(chunk.first_slice, chunk.first_slice + chunk.num_slices)
        gathered[tuple(index)] = np.moveaxis(planes, 0, axis)
    if received != geometry["num_slices"]:  # the response ends without its gzip trailer: the client sees it broken
        raise ApiError(502, f"annotator sent {received} slices, the scan has {geometry['num_slices']}")
    if gathered is not None:
        for k in range(shape[2]):
            yield out(gathered[:, :, k].T.tobytes())
    if gz is not None:
        yield gz.flush()


class Gateway:
    """What the routes share: the backends, the web root, and a cache of session geometries (the volume and edit
    routes need them; asked of the annotator, GetSession, when this replica did not open the session itself)."""

    def __init__(self, backends: Backends, web_root: Path):
        self.backends, self.web_root = backends, web_root
        self._geometries: TTLCache = TTLCache(maxsize=4096, ttl=3600)
        self._lock = threading.Lock()  # routes run on a thread pool; the cache is not thread-safe

    def remember(self, session_id: str, geometry: dict) -> None:
        with self._lock:
            self._geometries[session_id] = geometry

    def forget(self, session_id: str) -> None:
        with self._lock:
            self._geometries.pop(session_id, None)

    def geometry_of(self, c: Caller, session_id: str) -> dict:
        with self._lock:
            g = self._geometries.get(session_id)
        if g is None:
            reply = c.annotator(session_id, "GetSession", annotator_pb2.GetSessionRequest(session_id=session_id))
            g = as_dict(reply)["geometry"]
            self.remember(session_id, g)
        return g

    def page(self, name: str) -> FileResponse:
        path = self.web_root / name
        if not path.is_file():
            raise ApiError(503, f"the web app is not built ({path} missing: make web)")
        return FileResponse(path, headers={"Cache-Control": "no-cache"})


def gateway(request: Request) -> Gateway:
    return request.app.state.gateway


def caller(request: Request) -> Caller:
    """The request's bearer token, to be sent with every gRPC call it makes (401 here when there is none)."""
    header = request.headers.get("authorization")
    if not header:
        raise ApiError(401, "log in: send the token as 'Authorization: Bearer <token>'")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "the Authorization header must be 'Bearer <token>'")
    return Caller(gateway(request).backends, token.strip())


AsGateway = Annotated[Gateway, Depends(gateway)]
AsCaller = Annotated[Caller, Depends(caller)]


def admin(c: AsCaller) -> Caller:
    if c.who().role != ADMIN:
        raise ApiError(403, "the dashboard is for the admin role")
    return c


AsAdmin = Annotated[Caller, Depends(admin)]

# ---- identity and annotation: the caller's token and role (AsCaller) ------------------------------------------------
api = APIRouter(prefix="/api")


@api.get("/me")
def me(c: AsCaller) -> dict:
    who = c.who()
    return {"name": who.name, "role": who.role}


@api.post("/next")
def next_case(c: AsCaller) -> dict:
    """The caller's open case (lease renewed) or the next one of the batch."""
    return as_dict(c.call(c.b.selector.NextCase, selector_pb2.NextCaseRequest(annotator_id=c.who().name)))


@api.post("/sessions")
def open_session(body: OpenBody, c: AsCaller, gw: AsGateway) -> dict:
    request = annotator_pb2.OpenSessionRequest(
        case_id=body.case_id,
        annotator_id=c.who().name,
        lease_id=body.lease_id,
        session_id=uuid.uuid4().hex,  # ours: the session is opened on the replica its later calls go to
    )
    reply = c.annotator(request.session_id, "OpenSession", request)
    out = as_dict(reply)
    gw.remember(reply.session_id, out["geometry"])
    return out


@api.get("/sessions/{session_id}/volume.nii")
def volume(session_id: str, request: Request, c: AsCaller, gw: AsGateway) -> StreamingResponse:
    """The scan as NIfTI; gzip on the wire when the client accepts it (Content-Encoding: a browser inflates it
    natively as it arrives, where a .nii.gz would be inflated again by the viewer's script)."""
    geometry = gw.geometry_of(c, session_id)
    chunks = c.annotator_stream(session_id, "GetVolume", annotator_pb2.GetVolumeRequest(session_id=session_id))
    gzip = "gzip" in request.headers.get("accept-encoding", "").lower()
    headers = {"Cache-Control": "no-store", **({"Content-Encoding": "gzip"} if gzip else {})}
    return StreamingResponse(
        volume_nifti(chunks, geometry, gzip), media_type="application/octet-stream", headers=headers
    )


@api.get("/sessions/{session_id}/slices/{index}")
def get_slice(session_id: str, index: Annotated[int, PathParam(ge=0)], c: AsCaller) -> dict:
    reply = c.annotator(session_id, "GetSlice", annotator_pb2.GetSliceRequest(session_id=session_id, slice=index))
    return mask_json(
        reply.mask, model_version=reply.model_version, clicks=reply.clicks_on_slice, edits=reply.edits_on_slice
    )


@api.post("/sessions/{session_id}/clicks")
def click(session_id: str, body: ClickBody, c: AsCaller) -> dict:
    i, j, k = body.voxel
    request = annotator_pb2.AddClickRequest(
        session_id=session_id,
        class_index=body.class_index,
        positive=body.positive,
        voxel=annotator_pb2.Voxel(i=i, j=j, k=k),
        request_id=request_id(body.request_id),
    )
    return reply_json(c.annotator(session_id, "AddClick", request))


@api.post("/sessions/{session_id}/edits")
def edit(session_id: str, body: EditBody, c: AsCaller, gw: AsGateway) -> dict:
    g = gw.geometry_of(c, session_id)
    try:
        data = base64.b64decode(body.painted, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "painted: not base64") from None
    painted = annotator_pb2.SliceMask(
        slice=body.slice, rows=g["rows"], cols=g["cols"], encoding=annotator_pb2.ENCODING_ZLIB, data=data
    )
    request = annotator_pb2.EditSliceRequest(
        session_id=session_id,
        slice=body.slice,
        class_index=body.class_index,
        painted=painted,
        request_id=request_id(body.request_id),
    )
    return reply_json(c.annotator(session_id, "EditSlice", request))


@api.post("/sessions/{session_id}/boxes")
def box(session_id: str, body: BoxBody, c: AsCaller) -> dict:
    row0, col0, row1, col1 = body.box
    request = annotator_pb2.AddBoxRequest(
        session_id=session_id,
        slice=body.slice,
        class_index=body.class_index,
        row0=row0,
        col0=col0,
        row1=row1,
        col1=col1,
        request_id=request_id(body.request_id),
    )
    return reply_json(c.annotator(session_id, "AddBox", request))


@api.post("/sessions/{session_id}/scribbles")
def scribble(session_id: str, body: ScribbleBody, c: AsCaller) -> dict:
    request = annotator_pb2.AddScribbleRequest(
        session_id=session_id,
        slice=body.slice,
        class_index=body.class_index,
        positive=body.positive,
        rows=[r for r, _ in body.points],
        cols=[col for _, col in body.points],
        request_id=request_id(body.request_id),
    )
    return reply_json(c.annotator(session_id, "AddScribble", request))


@api.post("/sessions/{session_id}/undo")
def undo(session_id: str, body: UndoBody, c: AsCaller) -> dict:
    return _undo_or_redo("Undo", session_id, body, c)


@api.post("/sessions/{session_id}/redo")
def redo(session_id: str, body: UndoBody, c: AsCaller) -> dict:
    return _undo_or_redo("Redo", session_id, body, c)


def _undo_or_redo(method: str, session_id: str, body: UndoBody, c: Caller) -> dict:
    request = annotator_pb2.UndoRequest(session_id=session_id, slice=body.slice, request_id=request_id(body.request_id))
    return reply_json(c.annotator(session_id, method, request))


@api.post("/sessions/{session_id}/propagate")
def propagate(session_id: str, body: PropagateBody, c: AsCaller) -> dict:
    """The slice's mask carried to its neighbours by the model: every slice written, and why each direction stopped."""
    request = annotator_pb2.PropagateRequest(
        session_id=session_id,
        slice=body.slice,
        direction=body.direction,
        max_slices=body.max_slices,
        class_indices=body.class_indices,
        request_id=request_id(body.request_id),
    )
    reply = c.annotator(session_id, "Propagate", request)
    return {"masks": [reply_json(mask) for mask in reply.masks], "stopped": dict(reply.stopped)}


@api.post("/sessions/{session_id}/interpolate")
def interpolate(session_id: str, body: InterpolateBody, c: AsCaller) -> dict:
    """The slices between this one and the annotated slices next to it, filled: every slice written, and the gaps."""
    request = annotator_pb2.InterpolateRequest(
        session_id=session_id,
        slice=body.slice,
        class_indices=body.class_indices,
        request_id=request_id(body.request_id),
    )
    reply = c.annotator(session_id, "Interpolate", request)
    return {"masks": [reply_json(mask) for mask in reply.masks], "gaps": [[g.low, g.high] for g in reply.gaps]}


@api.post("/sessions/{session_id}/submit")
def submit(session_id: str, body: SubmitBody, c: AsCaller, gw: AsGateway) -> dict:
    request = annotator_pb2.SubmitRequest(
        session_id=session_id, seconds_spent=body.seconds_spent, submission_id=body.submission_id
    )
    reply = c.annotator(session_id, "Submit", request)
    gw.forget(session_id)
    return as_dict(reply)


# ---- the operator's dashboard (AsAdmin) ------------------------------------------------------------------------------
@api.get("/dashboard")
def dashboard(c: AsAdmin) -> dict:
    return {
        "selector": as_dict(c.call(c.b.selector.GetStatus, selector_pb2.GetStatusRequest())),
        "trainer": as_dict(c.call(c.b.trainer.GetStatus, trainer_pb2.GetTrainerStatusRequest())),
        "models": as_dict(c.call(c.b.trainer.ListModels, trainer_pb2.ListModelsRequest())).get("models", []),
        "time": time.time(),
    }


@api.post("/models/rollback")
def rollback(body: RollbackBody, c: AsAdmin) -> dict:
    return as_dict(c.call(c.b.trainer.Rollback, trainer_pb2.RollbackRequest(version=body.version)))


# ---- health and pages ------------------------------------------------------------------------------------------------
pages = APIRouter(include_in_schema=False)


@pages.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}


@pages.get("/readyz")
def readyz(gw: AsGateway) -> dict:
    if not (gw.web_root / "index.html").is_file():
        raise ApiError(503, f"the web app is not built ({gw.web_root}/index.html missing: make web)")
    error = "no annotator replica"
    for _, health in gw.backends.annotator("readyz"):  # ready while any replica serves
        try:
            health.Check(health_pb2.HealthCheckRequest(), timeout=2)
            break
        except grpc.RpcError as exc:
            error = exc.code().name
    else:
        raise ApiError(503, f"annotator not reachable: {error}")
    return {"status": "ready"}


@pages.get("/favicon.ico")
def favicon() -> Response:
    return Response(status_code=204)


@pages.get("/")
def index(gw: AsGateway) -> FileResponse:
    return gw.page("index.html")


@pages.get("/dashboard")
def dashboard_page(gw: AsGateway) -> FileResponse:
    return gw.page("dashboard.html")


# ---- errors: one shape everywhere; the request guard ----------------------------------------------------------------
def error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error(exc.message, exc.status)


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    msg = "malformed JSON body" if first.get("type") == "json_invalid" else first.get("msg", "invalid")
    return error(f"{where}: {msg}" if where else str(msg), 400)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return error(str(exc.detail), exc.status_code)


def refusal(request: Request, max_body_kb: int) -> JSONResponse | None:
    """Why a request's body is refused before any route runs (size, content type), or None."""
    if request.method not in ("POST", "PUT", "PATCH"):
        return None
    length = request.headers.get("content-length")
    if length is None:
        return error("a request body needs a Content-Length", 411)
    if not length.isdigit() or int(length) > max_body_kb * 1024:
        return error(f"request body over {max_body_kb} KiB", 413)
    if int(length) > 0 and request.headers.get("content-type", "").split(";")[0].strip().lower() != JSON:
        return error(f"content type must be {JSON}", 415)
    return None


def install_guard(app: FastAPI, max_body_kb: int) -> None:
    """Body size and content type before any route runs; metrics after."""

    @app.middleware("http")
    async def _guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        route = request.url.path if not request.url.path.startswith("/api/sessions/") else "/api/sessions/*"
        response = refusal(request, max_body_kb) or await call_next(request)
        REQUESTS.labels(route, str(response.status_code)).inc()
        LATENCY.labels(route).observe(time.perf_counter() - started)
        return response


def default_web_root() -> Path:
    return Path(__file__).resolve().parents[2] / "web" / "dist"


def create_app(backends: Backends, web_root: Path | None = None, max_body_kb: int = 2048) -> FastAPI:
    app = FastAPI(title="saim gateway", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.gateway = gw = Gateway(backends, web_root or default_web_root())
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http)
    install_guard(app, max_body_kb)
    app.include_router(api)
    app.include_router(pages)
    if (gw.web_root / "assets").is_dir():
        app.mount("/assets", StaticFiles(directory=gw.web_root / "assets"), name="assets")
    return app
