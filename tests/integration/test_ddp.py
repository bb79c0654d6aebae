"""Data-parallel training with torchrun (2 gloo processes) against a real S3 endpoint: rank 0 checkpoints every epoch
to the bucket, and the same job run again resumes after the last saved epoch instead of starting over."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from saim.model.config import ModelConfig
from saim.stack.local import LocalStack, free_port
from saim.training import distributed
from saim.training.checkpoint import Checkpoints, fingerprint
from saim.training.config import TrainConfig
from saim.training.data import SliceCache


def test_a_two_process_run_checkpoints_to_the_bucket_and_a_rerun_resumes(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.random((16, 32, 32)).astype(np.float32)
    labels = np.zeros((16, 32, 32), np.uint8)
    labels[:, 8:16, 8:16], labels[:, 20:28, 4:12] = 1, 2
    cache = SliceCache.write(tmp_path / "train", [("a", images[:8], labels[:8]), ("b", images[8:], labels[8:])], 3)
    mc = ModelConfig(classes=("a", "b"), image_size=32, encoder="resnet18")
    tc = TrainConfig(epochs=3, steps_per_epoch=1, batch_size=4, loader_workers=0, checkpoint_every_s=0, seed=2)
    stack = LocalStack(tmp_path / "stack")
    try:
        stack.start_s3()
        key, fp = "checkpoints/iteration-0007.pt", fingerprint("ddp test", tc.to_dict())
        job = distributed.write_job(tmp_path / "job", mc, tc, cache.root, None, None, (stack.s3_config(), key, fp))
        first = distributed.run(job, world_size=2, timeout_s=300)
        assert first.stats["world_size"] == 2 and first.stats["epochs_run"] == 3
        assert first.stats["resumed_after_epoch"] is None
        saved = Checkpoints(stack.store(), key, fp).load()
        assert saved["epoch"] == 1 and len(saved["generators"]) == 2  # epochs 0 and 1; each rank's random stream

        again = distributed.run(job, world_size=2, timeout_s=300)  # as if the first had been killed in epoch 2
        assert again.stats["resumed_after_epoch"] == 1 and again.stats["steps"] == first.stats["steps"]
        assert again.stats["loss_history"][:2] == first.stats["loss_history"][:2]  # restored, not retrained
        assert len(stack.store().versions_of(key)) == 1  # rewritten in place, not piled up as old versions
    finally:
        stack.stop()


def _disagreeing_rank(rank: int, port: int, out: str) -> None:
    """One rank of a 2-process gloo group whose validation disagrees with the other's: rank 0 gains every epoch,
    rank 1 never after its first. Writes the epochs it ran."""
    import json
    import os
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    from saim.training import recipe
    from saim.training.data import ArraySlices

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=timedelta(seconds=30))
    scores = iter([0.1, 0.2, 0.3, 0.4] if rank == 0 else [0.9, 0.1, 0.1, 0.1])
    recipe._val_miou = lambda *args: next(scores)  # the disagreement under test
    rng = np.random.default_rng(rank)
    images = rng.random((8, 32, 32)).astype(np.float32)
    labels = np.zeros((8, 32, 32), np.uint8)
    labels[:, 8:16, 8:16] = 1
    mc = ModelConfig(classes=("a",), image_size=32, encoder="resnet18", refine_steps=0)
    tc = TrainConfig(epochs=4, steps_per_epoch=1, batch_size=2, loader_workers=0, patience=1, seed=3)
    result = recipe.train(mc, ArraySlices(images, labels), tc, val=(images[:2], labels[:2]), rank=rank, world=2)
    Path(out).write_text(json.dumps(result.stats))
    dist.destroy_process_group()


def test_ranks_whose_validation_disagrees_stop_together(tmp_path):
    """Early stopping is rank 0's decision for every rank: a rank that stopped alone would leave the others waiting
    in the next epoch's gradient all-reduce until the collective timed out."""
    import json
    import multiprocessing

    port = free_port()  # the rendezvous port, outside the range the ranks' own connections draw from
    ctx = multiprocessing.get_context("spawn")
    outs = [tmp_path / f"rank{r}.json" for r in range(2)]
    procs = [ctx.Process(target=_disagreeing_rank, args=(r, port, str(outs[r]))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
    alive = [p.pid for p in procs if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
    assert not alive, "a rank still waits in a collective"
    assert [p.exitcode for p in procs] == [0, 0]
    stats = [json.loads(o.read_text()) for o in outs]
    assert [s["epochs_run"] for s in stats] == [4, 4]  # rank 0 gained every epoch: nobody stopped
    assert [s["stopped_early"] for s in stats] == [False, False]


def test_a_run_past_its_timeout_is_stopped_with_every_rank(tmp_path):
    import threading

    import psutil
    import pytest

    from tests.waiting import poll

    rng = np.random.default_rng(0)
    images = rng.random((8, 32, 32)).astype(np.float32)
    cache = SliceCache.write(tmp_path / "train", [("a", images, np.zeros((8, 32, 32), np.uint8))], 2)
    mc = ModelConfig(classes=("a",), image_size=32, encoder="resnet18")
    tc = TrainConfig(epochs=500, steps_per_epoch=5, batch_size=4, loader_workers=0)
    job = distributed.write_job(tmp_path / "job", mc, tc, cache.root, None, None, None)

    def ranks() -> list[int]:  # the rank processes (torchrun starts them in sessions of their own)
        me = psutil.Process().pid
        return [
            p.pid
            for p in psutil.process_iter(["cmdline"])
            if p.pid != me
            and "saim.training.distributed" in (cmd := " ".join(p.info["cmdline"] or []))
            and str(job) in cmd
            and "torch.distributed.run" not in cmd
        ]

    seen: set[int] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.update(ranks())
            done.wait(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with pytest.raises(TimeoutError):
            distributed.run(job, world_size=2, timeout_s=20)
    finally:
        done.set()
        watcher.join()
    assert len(seen) == 2, f"both ranks should have been running before the timeout, saw {seen}"
    poll(lambda: not ranks(), 10, "every rank to be gone", context=lambda: str(ranks()))
