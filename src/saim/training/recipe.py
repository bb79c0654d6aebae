"""Training the interactive predictor (paper §3.4, §4.1).

Focal loss with per-class weights recomputed from the current training set before every (re)training, plus a batch
soft-Dice term (full median-frequency weights alone over-segment the small organs); the paper's augmentations plus
a random affine; clicks simulated on the fly from ground truth in error regions, with iterative rounds that feed the
previous prediction back (iterative interactive training). Full retraining from scratch (paper) or warm-start
fine-tuning from a parent model."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch.utils.data import DataLoader

from saim.errors import InvalidInput
from saim.model.config import ModelConfig
from saim.model.device import autocast, is_cuda, memory_format, precision
from saim.model.predictor import InteractivePredictor, build_network
from saim.training.augment import augment, has_lateral_classes
from saim.training.checkpoint import Checkpoints
from saim.training.config import TrainConfig
from saim.training.data import ArraySlices, EpochSampler, SliceDataset, steps_per_epoch
from saim.training.losses import click_weights, correction_weights, dice_loss, focal_loss, weights_from_counts
from saim.training.metrics import mean_iou
from saim.training.simulation import simulate_interaction

log = logging.getLogger(__name__)


def optimizer(params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW as one fused kernel per step (CPU and CUDA; 16 against 59 ms for the ResNet34-Unet's parameters on
    this machine's CPU with the default multi-tensor loop)."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)


def train_step(
    net: torch.nn.Module,
    opt: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor,
    mc: ModelConfig,
    tc: TrainConfig,
    gen: torch.Generator,
    hflip: bool,
    inner: torch.nn.Module | None = None,
    neighbours: torch.Tensor | None = None,
) -> torch.Tensor:
    """One optimisation step of saim's recipe on a batch (images (B, 1, H, W), labels (B, H, W), on the network's
    device): augmentation, simulated click rounds, focal + Dice loss (bf16 forward on CUDA, losses in fp32).
    Returns the loss. `train` runs it, and the benchmarks time it. `inner`: the network itself when `net` is its
    DistributedDataParallel wrapper (the click simulation's no-grad forwards bypass the gradient hooks).
    `neighbours` (B, H, W): a neighbouring slice's label per sample (NO_NEIGHBOUR where none), for the samples the
    simulation trains as propagations; it is augmented with its slice."""
    dev = images.device
    has_neighbour = None
    if neighbours is not None:
        has_neighbour = (neighbours >= 0).flatten(1).all(1)
        labels = torch.stack([labels, neighbours.clamp_min(0)], 1)  # one spatial augmentation for both
    if tc.augment:
        images, labels = augment(images, labels, gen, hflip, tc.spatial_augment)
    if neighbours is not None:
        labels, neighbours = labels[:, 0], labels[:, 1]
    x = simulate_interaction(
        inner if inner is not None else net, images, labels, mc, tc, gen, neighbours, has_neighbour
    )
    pixel_w = correction_weights(x, labels, mc.num_classes, tc.correction_weight) if tc.correction_weight > 0 else None
    if tc.click_weight > 0:
        near = click_weights(x, mc.num_classes, tc.click_weight)
        pixel_w = near if pixel_w is None else pixel_w * near
    with autocast(dev):
        logits = net(x.contiguous(memory_format=memory_format(dev))).float()
    loss = focal_loss(logits, labels, weights, tc.focal_gamma, pixel_w)
    if tc.dice_weight > 0:
        loss = loss + tc.dice_weight * dice_loss(logits, labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


@dataclass
class TrainResult:
    predictor: InteractivePredictor
    stats: dict


def train_predictor(
    model_config: ModelConfig,
    images: np.ndarray,
    labels: np.ndarray,
    config: TrainConfig,
    parent: InteractivePredictor | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    series_counts: list[int] | None = None,
    **kwargs,
) -> TrainResult:
    """`train` on preprocessed slices in memory: images (N, H, W) with label maps (N, H, W) in 0..K; `series_counts`
    (slices per series, in order) tells neighbouring slices apart for the propagation samples."""
    if len(images) < 2 or labels.shape != images.shape:
        raise InvalidInput(f"need at least 2 labelled slices with matching shapes, got {images.shape} / {labels.shape}")
    in_process = replace(config, loader_workers=0)  # in memory already: worker processes would only copy it
    data = ArraySlices(images, labels, series_counts)
    return train(model_config, data, in_process, parent, progress, **kwargs)


def _val_miou(net: torch.nn.Module, mc: ModelConfig, device: torch.device, val: tuple[np.ndarray, np.ndarray]) -> float:
    """Automatic-mode mIoU of the network on the validation slices (early stopping)."""
    was_training = net.training
    predictor = InteractivePredictor(mc, device=str(device), network=net)
    score = mean_iou(val[1], predictor.predict(val[0]), mc.num_classes)
    net.train(was_training)
    return float(score)


def train(
    model_config: ModelConfig,
    data: SliceDataset,
    config: TrainConfig,
    parent: InteractivePredictor | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    checkpoints: Checkpoints | None = None,
    rank: int = 0,
    world: int = 1,
) -> TrainResult:
    """Train the interactive predictor on a slice dataset through a DataLoader (`config.loader_workers` processes).

    An epoch is at least one pass over the data and at least `steps_per_epoch` steps. With `val` (images, labels),
    the validation mIoU after each epoch keeps the best weights, and `config.patience` epochs without improvement
    stop the run. With `checkpoints`, every epoch's state is saved (by rank 0) and a run of the same fingerprint
    resumes after its last saved epoch. With `world` > 1 the process is rank `rank` of a torch.distributed group
    (saim.training.distributed): the network is wrapped in DistributedDataParallel and each rank samples its share.
    """
    n = len(data)
    if n < 2:
        raise InvalidInput(f"need at least 2 labelled slices, got {n}")
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed + 7919 * rank)  # augmentation and clicks differ per rank
    dev = torch.device(config.device)
    net = build_network(model_config).to(dev, memory_format=memory_format(dev))  # type: ignore[call-overload]
    finetune = config.mode == "finetune" and parent is not None
    if finetune and parent is not None:
        net.load_state_dict(parent.network.state_dict())
    epochs = (config.finetune_epochs or max(1, config.epochs // 2)) if finetune else config.epochs
    weights_np = weights_from_counts(data.label_counts(model_config.num_classes + 1), config.class_weight_power)
    weights = torch.tensor(weights_np, dtype=torch.float32, device=dev)
    hflip = not has_lateral_classes(model_config.classes)
    bs = min(config.batch_size, n)
    steps = steps_per_epoch(n, bs, world, config.steps_per_epoch)
    sampler = EpochSampler(n, steps * bs, config.seed, rank, world)
    loader = _loader(data, sampler, bs, config.loader_workers, dev)
    lr = config.lr * (config.finetune_lr_scale if finetune else 1.0)
    opt = optimizer(net.parameters(), lr, config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps, pct_start=0.15)
    model = _data_parallel(net, dev, world)
    run = _Progress.start(checkpoints, net, opt, sched, gen, rank, epochs)
    net.train()
    step, last_saved = run.start_epoch * steps, time.monotonic()
    for epoch in range(run.start_epoch, epochs):
        sampler.set_epoch(epoch)
        epoch_loss = 0.0
        for img, lab, near in loader:
            img, lab, near = (t.to(dev, non_blocking=True) for t in (img, lab, near))
            loss = train_step(model, opt, img, lab, weights, model_config, config, gen, hflip, net, near)
            sched.step()
            step += 1
            epoch_loss += loss.item()
            if progress:
                progress(step, epochs * steps, loss.item())
        run.end_epoch(epoch, epoch_loss / steps, net, None if val is None else _val_miou(net, model_config, dev, val))
        last_epoch = epoch == epochs - 1
        due = _agree(checkpoints is not None and time.monotonic() - last_saved >= config.checkpoint_every_s, world)
        if due and not last_epoch and rank == 0 and checkpoints is not None:  # the last epoch's state is the result
            last_saved = time.monotonic()
            checkpoints.save(run.checkpoint(epoch, net, opt, sched, _gather_generator_states(gen, world)))
        elif due and not last_epoch and world > 1:
            _gather_generator_states(gen, world)  # every rank takes part in the collective
        stale = val is not None and config.patience > 0 and epoch - run.best_epoch >= config.patience
        if _agree(stale and not last_epoch, world):  # rank 0's decision: ranks that stopped apart would hang
            run.stopped_early = True
            log.info("early stop after epoch %d: no validation gain for %d epochs", epoch, config.patience)
            break
    if run.best_state is not None:
        net.load_state_dict(run.best_state)
    net.eval()
    stats = {
        "mode": "finetune" if finetune else "retrain",
        "epochs": epochs,
        **run.stats(val is not None),
        "steps_per_epoch": steps,
        "steps": step,
        "lr": lr,
        "slices": n,
        "batch_size": bs,
        "world_size": world,
        "loader_workers": config.loader_workers,
        "class_weights": [round(float(w), 4) for w in weights_np],
        "hflip": hflip,
        "device": str(dev),
        "precision": precision(dev),
        "seconds": round(time.perf_counter() - started, 2),
    }
    return TrainResult(InteractivePredictor(model_config, device=config.device, network=net), stats)


def _loader(data: SliceDataset, sampler: EpochSampler, batch_size: int, workers: int, dev: torch.device) -> DataLoader:
    return DataLoader(
        data,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=is_cuda(dev),  # page-locked batches: the copy to the GPU overlaps the step (non_blocking)
        prefetch_factor=4 if workers > 0 else None,  # batches each worker keeps ready
        persistent_workers=workers > 0,
        multiprocessing_context="spawn" if workers > 0 else None,  # never fork a gRPC/Kafka process
        drop_last=True,
    )


def _data_parallel(net: torch.nn.Module, dev: torch.device, world: int) -> torch.nn.Module:
    if world == 1:
        return net
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(net, device_ids=[dev.index] if is_cuda(dev) else None)


@dataclass
class _Progress:
    """A run's history, its best epoch, and where it starts: at epoch 0, or after a checkpoint's epoch."""

    history: list[float] = field(default_factory=list)
    val_history: list[float] = field(default_factory=list)
    best: float = -1.0
    best_epoch: int = -1
    best_state: dict | None = None
    start_epoch: int = 0
    resumed_from: int | None = None
    stopped_early: bool = False

    @classmethod
    def start(
        cls,
        checkpoints: Checkpoints | None,
        net: torch.nn.Module,
        opt: torch.optim.Optimizer,
        sched: torch.optim.lr_scheduler.LRScheduler,
        gen: torch.Generator,
        rank: int,
        epochs: int,
    ) -> _Progress:
        state = checkpoints.load() if checkpoints is not None else None
        if checkpoints is None or state is None:
            return cls()
        net.load_state_dict(state["network"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["schedule"])
        gen.set_state(state["generators"][rank] if rank < len(state["generators"]) else state["generators"][0])
        log.info("resuming training after epoch %d of %d (checkpoint %s)", state["epoch"], epochs, checkpoints.key)
        return cls(
            history=list(state["history"]),
            val_history=list(state["val_history"]),
            best=state["best"],
            best_epoch=state["best_epoch"],
            best_state=state.get("best_network"),
            start_epoch=state["epoch"] + 1,
            resumed_from=state["epoch"] + 1,
        )

    def end_epoch(self, epoch: int, loss: float, net: torch.nn.Module, val_miou: float | None) -> None:
        """Record an epoch's mean loss (a diverged run stops here) and validation mIoU, keeping the best weights."""
        self.history.append(loss)
        if not math.isfinite(loss):
            raise FloatingPointError(f"training diverged at epoch {epoch} (loss {loss})")
        if val_miou is None:
            return
        self.val_history.append(val_miou)
        if val_miou > self.best:
            self.best, self.best_epoch = val_miou, epoch
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}

    def checkpoint(
        self,
        epoch: int,
        net: torch.nn.Module,
        opt: torch.optim.Optimizer,
        sched: torch.optim.lr_scheduler.LRScheduler,
        generators: list[torch.Tensor],
    ) -> dict:
        return {
            "epoch": epoch,
            "network": net.state_dict(),
            "optimizer": opt.state_dict(),
            "schedule": sched.state_dict(),
            "generators": generators,
            "history": self.history,
            "val_history": self.val_history,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "best_network": self.best_state,
        }

    def stats(self, validated: bool) -> dict:
        return {
            "epochs_run": len(self.history),
            "final_loss": self.history[-1] if self.history else float("nan"),
            "loss_history": [round(v, 5) for v in self.history],
            "val_miou_history": [round(v, 4) for v in self.val_history],
            "best_epoch": self.best_epoch if validated else None,
            "stopped_early": self.stopped_early,
            "resumed_after_epoch": None if self.resumed_from is None else self.resumed_from - 1,
        }


def _agree(flag: bool, world: int) -> bool:
    """Rank 0's decision, for every rank (each has its own clock; a collective needs all of them)."""
    if world == 1:
        return flag
    import torch.distributed as dist

    box = [flag]
    dist.broadcast_object_list(box, src=0)
    return bool(box[0])


def _gather_generator_states(gen: torch.Generator, world: int) -> list[torch.Tensor]:
    """Every rank's augmentation generator state (a resumed run continues each rank's random stream)."""
    state = gen.get_state()
    if world == 1:
        return [state]
    import torch.distributed as dist

    states: list = [None] * world
    dist.all_gather_object(states, state)
    return states
