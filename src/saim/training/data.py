"""Training data as a `torch.utils.data` pipeline: slices from memory or from a local decoded cache, and an epoch
sampler that is deterministic per (seed, epoch) and shards across data-parallel ranks.

The cache (`SliceCache`) holds each series' preprocessed slices (float16: half the disk and page cache of float32;
normalised intensities keep about three significant digits) and labels as .npy files in a local directory, read
memory-mapped: DataLoader workers (and the processes of a `torchrun` job) share one decoded copy through the page
cache, and the training set never has to fit in one process's memory.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

NO_NEIGHBOUR = -1  # the neighbour label of a slice whose series neighbours are not known (every pixel)


def neighbour_of(j: int, count: int) -> int | None:
    """The slice of a series whose ground truth stands in for a person's corrected neighbouring mask when slice j is
    trained as a propagation (saim.training.simulation): the one below, the first slice's the one above; None for
    a series of one slice."""
    if count < 2:
        return None
    return j - 1 if j > 0 else j + 1


class SliceDataset(Dataset):
    """(image (1, H, W) float32, label (H, W) int64, the label of a neighbouring slice of the same series (H, W)
    int64, NO_NEIGHBOUR where none is known) per index, and the label histogram for class weights."""

    def __len__(self) -> int:
        raise NotImplementedError

    def label_counts(self, num_outputs: int) -> np.ndarray:
        raise NotImplementedError


class ArraySlices(SliceDataset):
    """Slices held in memory: images (N, H, W) preprocessed, labels (N, H, W) in 0..K; `series_counts` (slices per
    series, in order, summing to N) says which slices are neighbours (without it, none are known)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, series_counts: list[int] | None = None):
        self.images = np.asarray(images, np.float32)
        self.labels = np.asarray(labels)
        self.neighbours = np.full(len(self.images), NO_NEIGHBOUR, np.int64)
        if series_counts is not None:
            if sum(series_counts) != len(self.images):
                raise ValueError(f"series of {sum(series_counts)} slices in all, the array has {len(self.images)}")
            start = 0
            for count in series_counts:
                for j in range(count):
                    near = neighbour_of(j, count)
                    self.neighbours[start + j] = NO_NEIGHBOUR if near is None else start + near
                start += count

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        near = int(self.neighbours[i])
        neighbour = (
            np.full(self.labels.shape[1:], NO_NEIGHBOUR, np.int64) if near < 0 else self.labels[near].astype(np.int64)
        )
        return (
            torch.from_numpy(self.images[i][None].copy()),
            torch.from_numpy(self.labels[i].astype(np.int64)),
            torch.from_numpy(neighbour),
        )

    def label_counts(self, num_outputs: int) -> np.ndarray:
        return np.bincount(self.labels.astype(np.int64).ravel(), minlength=num_outputs)[:num_outputs]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.images.shape


class SliceCache(SliceDataset):
    """A local directory of decoded series: {name}.images.npy (S, H, W) float16, {name}.labels.npy (S, H, W) uint8,
    and index.json (series, slice counts, label histogram). Written once by `write`, then opened read-only (by any
    number of processes)."""

    INDEX = "index.json"

    def __init__(self, root: Path | str):
        self.root = Path(root)
        index = json.loads((self.root / self.INDEX).read_text())
        self.names: list[str] = index["series"]
        self.counts = np.asarray(index["slices"], np.int64)
        self.histogram = np.asarray(index["label_counts"], np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)])
        self._arrays: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # opened lazily, per process

    @classmethod
    def write(cls, root: Path | str, series, num_outputs: int) -> SliceCache:
        """`series`: iterable of (name, images (S, H, W), labels (S, H, W)); each is written and dropped in turn."""
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        names, counts, histogram = [], [], np.zeros(num_outputs, np.int64)
        for k, (name, images, labels) in enumerate(series):
            np.save(root / f"{k:05d}.images.npy", np.asarray(images, np.float16))
            np.save(root / f"{k:05d}.labels.npy", np.asarray(labels, np.uint8))
            names.append(name)
            counts.append(len(images))
            histogram += np.bincount(np.asarray(labels, np.int64).ravel(), minlength=num_outputs)[:num_outputs]
        index = {"series": names, "slices": counts, "label_counts": histogram.tolist()}
        (root / cls.INDEX).write_text(json.dumps(index))
        return cls(root)

    def _series(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k not in self._arrays:
            self._arrays[k] = (
                np.load(self.root / f"{k:05d}.images.npy", mmap_mode="r"),
                np.load(self.root / f"{k:05d}.labels.npy", mmap_mode="r"),
            )
        return self._arrays[k]

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        k = int(np.searchsorted(self.starts, i, side="right") - 1)
        images, labels = self._series(k)
        j = i - int(self.starts[k])
        near = neighbour_of(j, int(self.counts[k]))
        neighbour = np.full(labels.shape[1:], NO_NEIGHBOUR, np.int64) if near is None else labels[near].astype(np.int64)
        return (
            torch.from_numpy(images[j][None].astype(np.float32)),
            torch.from_numpy(labels[j].astype(np.int64)),
            torch.from_numpy(neighbour),
        )

    def label_counts(self, num_outputs: int) -> np.ndarray:
        return self.histogram[:num_outputs]

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All slices in memory (validation sets, which are small)."""
        parts = [self._series(k) for k in range(len(self.names))]
        images = np.concatenate([np.asarray(i, np.float32) for i, _ in parts])
        return images, np.concatenate([np.asarray(lb) for _, lb in parts])


class EpochSampler(Sampler[int]):
    """`steps x batch x world` indices per epoch: concatenated random permutations of the data (every slice once
    before any twice), drawn from (seed, epoch) alone, so a run resumed at an epoch boundary sees the same order; each
    rank takes every world-th index."""

    def __init__(self, n: int, per_rank: int, seed: int, rank: int = 0, world: int = 1):
        self.n, self.per_rank, self.seed, self.rank, self.world = n, per_rank, seed, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        total = self.per_rank * self.world
        perms = [torch.randperm(self.n, generator=gen) for _ in range(math.ceil(total / self.n))]
        order = torch.cat(perms)[:total]
        return iter(order[self.rank :: self.world].tolist())


def steps_per_epoch(n: int, batch_size: int, world: int, minimum: int) -> int:
    """An epoch is at least one pass over the training set (steps grow with the data) and at least `minimum` steps
    (small sets: nnU-Net's fixed iterations)."""
    return max(minimum, math.ceil(n / (batch_size * world)))
