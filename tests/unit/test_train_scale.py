"""The trainer at scale: the slice cache and DataLoader, the epoch budget, early stopping, epoch checkpoints that
a killed run resumes from, and data-parallel training with torchrun (2 gloo processes)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from saim.training import distributed
from saim.training import recipe as training
from saim.training.checkpoint import Checkpoints, fingerprint
from saim.training.config import TrainConfig
from saim.training.data import NO_NEIGHBOUR, ArraySlices, EpochSampler, SliceCache, steps_per_epoch
from saim.training.recipe import train
from tests.unit.fakes import MemoryStore


def toy(n: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.random((n, 32, 32)).astype(np.float32)
    labels = np.zeros((n, 32, 32), np.uint8)
    labels[:, 8:16, 8:16] = 1
    labels[:, 20:28, 4:12] = 2
    images[labels == 1] += 1.0
    return images, labels


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, msg=name)


def test_the_slice_cache_serves_what_was_written_memory_mapped(tmp_path):
    images, labels = toy(7)
    series = [("a", images[:3], labels[:3]), ("b", images[3:], labels[3:])]
    cache = SliceCache.write(tmp_path / "cache", series, num_outputs=3)
    again = SliceCache(tmp_path / "cache")  # another process opens the same files
    assert len(again) == 7 and again.names == ["a", "b"]
    in_memory = ArraySlices(images, labels, series_counts=[3, 4])
    for i, near in ((0, 1), (2, 1), (3, 4), (6, 5)):  # the slice below, the first one's above; never across series
        image, label, neighbour = again[i]
        assert image.dtype == torch.float32  # stored as float16: half the disk and page cache
        np.testing.assert_array_equal(image.numpy()[0], images[i].astype(np.float16).astype(np.float32))
        np.testing.assert_array_equal(label.numpy(), labels[i])
        np.testing.assert_array_equal(neighbour.numpy(), labels[near])
        np.testing.assert_array_equal(in_memory[i][2].numpy(), labels[near])
    assert (ArraySlices(images, labels)[2][2] == NO_NEIGHBOUR).all()  # series unknown: no neighbour
    single = SliceCache.write(tmp_path / "one", [("c", images[:1], labels[:1])], num_outputs=3)
    assert (single[0][2] == NO_NEIGHBOUR).all()
    np.testing.assert_array_equal(cache.label_counts(3), ArraySlices(images, labels).label_counts(3))
    np.testing.assert_array_equal(cache.arrays()[1], labels)


def test_dataloader_workers_read_the_cache_and_change_nothing(tiny_model_config, tmp_path):
    images, labels = toy(8)
    cache = SliceCache.write(tmp_path / "cache", [("a", images[:5], labels[:5]), ("b", images[5:], labels[5:])], 3)
    tc = TrainConfig(epochs=2, steps_per_epoch=1, batch_size=4, loader_workers=0, seed=6)
    in_process = train(tiny_model_config, cache, tc)
    workers = train(tiny_model_config, cache, replace(tc, loader_workers=2))  # spawned processes
    assert workers.stats["loader_workers"] == 2
    assert workers.stats["loss_history"] == in_process.stats["loss_history"]


def test_an_epoch_is_a_pass_over_the_data_at_least_and_ranks_share_it():
    assert steps_per_epoch(n=40, batch_size=8, world=1, minimum=25) == 25  # small sets: the fixed iterations
    assert steps_per_epoch(n=4000, batch_size=8, world=1, minimum=25) == 500  # large sets: one pass
    assert steps_per_epoch(n=4000, batch_size=8, world=2, minimum=25) == 250
    whole = list(EpochSampler(10, 20, seed=1))
    assert sorted(whole[:10]) == list(range(10)) and sorted(whole[10:]) == list(range(10))
    ranks = [list(EpochSampler(10, 10, seed=1, rank=r, world=2)) for r in (0, 1)]
    assert ranks[0] == whole[0::2] and ranks[1] == whole[1::2]  # together: the single process's order
    later = EpochSampler(10, 10, seed=1)
    later.set_epoch(3)
    assert list(later) != whole[:10] and list(later) == list(later)  # a new order per epoch, fixed by (seed, epoch)


def test_early_stopping_keeps_the_best_epoch(tiny_model_config, monkeypatch):
    images, labels = toy()
    scores, seen = iter([0.2, 0.5, 0.4, 0.45, 0.9, 0.9]), []

    def scripted_val_miou(net, mc, device, val):  # the validation mIoU after each epoch, as scripted
        seen.append({k: v.clone() for k, v in net.state_dict().items()})
        return next(scores)

    monkeypatch.setattr(training, "_val_miou", scripted_val_miou)
    tc = TrainConfig(epochs=6, steps_per_epoch=1, batch_size=4, patience=2, loader_workers=0, seed=1)
    result = train(tiny_model_config, ArraySlices(images, labels), tc, val=(images[:4], labels[:4]))
    s = result.stats
    assert s["stopped_early"] and s["epochs_run"] == 4 and s["best_epoch"] == 1  # epochs 2, 3: no gain over 0.5
    assert s["val_miou_history"] == [0.2, 0.5, 0.4, 0.45]
    best = result.predictor.network.state_dict()
    for k, v in seen[1].items():  # the weights returned are epoch 1's, not the last epoch's
        torch.testing.assert_close(best[k], v, msg=k)
    assert any(not torch.equal(seen[3][k], v) for k, v in seen[1].items())


def test_a_killed_run_resumes_from_its_epoch_checkpoint_and_ends_where_an_unbroken_run_ends(tiny_model_config):
    images, labels = toy()
    data = ArraySlices(images, labels)
    tc = TrainConfig(epochs=4, steps_per_epoch=2, batch_size=4, loader_workers=0, checkpoint_every_s=0, seed=3)
    unbroken = train(tiny_model_config, data, tc)
    per = unbroken.stats["steps_per_epoch"]
    assert per == 3  # 12 slices in batches of 4: a pass over the data is more than the 2-step minimum

    store = MemoryStore()
    checkpoints = Checkpoints(store, "checkpoints/iteration-0001.pt", fingerprint("manifest", tc.to_dict()))

    class Killed(Exception):
        pass

    def kill_in_epoch_three(step, total, loss):
        if step == 2 * per + 2:  # epochs 0 and 1 are checkpointed; epoch 2 is under way
            raise Killed

    with pytest.raises(Killed):
        train(tiny_model_config, data, tc, progress=kill_in_epoch_three, checkpoints=checkpoints)
    assert checkpoints.load()["epoch"] == 1
    resumed = train(tiny_model_config, data, tc, checkpoints=checkpoints)
    assert resumed.stats["resumed_after_epoch"] == 1 and resumed.stats["steps"] == 4 * per
    assert resumed.stats["loss_history"] == unbroken.stats["loss_history"]
    same_weights(resumed.predictor.network, unbroken.predictor.network)

    other = Checkpoints(store, checkpoints.key, fingerprint("another training set", tc.to_dict()))
    assert other.load() is None  # never resumed into another run


def test_two_gloo_processes_train_one_model(tiny_model_config, tmp_path):
    images, labels = toy(16)
    cache = SliceCache.write(tmp_path / "train", [("a", images[:8], labels[:8]), ("b", images[8:], labels[8:])], 3)
    tc = TrainConfig(epochs=2, steps_per_epoch=1, batch_size=4, loader_workers=0, seed=2)
    job = distributed.write_job(tmp_path / "job", tiny_model_config, tc, cache.root, None, None, None)
    result = distributed.run(job, world_size=2, timeout_s=300)
    s = result.stats
    assert s["world_size"] == 2 and s["steps_per_epoch"] == 2 and s["epochs_run"] == 2  # 16 slices / (4 x 2 ranks)
    assert np.isfinite(s["final_loss"])
    probs = result.predictor.probabilities(images[:2])
    assert probs.shape == (2, 3, 32, 32) and np.allclose(probs.sum(axis=1), 1, atol=1e-4)


def test_the_pipeline_resumes_a_killed_run_and_drops_the_checkpoint_once_published(tmp_path, tiny_model_config):
    from saim.data import phantom
    from saim.data.dataset import NnUNetDataset
    from saim.data.splits import Splits
    from saim.registry.versions import ModelRegistry
    from saim.storage.pool import PoolStore, import_dataset
    from saim.training.pipeline import TrainingPipeline, checkpoint_key

    ds = NnUNetDataset(phantom.generate(tmp_path / "ph", num_series=5, depth=3, size=32, seed=0))
    store = MemoryStore()
    c = ds.cases
    import_dataset(store, ds, Splits(tuple(c[:2]), tuple(c[2:3]), tuple(c[3:4]), tuple(c[4:])))
    pool = PoolStore(store, image_size=32)
    mc = replace(tiny_model_config, classes=phantom.CLASSES)
    tc = TrainConfig(
        epochs=3, steps_per_epoch=1, batch_size=2, loader_workers=0, patience=0, checkpoint_every_s=0, seed=4
    )
    pipeline = TrainingPipeline(pool, ModelRegistry(store), mc, lambda it: tc, eval_clicks=1, work_dir=tmp_path)

    def killed_in_the_last_epoch(step, total, loss):
        if step == total:
            raise KeyboardInterrupt  # the pod is gone

    with pytest.raises(KeyboardInterrupt):
        pipeline.run(0, None, progress=killed_in_the_last_epoch)
    assert store.exists(checkpoint_key(0)) and not ModelRegistry(store).versions()
    run = pipeline.run(0, None)
    training = ModelRegistry(store).metadata(run.metadata.version).raw["training"]
    assert training["resumed_after_epoch"] == 1 and training["epochs_run"] == 3
    assert len(training["val_miou_history"]) == 3  # the validation history came back with the checkpoint
    assert not store.exists(checkpoint_key(0))  # published: the next run of iteration 0 would start anew
    assert not list(tmp_path.glob("saim-train-*"))  # the local slice cache is gone too
