"""The preprocessed slice store (saim.storage.preprocessed): written at import and once per new series, read by the
pool store instead of decoding the NIfTI, and the same series either way."""

from __future__ import annotations

import numpy as np
import pytest

from saim.data import phantom
from saim.data.dataset import NnUNetDataset
from saim.data.splits import Splits
from saim.storage.pool import PoolStore, add_to_pool, image_key, import_dataset
from saim.storage.preprocessed import CHUNK_SLICES, PREFIX, decode_series, encode_series, slices_key
from tests.unit.fakes import MemoryStore


class CountingStore(MemoryStore):
    def __init__(self):
        super().__init__()
        self.reads: list[str] = []

    def get_bytes(self, key):
        self.reads.append(key)
        return super().get_bytes(key)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return NnUNetDataset(phantom.generate(tmp_path_factory.mktemp("ph"), num_series=6, depth=20, size=40, seed=3))


def imported(dataset, image_size=None) -> tuple[CountingStore, Splits]:
    store, c = CountingStore(), dataset.cases
    splits = Splits(tuple(c[:1]), tuple(c[1:2]), tuple(c[2:3]), tuple(c[3:]))
    import_dataset(store, dataset, splits, image_size)
    return store, splits


def same_series(a, b) -> None:
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.slice_index, b.slice_index)
    assert a.geometry.shape == b.geometry.shape and np.array_equal(a.geometry.affine, b.geometry.affine)
    if a.labels is None:
        assert b.labels is None
    else:
        np.testing.assert_array_equal(a.labels, b.labels)


def test_import_writes_every_series_and_reads_come_from_the_store(dataset):
    store, splits = imported(dataset, image_size=32)
    stored = [k for k in store.objects if k.startswith(PREFIX)]
    assert len(stored) == len(dataset.cases)
    pool = PoolStore(store, 32, cache_mb=0)
    store.reads.clear()
    for case in splits.all():
        series = pool.load_series(case)
        assert series.images.dtype == np.float32 and series.labels is None
    assert not [k for k in store.reads if k.endswith(".nii.gz")]  # no NIfTI decoded
    decoded = PoolStore(store, 32, cache_mb=0, preprocessed=False)  # straight from the NIfTI
    for case in splits.all():
        same_series(
            pool.load_series(case, with_label=case in splits.labelled),
            decoded.load_series(case, with_label=case in splits.labelled),
        )


def test_a_series_without_slices_is_decoded_once_and_written(dataset):
    store, splits = imported(dataset)  # no model size at import: nothing preprocessed
    assert not [k for k in store.objects if k.startswith(PREFIX)]
    case = splits.pool[0]
    first = PoolStore(store, 24, cache_mb=0).load_series(case)
    assert store.reads.count(image_key(case)) == 1
    again = PoolStore(store, 24, cache_mb=0).load_series(case)  # another process: read from the store
    assert store.reads.count(image_key(case)) == 1
    same_series(first, again)
    other = PoolStore(store, 16, cache_mb=0)  # another model size: its own slices
    assert other.load_series(case).images.shape[1:] == (16, 16)
    assert store.reads.count(image_key(case)) == 2
    assert len([k for k in store.objects if k.startswith(PREFIX)]) == 2


def test_damaged_slices_are_decoded_again(dataset):
    store, splits = imported(dataset, image_size=24)
    case = splits.pool[1]
    pool = PoolStore(store, 24, cache_mb=0)
    key = slices_key(pool.slices.fp, case)
    good = pool.load_series(case)
    store.reads.clear()
    store.objects[key] = store.objects[key][:-10]  # truncated
    same_series(pool.load_series(case), good)
    assert store.reads.count(image_key(case)) == 1
    same_series(decode_series(store.objects[key], key), good)  # written again


def test_the_format_round_trips_in_chunks(dataset):
    store, splits = imported(dataset)
    series = PoolStore(store, 16, cache_mb=0, preprocessed=False).load_series(splits.pool[0])
    assert series.num_slices > CHUNK_SLICES  # more than one chunk
    same_series(decode_series(encode_series(series), "x"), series)


def test_add_to_pool_writes_the_new_series(dataset, tmp_path):
    store, _ = imported(dataset, image_size=24)
    extra = phantom.generate(tmp_path / "more", num_series=1, depth=5, size=40, seed=9)
    path = next((extra / "imagesTr").glob("*_0000.nii.gz"))
    added = add_to_pool(store, {"added_0001": path}, image_size=24)
    pool = PoolStore(store, 24, cache_mb=0)
    assert added == ["added_0001"] and store.exists(slices_key(pool.slices.fp, "added_0001"))
