"""Data-parallel training with torchrun (2 gloo processes) against a real S3 endpoint: rank 0 checkpoints every epoch
to the bucket, and the same job run again resumes after the last saved epoch instead of starting over."""

from __future__ import annotations

import numpy as np

from saim.model.config import ModelConfig
from saim.stack.local import LocalStack
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
