"""The trainer's pipeline: gather the whole annotated pool from object storage, retrain, evaluate on the fixed
validation and test splits, publish a self-describing version to the registry."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from saim.data.slices import Series, stack
from saim.errors import InvalidInput
from saim.model.config import ModelConfig
from saim.model.predictor import InteractivePredictor
from saim.registry.versions import ModelMetadata, ModelRegistry, VersionStatus
from saim.storage.pool import PoolStore, annotation_key
from saim.training import distributed
from saim.training.checkpoint import Checkpoints, fingerprint
from saim.training.config import TrainConfig
from saim.training.data import SliceCache
from saim.training.evaluation import evaluate
from saim.training.metrics import mean_iou
from saim.training.recipe import train

log = logging.getLogger(__name__)


def checkpoint_key(iteration: int) -> str:
    """Where the training run of an iteration keeps its epoch checkpoint until its version is published."""
    return f"checkpoints/iteration-{iteration:04d}.pt"


def promotion_decision(new: dict[str, float], current: dict[str, float] | None, tolerance: float) -> tuple[bool, str]:
    """Promote unless the new version's validation mIoU is worse than the current one's by more than `tolerance`."""
    if current is None:
        return True, "first model"
    new_val, cur_val = float(new["val_miou"]), float(current["val_miou"])
    if new_val >= cur_val - tolerance:
        return True, f"val mIoU {new_val:.3f} vs current {cur_val:.3f} (tolerance {tolerance})"
    return False, f"rejected: val mIoU {new_val:.3f} is worse than current {cur_val:.3f} by more than {tolerance}"


@dataclass
class RunResult:
    metadata: ModelMetadata
    status: VersionStatus  # the gate's decision
    reason: str

    @property
    def promoted(self) -> bool:
        return self.status is VersionStatus.PROMOTED


class TrainingPipeline:
    def __init__(
        self,
        pool: PoolStore,
        registry: ModelRegistry,
        model_config: ModelConfig,
        train_config: Callable[[int], TrainConfig],
        eval_clicks: int = 3,
        promotion_tolerance: float = 0.02,
        work_dir: Path | str | None = None,
    ):
        self.pool, self.registry, self.promotion_tolerance = pool, registry, promotion_tolerance
        self.work_dir = work_dir  # local disk for the decoded slice cache (None: the system's temporary directory)
        self.model_config, self.train_config, self.eval_clicks = model_config, train_config, eval_clicks

    def training_series(self, manifest: list[dict]):
        """(case, images, labels) of the initial split's ground truth, then of every SAIM annotation in the bucket,
        one series at a time; `manifest` gets an entry per series yielded."""
        for case in self.pool.splits.initial:
            s = self.pool.load_series(case, with_label=True)
            manifest.append({"case": case, "source": "ground_truth"})
            yield case, s.images, s.truth
        for case in self.pool.annotated_cases():
            try:
                s, prov = self.pool.annotation_series(case)
            except InvalidInput as exc:  # stored by an older release, or damaged: never train on it silently
                log.warning("annotation of %s skipped: %s", case, exc)
                continue
            manifest.append(
                {
                    "case": case,
                    "source": "saim",
                    "annotation_key": annotation_key(case),
                    "annotator": prov.get("annotator"),
                    "model_versions": prov.get("model_versions_used"),
                }
            )
            yield case, s.images, s.truth

    def split(self, name: str) -> list[Series]:
        return [self.pool.load_series(c, with_label=True) for c in getattr(self.pool.splits, name)]

    def evaluate(self, predictor: InteractivePredictor) -> dict[str, float]:
        test = evaluate(predictor, self.split("test"), self.eval_clicks, noc=False)
        val_images, val_gt = stack(self.split("val"))
        metrics = {
            "val_miou": mean_iou(val_gt, predictor.predict(val_images), predictor.config.num_classes),
            "test_miou": test["miou"],
            "test_interactive_miou": test["interactive_miou"],
        }
        for measure in (
            "click_fidelity",
            "click_precision",
            "click_overshoot",
            "scribble_miou",
            "box_miou",
            "box_click_miou",
        ):
            if test.get(measure) is not None:
                metrics[f"test_{measure}"] = test[measure]
        metrics.update({f"test_iou_{c}": v for c, v in test["per_class_iou"].items() if v is not None})
        return metrics

    def run(self, iteration: int, parent_version: str | None, progress=None) -> RunResult:
        """Train, evaluate, publish (weights + metadata), then promote through the gate: CURRENT moves only for a
        version that is not worse on the fixed validation split than the current one.

        The training set is decoded once into a local slice cache (saim.training.data.SliceCache) that the DataLoader
        workers, or the torchrun ranks with `world_size` > 1, read. Each epoch is checkpointed to
        checkpoints/iteration-NNNN.pt; a run of the same iteration on the same data resumes from it."""
        started = time.perf_counter()
        config = self.train_config(iteration)
        parent = self.registry.load(parent_version) if parent_version else None
        k = self.model_config.num_classes + 1
        with tempfile.TemporaryDirectory(prefix=f"saim-train-{iteration}-", dir=self.work_dir) as tmp:
            manifest: list[dict] = []
            data = SliceCache.write(Path(tmp) / "train", self.training_series(manifest), k)
            val_series = ((c, s.images, s.truth) for c, s in zip(self.pool.splits.val, self.split("val"), strict=True))
            val_cache = SliceCache.write(Path(tmp) / "val", val_series, k)
            key = checkpoint_key(iteration)
            fp = fingerprint(manifest, config.to_dict(), self.model_config.to_dict(), parent_version)
            if config.world_size > 1:
                s3 = getattr(self.registry.store, "config", None)  # a real bucket: the ranks reach it themselves
                job = distributed.write_job(
                    Path(tmp) / "job",
                    self.model_config,
                    config,
                    data.root,
                    val_cache.root,
                    parent,
                    (s3, key, fp) if s3 is not None else None,
                )
                result = distributed.run(job, config.world_size, config.run_timeout_s)
            else:
                checkpoints = Checkpoints(self.registry.store, key, fp)
                result = train(
                    self.model_config,
                    data,
                    config,
                    parent,
                    progress,
                    val=val_cache.arrays(),
                    checkpoints=checkpoints,
                )
        metrics = self.evaluate(result.predictor)
        metrics.update(train_loss=result.stats["final_loss"], train_seconds=result.stats["seconds"])
        meta = self.registry.publish(
            result.predictor,
            make_current=False,
            parent_version=parent_version,
            iteration=iteration,
            training_set=manifest,
            training=result.stats,
            metrics=metrics,
            preprocessing=self.pool.intensity.to_json(),
            duration_seconds=round(time.perf_counter() - started, 2),
        )
        current = self.registry.current_version()
        current_metrics = self.registry.metadata(current).metrics if current else None
        promoted, reason = promotion_decision(metrics, current_metrics, self.promotion_tolerance)
        status = self.registry.decide(meta.version, promoted, reason)
        Checkpoints(self.registry.store, key, fp).clear()  # published: a later run of the iteration starts anew
        log.info(
            "%s %s (iteration %d, %d series, test mIoU %.3f): %s",
            status.value,
            meta.version,
            iteration,
            len(manifest),
            metrics["test_miou"],
            reason,
        )
        return RunResult(meta, status, reason)
