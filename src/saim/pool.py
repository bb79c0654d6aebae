"""The annotation pool in object storage: dataset import with fixed splits, series IO, annotations with provenance.

Only the initial (pre-training), validation and test series have ground truth in the bucket; the pool's labels are
withheld, as in a real deployment. In the emulated scenario the virtual annotators hold the ground truth locally.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from cachetools import LRUCache

from saim.config import SplitRule
from saim.data.dataset import DatasetInfo, NnUNetDataset, remap_labels
from saim.data.nifti import check_finite, volume_from_bytes, volume_to_bytes
from saim.data.slices import Series, series_from_volume
from saim.errors import FailedPrecondition, InvalidInput, NotFound
from saim.storage import ObjectStore

DATASET_JSON = "dataset/dataset.json"
SPLITS_JSON = "dataset/splits.json"


@dataclass(frozen=True)
class Splits:
    initial: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    pool: tuple[str, ...]

    def to_json(self) -> dict:
        return {k: list(v) for k, v in self.__dict__.items()}


def make_splits(cases: list[str], seed: int, rule: SplitRule | None = None) -> Splits:
    """The one split rule, for the services' import and the in-process emulation (saim.emulate.split_series)."""
    rule = rule or SplitRule()
    order = np.random.default_rng(seed).permutation(len(cases))
    shuffled = [cases[i] for i in order]
    n = len(shuffled)
    n_test, n_val = max(1, round(rule.test_fraction * n)), max(1, round(rule.val_fraction * n))
    rest = shuffled[n_test + n_val :]
    n_init = min(len(rest) - 1, max(1, round(rule.pretrain_fraction * len(rest))))
    return Splits(
        tuple(rest[:n_init]), tuple(shuffled[n_test : n_test + n_val]), tuple(shuffled[:n_test]), tuple(rest[n_init:])
    )


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


def import_dataset(store: ObjectStore, dataset: NnUNetDataset, splits: Splits) -> None:
    """Upload images of every case, labels of initial/val/test only, then splits and dataset.json (written last:
    their presence marks a complete import). Every case is read and validated first: a bad file is a DatasetError
    naming it, and nothing in the bucket is touched."""
    for case in dataset.cases:
        dataset.load_case(case)
    with_labels = set(splits.initial) | set(splits.val) | set(splits.test)
    for case in dataset.cases:
        store.put_bytes(image_key(case), dataset.image_path(case).read_bytes())
        if case in with_labels:
            store.put_bytes(label_key(case), dataset.label_path(case).read_bytes())
    store.put_json(SPLITS_JSON, splits.to_json())
    store.put_json(DATASET_JSON, {**dataset.info.to_json(), "numTraining": len(dataset.cases)})


SERIES_CACHE_MB = 1024  # decoded series kept per process (SAIM_SERIES_CACHE_MB)
DECODE_WORKERS = 4  # threads decoding series ahead of their consumer (SAIM_DECODE_WORKERS)


def series_bytes(series: Series) -> int:
    return series.images.nbytes + (0 if series.labels is None else series.labels.nbytes)


class PoolStore:
    """Read access to the imported dataset for the services. Decoded series are kept in an LRU cache bounded by
    bytes (`cache_mb`), so a pool of any size streams through a process of bounded memory."""

    def __init__(self, store: ObjectStore, image_size: int, max_slices: int | None, cache_mb: float = SERIES_CACHE_MB):
        self.store, self.image_size, self.max_slices = store, image_size, max_slices
        self._cache: LRUCache[tuple[str, bool], Series] = LRUCache(
            maxsize=int(cache_mb * 2**20), getsizeof=series_bytes
        )
        self._cache_lock = threading.Lock()
        try:
            meta = store.get_json(DATASET_JSON)
            self.splits = Splits(**{k: tuple(v) for k, v in store.get_json(SPLITS_JSON).items()})
        except NotFound as exc:
            raise FailedPrecondition(f"no dataset imported into bucket {store.bucket!r} ({exc})") from exc
        labels = meta["labels"]
        fg = sorted(((n, v) for n, v in labels.items() if n != "background"), key=lambda nv: nv[1])
        self.info = DatasetInfo(meta.get("name", "dataset"), tuple(n for n, _ in fg), tuple(v for _, v in fg))

    @property
    def classes(self) -> tuple[str, ...]:
        return self.info.classes

    def all_cases(self) -> set[str]:
        s = self.splits
        return set(s.initial) | set(s.val) | set(s.test) | set(s.pool)

    def load_series(self, case: str, with_label: bool = False) -> Series:
        """A series at model resolution. Images (and the withheld-or-not labels) never change once imported, so a
        cached series is served until the byte budget evicts it; callers must not modify the arrays."""
        key = (case, with_label)
        with self._cache_lock:
            cached = self._cache.get(key)
        if cached is None:
            cached = self._load_series(case, with_label)
            if series_bytes(cached) <= self._cache.maxsize:  # larger than the whole budget: served, not kept
                with self._cache_lock:
                    self._cache[key] = cached
        return cached

    def iter_series(self, cases: list[str], workers: int = DECODE_WORKERS) -> Iterator[Series]:
        """The series of `cases` in order, downloaded and decoded by `workers` threads ahead of the consumer, with at
        most 2 x workers decoded and not yet consumed. Decoding is mostly outside the GIL (gzip, NIfTI, numpy,
        torch resampling): 4 threads tripled cold rescoring on a 16-core host (tools/gpu_bench.sh)."""
        if workers <= 1:
            yield from (self.load_series(c) for c in cases)
            return
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
            pending: deque[Future[Series]] = deque()
            try:
                for case in cases:
                    pending.append(pool.submit(self.load_series, case))
                    if len(pending) >= 2 * workers:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:
                for future in pending:  # the consumer stopped early (an error): decode nothing more
                    future.cancel()

    def _load_series(self, case: str, with_label: bool) -> Series:
        if case not in self.all_cases():
            raise NotFound(f"unknown case {case!r}")
        image, _ = volume_from_bytes(self.store.get_bytes(image_key(case)), image_key(case))
        check_finite(image, image_key(case))
        label = None
        if with_label:
            raw, _ = volume_from_bytes(self.store.get_bytes(label_key(case)), label_key(case))
            label = remap_labels(raw, self.info, label_key(case))
        return series_from_volume(case, image, label, self.image_size, self.max_slices)

    # ---- annotations -----------------------------------------------------------------------------------------
    def _put_label_map(self, key: str, labels: np.ndarray) -> None:
        """A label map (S, H, W) at model resolution, stored as a (H, W, S) NIfTI."""
        if labels.dtype != np.uint8 or labels.ndim != 3 or labels.max(initial=0) > len(self.classes):
            raise InvalidInput("annotation must be a uint8 (S, H, W) label map with values 0..K")
        self.store.put_bytes(key, volume_to_bytes(np.moveaxis(labels, 0, 2)))

    def write_annotation(self, case: str, labels: np.ndarray, provenance: dict) -> tuple[str, str]:
        """The case's annotation, then its provenance JSON (written last: its presence marks a complete write)."""
        self._put_label_map(annotation_key(case), labels)
        self.store.put_json(provenance_key(case), provenance)
        return annotation_key(case), provenance_key(case)

    def store_submission(
        self, case: str, annotator: str, labels: np.ndarray, provenance: dict, overlap: int = 1
    ) -> tuple[str, str]:
        """Store a submitted annotation. With overlap > 1 (inter-rater studies) every rater's copy is kept under
        raters/{case}/{annotator}.*, and the first rater's is also the case's primary annotation (leases are one at a
        time per case, so "first" is well defined). Returns the primary's (annotation, provenance) keys."""
        if overlap > 1:
            self._put_label_map(rater_key(case, annotator, "nii.gz"), labels)
            self.store.put_json(rater_key(case, annotator, "json"), provenance)
            if self.store.exists(provenance_key(case)):
                return annotation_key(case), provenance_key(case)
        return self.write_annotation(case, labels, provenance)

    def raters(self, case: str) -> set[str]:
        """Annotators with a stored annotation of the case: the rater copies, and the primary's annotator."""
        found = {k.split("/")[-1][: -len(".json")] for k in self.store.list(f"raters/{case}/") if k.endswith(".json")}
        if not found and self.store.exists(provenance_key(case)):
            found.add(self.store.get_json(provenance_key(case)).get("annotator", ""))
        return found

    def annotated_cases(self) -> list[str]:
        """Cases whose annotation is complete (the provenance, written last, exists)."""
        return sorted(
            k[len("annotations/") : -len(".json")] for k in self.store.list("annotations/") if k.endswith(".json")
        )

    def read_annotation(self, case: str) -> tuple[np.ndarray, dict]:
        prov = self.store.get_json(provenance_key(case))
        vol, _ = volume_from_bytes(self.store.get_bytes(annotation_key(case)), annotation_key(case))
        return np.moveaxis(vol.astype(np.uint8), 2, 0), prov
