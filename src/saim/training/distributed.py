"""Data-parallel training with `torchrun`: one process per GPU (NCCL), or per CPU share (gloo, the tests).

The trainer writes a job directory (the decoded slice caches, the parent's weights, the configuration, where the
checkpoint lives) and runs `python -m torch.distributed.run --standalone --nproc_per_node N -m saim.training.distributed
JOB`; every rank trains on its share of each epoch's sample (saim.training.recipe.train with DistributedDataParallel),
rank 0 saves the epoch checkpoints and writes the trained weights and statistics back into the job directory. The
job directory is private to the trainer (0700): it holds the bucket credentials the checkpoints need.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from dataclasses import asdict, replace
from datetime import timedelta
from pathlib import Path

import torch

from saim.model.config import ModelConfig
from saim.model.predictor import InteractivePredictor
from saim.storage.objects import ObjectStore, S3Config
from saim.training.checkpoint import Checkpoints
from saim.training.config import TrainConfig
from saim.training.data import SliceCache
from saim.training.recipe import TrainResult, train

log = logging.getLogger(__name__)

JOB, WEIGHTS, META, STATS = "job.json", "result.pt", "result.json", "stats.json"


def write_job(
    job_dir: Path,
    model_config: ModelConfig,
    config: TrainConfig,
    data: Path,
    val: Path | None,
    parent: InteractivePredictor | None,
    checkpoint: tuple[S3Config, str, str] | None,
) -> Path:
    """The job file of a torchrun run (and the parent's weights beside it). `checkpoint`: (S3, key, fingerprint)."""
    job_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    job = {
        "model_config": model_config.to_dict(),
        "train_config": config.to_dict(),
        "data": str(data),
        "val": str(val) if val is not None else None,
        "parent": None,
        "checkpoint": None,
    }
    if parent is not None:
        (job_dir / "parent.pt").write_bytes(parent.to_bytes())
        (job_dir / "parent.json").write_text(json.dumps(parent.describe()))
        job["parent"] = str(job_dir / "parent.pt")
    if checkpoint is not None:
        s3, key, fp = checkpoint
        job["checkpoint"] = {"s3": asdict(s3), "key": key, "fingerprint": fp}
    path = job_dir / JOB
    path.touch(mode=0o600)
    path.write_text(json.dumps(job))
    return path


def run(job: Path, world_size: int, timeout_s: float | None = None) -> TrainResult:
    """Run the job on `world_size` processes of this host and return rank 0's result. A run still going after
    `timeout_s` is killed with every rank (torchrun's whole process group) and raises TimeoutError."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={world_size}",
        "-m",
        "saim.training.distributed",
        str(job),
    ]
    threads = max(1, torch.get_num_threads() // world_size)  # the trainer's CPU budget, shared by its ranks
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "SAIM_TORCH_THREADS": str(threads)}
    log_path = job.parent / "torchrun.log"  # a file, not a pipe: a rank that outlives torchrun cannot block the wait
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _stop(proc)
            raise TimeoutError(f"data-parallel training still running after {timeout_s} s: stopped") from None
    if proc.returncode != 0:
        raise RuntimeError(f"torchrun failed (exit {proc.returncode}):\n{log_path.read_text()[-4000:]}")
    job_dir = job.parent
    meta = json.loads((job_dir / META).read_text())
    predictor = InteractivePredictor.from_bytes((job_dir / WEIGHTS).read_bytes(), meta)
    return TrainResult(predictor, json.loads((job_dir / STATS).read_text()))


def _stop(proc: subprocess.Popen, grace_s: float = 30.0) -> None:
    """Stop torchrun and its ranks: SIGTERM first (the agent stops the ranks it started, which run in sessions of
    their own), then SIGKILL to torchrun's process group."""
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main(job_path: str) -> None:
    import torch.distributed as dist

    job = json.loads(Path(job_path).read_text())
    job_dir = Path(job_path).parent
    cuda = torch.cuda.is_available() and str(job["train_config"]["device"]).startswith("cuda")
    timeout = timedelta(seconds=float(job["train_config"].get("collective_timeout_s", 600.0)))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout)  # a rank left waiting fails, never hangs
    rank, world = dist.get_rank(), dist.get_world_size()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local)
    torch.set_num_threads(int(os.environ.get("SAIM_TORCH_THREADS", "1")))
    mc = ModelConfig.from_dict(job["model_config"])
    tc = replace(TrainConfig(**job["train_config"]), device=f"cuda:{local}" if cuda else "cpu")
    parent = None
    if job["parent"]:
        meta = json.loads((job_dir / "parent.json").read_text())
        parent = InteractivePredictor.from_bytes(Path(job["parent"]).read_bytes(), meta, tc.device)
    checkpoints = None
    if job["checkpoint"]:
        spec = job["checkpoint"]
        checkpoints = Checkpoints(ObjectStore.connect(S3Config(**spec["s3"])), spec["key"], spec["fingerprint"])
    val = SliceCache(job["val"]).arrays() if job["val"] else None
    result = train(mc, SliceCache(job["data"]), tc, parent, val=val, checkpoints=checkpoints, rank=rank, world=world)
    if rank == 0:
        predictor = result.predictor
        (job_dir / WEIGHTS).write_bytes(predictor.to_bytes())
        (job_dir / META).write_text(json.dumps(predictor.describe()))
        (job_dir / STATS).write_text(json.dumps(result.stats))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s rank %(process)d %(levelname)s %(name)s: %(message)s")
    main(sys.argv[1])
