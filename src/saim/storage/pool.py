"""The annotation pool in object storage: dataset import with fixed splits, series IO, annotations with provenance.

Only the initial (pre-training), validation and test series have ground truth in the bucket; the pool's labels are
withheld, as in a real deployment, and a pool may be unlabelled from the start (imagesTs/, or imagesTr entries
without a label). In the emulated scenario the virtual annotators hold the ground truth locally.

Everything stored is in the source scan's geometry: images are the uploaded files unchanged, annotations are NIfTI
label maps with the image's shape and affine and the dataset's label values."""

from __future__ import annotations

import functools
import gzip
import re
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from cachetools import LRUCache

from saim.data.dataset import DatasetInfo, NnUNetDataset, check_geometry, remap_labels, to_file_values
from saim.data.dicom import DicomSeries, read_series
from saim.data.intensity import ZSCORE_SCHEME, Intensity, fit_intensity, is_ct
from saim.data.nifti import check_finite, load_volume, volume_from_bytes, volume_to_bytes
from saim.data.slices import Series, check_max_slices, series_from_volume
from saim.data.splits import Splits
from saim.errors import DatasetError, FailedPrecondition, InvalidInput, NotFound, SaimError, TooLarge
from saim.storage.objects import ObjectStore
from saim.storage.preprocessed import SliceStore, as_stored, fingerprint, slices_key

DATASET_JSON = "dataset/dataset.json"


SPLITS_JSON = "dataset/splits.json"


PREPROCESSING_JSON = "dataset/preprocessing.json"


def image_key(case: str) -> str:
    return f"dataset/imagesTr/{case}_0000.nii.gz"


def label_key(case: str) -> str:
    return f"dataset/labelsTr/{case}.nii.gz"


def annotation_key(case: str) -> str:
    return f"annotations/{case}.nii.gz"


def provenance_key(case: str) -> str:
    return f"annotations/{case}.json"


def rater_key(case: str, annotator: str, ext: str) -> str:
    """Every rater's own annotation when cases are annotated by several annotators (overlap > 1)."""
    return f"raters/{case}/{annotator}.{ext}"


DRAFTS = "drafts/"
SUBMISSION_ID = re.compile(r"[A-Za-z0-9_-]{8,128}")
SESSION_ID = re.compile(r"[0-9a-f]{32}")


def submission_key(submission_id: str) -> str:
    """The record of a client's submission (what Submit answered), so that a retry of it is answered the same."""
    if not SUBMISSION_ID.fullmatch(submission_id):
        raise InvalidInput("submission_id must be 8-128 characters of A-Z a-z 0-9 _ -")
    return f"submissions/{submission_id}.json"


SESSIONS = "sessions/"


def check_session_id(session_id: str) -> None:
    """A client's id for a new session (OpenSessionRequest.session_id)."""
    if not SESSION_ID.fullmatch(session_id):
        raise InvalidInput("session_id must be 32 lowercase hex digits")


def check_request_id(request_id: str) -> None:
    """A client's id of one request (a click, an edit, an undo): empty, or like a submission id."""
    if request_id and not SUBMISSION_ID.fullmatch(request_id):
        raise InvalidInput("request_id must be 8-128 characters of A-Z a-z 0-9 _ -")


def session_key(session_id: str) -> str:
    """An annotation session's record (saim.annotation.drafts): any annotator replica rebuilds the session from it."""
    if not SESSION_ID.fullmatch(session_id):
        raise NotFound(f"unknown or expired session {session_id!r}")
    return f"{SESSIONS}{session_id}.json"


def draft_prefix(case: str, annotator: str | None = None) -> str:
    """A case's drafts (every annotator's), or one annotator's: drafts/{case}/{annotator}/slice-NNNNN.draft."""
    return f"{DRAFTS}{case}/" if annotator is None else f"{DRAFTS}{case}/{annotator}/"


def draft_slice_key(case: str, annotator: str, index: int) -> str:
    return f"{draft_prefix(case, annotator)}slice-{index:05d}.draft"


def gzipped(blob: bytes) -> bytes:
    """A NIfTI file's bytes as the bucket keeps them: unchanged if gzipped, else gzipped (keys end in .nii.gz)."""
    return blob if blob[:2] == b"\x1f\x8b" else gzip.compress(blob, compresslevel=6)


ImageSource = Path | DicomSeries  # a NIfTI file, a folder of one DICOM series, or a series found in a folder


def read_image(source: ImageSource) -> tuple[np.ndarray, np.ndarray]:
    """(data, affine) of an image source; a DatasetError names what is wrong with it."""
    if isinstance(source, DicomSeries):
        try:
            return read_series(source)
        except InvalidInput as exc:
            raise DatasetError(str(exc)) from exc
    return load_volume(source)


def _image_bytes(source: ImageSource) -> bytes:
    """A NIfTI file as stored (gzipped); DICOM written as NIfTI, which is what the bucket and the export hold."""
    if isinstance(source, DicomSeries) or source.is_dir():
        return volume_to_bytes(*read_image(source))
    return gzipped(source.read_bytes())


def import_dataset(
    store: ObjectStore, dataset: NnUNetDataset, splits: Splits, image_size: int | None = None
) -> Intensity:
    """Upload images of every case, labels of initial/val/test only, the intensity preprocessing, then splits and
    dataset.json (written last: their presence marks a complete import). Every case is read and validated first: a
    bad file is a DatasetError naming it, and nothing in the bucket is touched. With `image_size` (the services'
    model size), every series' preprocessed slices are written too (saim.storage.preprocessed); a series without
    them gets them when a service first reads it. Returns the preprocessing."""
    missing = sorted(set(splits.labelled) - set(dataset.cases))
    if missing:
        raise DatasetError(f"cases {missing} are in the initial, validation or test split but have no label")
    fit_cases = set(splits.initial + splits.val)  # never the test set
    fit_on = []
    for case in dataset.cases:  # one case in memory at a time, except the few the statistics are fitted on
        image, label, _ = dataset.load_case(case)
        if case in fit_cases:
            fit_on.append((image, label))
    for case in dataset.unlabelled:
        dataset.load_image(case)
    intensity = fit_intensity(dataset.info.channel_names, fit_on)
    for case in sorted(splits.all()):
        store.put_bytes(image_key(case), _image_bytes(dataset.image_path(case)))
        if case in splits.labelled:
            store.put_bytes(label_key(case), _image_bytes(dataset.label_path(case)))
    store.put_json(PREPROCESSING_JSON, intensity.to_json())
    store.put_json(SPLITS_JSON, splits.to_json())
    store.put_json(DATASET_JSON, {**dataset.info.to_json(), "numTraining": len(dataset.cases)})
    if image_size is not None:
        PoolStore(store, image_size, cache_mb=0).preprocess(sorted(splits.all()))
    return intensity


def add_to_pool(store: ObjectStore, images: Mapping[str, ImageSource], image_size: int | None = None) -> list[str]:
    """`saim admin import`: add series ({case: NIfTI file or DICOM series}) to an imported dataset's pool. Each is
    read and validated first; names already in the dataset are refused. The images are uploaded, then splits.json is
    rewritten with the new pool (the selector scores them after its next reconcile), then with `image_size` their
    preprocessed slices are written. Returns the added cases."""
    try:
        splits = Splits.from_json(store.get_json(SPLITS_JSON))
    except NotFound as exc:
        raise FailedPrecondition(f"no dataset imported into bucket {store.bucket!r} ({exc})") from exc
    taken = sorted(set(images) & splits.all())
    if taken:
        raise InvalidInput(f"cases {taken} are already in the dataset")
    if not images:
        raise InvalidInput("no images to import")
    for source in images.values():
        data, affine = read_image(source)
        where = source.name if isinstance(source, DicomSeries) else str(source)
        check_finite(data, where)
        check_geometry(data.shape, affine, where)
    for case, source in sorted(images.items()):
        store.put_bytes(image_key(case), _image_bytes(source))
    pool = splits.pool + tuple(sorted(images))
    store.put_json(SPLITS_JSON, Splits(splits.initial, splits.val, splits.test, pool).to_json())
    if image_size is not None:
        PoolStore(store, image_size, cache_mb=0).preprocess(sorted(images))
    return sorted(images)


SERIES_CACHE_MB = 1024  # decoded series kept per process (SAIM_SERIES_CACHE_MB)


DECODE_WORKERS = 4  # threads decoding series ahead of their consumer (SAIM_DECODE_WORKERS)
UNDECODABLE = (DatasetError, InvalidInput, TooLarge)  # what a broken series raises (never an outage: Unavailable)


def series_bytes(series: Series) -> int:
    return series.images.nbytes + (0 if series.labels is None else series.labels.nbytes)


class PoolStore:
    """Read access to the imported dataset for the services. Decoded series are kept in an LRU cache bounded by
    bytes (`cache_mb`), so a pool of any size streams through a process of bounded memory. Series have every slice
    unless `max_slices` sets a budget."""

    def __init__(
        self,
        store: ObjectStore,
        image_size: int,
        max_slices: int | None = None,
        cache_mb: float = SERIES_CACHE_MB,
        preprocessed: bool = True,
    ):
        self.store, self.image_size, self.max_slices = store, image_size, check_max_slices(max_slices)
        self._cache: LRUCache[tuple[str, bool], Series] = LRUCache(
            maxsize=int(cache_mb * 2**20), getsizeof=series_bytes
        )
        self._cache_lock = threading.Lock()
        try:
            meta = store.get_json(DATASET_JSON)
            self.refresh()
        except NotFound as exc:
            raise FailedPrecondition(f"no dataset imported into bucket {store.bucket!r} ({exc})") from exc
        labels = meta["labels"]
        fg = sorted(((n, v) for n, v in labels.items() if n != "background"), key=lambda nv: nv[1])
        self.info = DatasetInfo(
            meta.get("name", "dataset"),
            tuple(n for n, _ in fg),
            tuple(v for _, v in fg),
            meta.get("file_ending", ".nii.gz"),
            meta.get("channel_names", {"0": "image"}),
        )
        self.intensity = self._intensity()
        fp = fingerprint(image_size, self.intensity, self.max_slices)
        self.slices = SliceStore(store, fp) if preprocessed else None  # saim.storage.preprocessed

    def _intensity(self) -> Intensity:
        try:
            return Intensity.from_json(self.store.get_json(PREPROCESSING_JSON))
        except NotFound:
            if is_ct(self.info.channel_names):
                raise FailedPrecondition(
                    f"{PREPROCESSING_JSON} is missing: CT needs the intensity statistics of the import "
                    "(import the dataset again)"
                ) from None
            return Intensity(ZSCORE_SCHEME)

    def refresh(self) -> None:
        """Re-read the splits (`saim admin import` adds to the pool of a running deployment)."""
        self.splits = Splits.from_json(self.store.get_json(SPLITS_JSON))

    @property
    def classes(self) -> tuple[str, ...]:
        return self.info.classes

    def all_cases(self) -> set[str]:
        return self.splits.all()

    def load_series(
        self, case: str, with_label: bool = False, volume: tuple[np.ndarray, np.ndarray] | None = None
    ) -> Series:
        """A series at model resolution. Images (and the withheld-or-not labels) never change once imported, so a
        cached series is served until the byte budget evicts it; callers must not modify the arrays. `volume`:
        the case's (image, affine) when the caller has decoded it already (not decoded twice)."""
        key = (case, with_label)
        with self._cache_lock:
            cached = self._cache.get(key)
        if cached is None:
            cached = self._load_series(case, with_label, volume)
            if series_bytes(cached) <= self._cache.maxsize:  # larger than the whole budget: served, not kept
                with self._cache_lock:
                    self._cache[key] = cached
        return cached

    def iter_series(
        self, cases: list[str], workers: int = DECODE_WORKERS, skip: Callable[[str, SaimError], None] | None = None
    ) -> Iterator[Series]:
        """The series of `cases` in order, read (from the preprocessed slice store, else decoded) by `workers`
        threads ahead of the consumer, with at most 2 x workers read and not yet consumed; 0 reads them in the
        consumer's thread. Reading is mostly waiting on storage and decoding mostly outside the GIL (gzip, NIfTI,
        numpy, torch resampling), so threads keep the model fed (docs/benchmarks.md).
        With `skip`, a series that fails to decode (a broken file, a geometry the model grid cannot take) is handed
        to skip(case, error) and left out; without it the error is raised. Storage outages always raise."""
        if workers <= 0:
            for case in cases:
                series = self._decoded(case, functools.partial(self.load_series, case), skip)
                if series is not None:
                    yield series
            return
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
            pending: deque[tuple[str, Future[Series]]] = deque()
            try:
                for case in cases:
                    pending.append((case, pool.submit(self.load_series, case)))
                    if len(pending) >= 2 * workers:
                        done, future = pending.popleft()
                        if (series := self._decoded(done, future.result, skip)) is not None:
                            yield series
                while pending:
                    done, future = pending.popleft()
                    if (series := self._decoded(done, future.result, skip)) is not None:
                        yield series
            finally:
                for _, future in pending:  # the consumer stopped early (an error): decode nothing more
                    future.cancel()

    @staticmethod
    def _decoded(case: str, load: Callable[[], Series], skip: Callable[[str, SaimError], None] | None) -> Series | None:
        try:
            return load()
        except UNDECODABLE as exc:
            if skip is None:
                raise
            skip(case, exc)
            return None

    def load_volume(self, case: str) -> tuple[np.ndarray, np.ndarray]:
        """The case's image in source space, as uploaded: (data, affine)."""
        if case not in self.all_cases():
            self.refresh()  # added by `saim admin import` since this process read the splits
            if case not in self.all_cases():
                raise NotFound(f"unknown case {case!r}")
        image, affine = volume_from_bytes(self.store.get_bytes(image_key(case)), image_key(case))
        check_finite(image, image_key(case))
        return image, affine

    def _load_series(self, case: str, with_label: bool, volume: tuple[np.ndarray, np.ndarray] | None) -> Series:
        """From the preprocessed slice store when the series is there, else decoded from its NIfTI and written there
        (once per series and preprocessing); the images rounded as the store keeps them either way."""
        stored = self.slices.get(case) if self.slices is not None and volume is None else None
        if stored is not None:
            series = stored
        else:
            series = self._model_slices(case, volume if volume is not None else self.load_volume(case))
            if self.slices is not None and volume is None:
                self.slices.put(series)
        if with_label:
            raw, _ = volume_from_bytes(self.store.get_bytes(label_key(case)), label_key(case))
            series = series.with_labels(self._check_label(raw, series.volume_shape, label_key(case)))
        return series

    def preprocess(self, cases: list[str]) -> int:
        """Write the preprocessed slices of `cases` that the store lacks (at import). Returns how many were written."""
        if self.slices is None:
            return 0
        missing = [c for c in cases if not self.store.exists(slices_key(self.slices.fp, c))]
        for case in missing:
            self.slices.put(self._model_slices(case, self.load_volume(case)))
        return len(missing)

    def _model_slices(self, case: str, volume: tuple[np.ndarray, np.ndarray]) -> Series:
        image, affine = volume
        series = series_from_volume(case, image, affine, None, self.image_size, self.intensity, self.max_slices)
        series.images = as_stored(series.images)
        return series

    def _check_label(self, raw: np.ndarray, shape: tuple, name: str) -> np.ndarray:
        if raw.shape != shape:
            raise DatasetError(f"{name}: shape {raw.shape} is not its image's {shape}")
        return remap_labels(raw, self.info, name)

    # ---- annotations -----------------------------------------------------------------------------------------
    def _put_label_map(self, key: str, labels: np.ndarray, affine: np.ndarray) -> None:
        """A label volume in source space (values 0..K), stored with the image's affine and the dataset's values."""
        if labels.dtype != np.uint8 or labels.ndim != 3 or labels.max(initial=0) > len(self.classes):
            raise InvalidInput("annotation must be a uint8 label volume with values 0..K")
        self.store.put_bytes(key, volume_to_bytes(to_file_values(labels, self.info), affine))

    def write_annotation(self, case: str, labels: np.ndarray, affine: np.ndarray, provenance: dict) -> tuple[str, str]:
        """The case's annotation, then its provenance JSON (written last: its presence marks a complete write)."""
        self._put_label_map(annotation_key(case), labels, affine)
        self.store.put_json(provenance_key(case), provenance)
        return annotation_key(case), provenance_key(case)

    def store_submission(
        self, case: str, annotator: str, labels: np.ndarray, affine: np.ndarray, provenance: dict, overlap: int = 1
    ) -> tuple[str, str]:
        """Store a submitted annotation. With overlap > 1 (inter-rater studies) every rater's copy is kept under
        raters/{case}/{annotator}.*, and the first rater's is also the case's primary annotation (leases are one at a
        time per case, so "first" is well defined). Returns the primary's (annotation, provenance) keys."""
        if overlap > 1:
            self._put_label_map(rater_key(case, annotator, "nii.gz"), labels, affine)
            self.store.put_json(rater_key(case, annotator, "json"), provenance)
            if self.store.exists(provenance_key(case)):
                return annotation_key(case), provenance_key(case)
        return self.write_annotation(case, labels, affine, provenance)

    def stored_by_session(self, case: str, annotator: str, session_id: str) -> tuple[str, str] | None:
        """The (annotation, provenance) keys if this session's annotation is stored already (a replica that died
        between storing it and recording its answer), else None."""
        for key in (rater_key(case, annotator, "json"), provenance_key(case)):
            try:
                if self.store.get_json(key).get("session_id") == session_id:
                    return annotation_key(case), provenance_key(case)
            except NotFound:
                continue
        return None

    def raters(self, case: str) -> set[str]:
        """Annotators with a stored annotation of the case: the rater copies, and the primary's annotator."""
        found = {k.split("/")[-1][: -len(".json")] for k in self.store.list(f"raters/{case}/") if k.endswith(".json")}
        if not found and self.store.exists(provenance_key(case)):
            found.add(self.store.get_json(provenance_key(case)).get("annotator", ""))
        return found

    def drafted_cases(self) -> list[str]:
        """Cases with a draft in the bucket (any annotator's)."""
        return sorted({k[len(DRAFTS) :].split("/", 1)[0] for k in self.store.list(DRAFTS)})

    def collect_drafts(self, case: str) -> None:
        """Remove every annotator's draft of an annotated case, with all their versions (a lease that went to someone
        else leaves its draft behind; the case is done, so none of them is resumed)."""
        self.store.purge_prefix(draft_prefix(case))

    def collect_sessions(self, annotated: set[str], stale_before: float) -> int:
        """Remove the records of sessions whose case is annotated, or whose lease expired before `stale_before` (unix
        time): a reloaded page leaves its old session's record behind. Returns how many went."""
        removed = 0
        for key in self.store.list(SESSIONS):
            try:
                record = self.store.get_json(key)
            except NotFound:
                continue
            expires = float(record.get("lease_expires_at") or 0)
            if record.get("case") in annotated or 0 < expires < stale_before:
                self.store.purge(key)
                removed += 1
        return removed

    def annotated_cases(self) -> list[str]:
        """Cases whose annotation is complete (the provenance, written last, exists)."""
        return sorted(
            k[len("annotations/") : -len(".json")] for k in self.store.list("annotations/") if k.endswith(".json")
        )

    def read_annotation(self, case: str) -> tuple[np.ndarray, dict]:
        """The annotation volume in source space (values 0..K) and its provenance."""
        prov = self.store.get_json(provenance_key(case))
        vol, _ = volume_from_bytes(self.store.get_bytes(annotation_key(case)), annotation_key(case))
        shape = tuple(prov.get("geometry", {}).get("shape", vol.shape))
        return self._check_label(vol, shape, annotation_key(case)), prov

    def annotation_series(self, case: str) -> tuple[Series, dict]:
        """The case's series with its stored annotation as labels (what the trainer trains on), and provenance."""
        labels, prov = self.read_annotation(case)
        return self.load_series(case).with_labels(labels), prov
