"""Training the interactive predictor (paper §3.4, §4.1).

Focal loss with per-class weights recomputed from the current training set before every (re)training, plus a batch
soft-Dice term (full median-frequency weights alone over-segment the small organs); the paper's augmentations plus
a random affine; clicks simulated on the fly from ground truth in error regions, with iterative rounds that feed the
previous prediction back (iterative interactive training). Full retraining from scratch (paper) or warm-start
fine-tuning from a parent model.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from saim.clicks import largest_error
from saim.config import ModelConfig, TrainConfig
from saim.device import autocast, is_cuda, memory_format, precision
from saim.errors import InvalidInput
from saim.metrics import mean_iou
from saim.model.checkpoint import Checkpoints
from saim.model.data import ArraySlices, EpochSampler, SliceDataset, steps_per_epoch
from saim.model.encoding import encode, one_hot_foreground, paint_clicks
from saim.model.predictor import InteractivePredictor, build_network

log = logging.getLogger(__name__)


def class_weights(
    labels: np.ndarray, num_outputs: int, power: float = 1.0, clip: tuple[float, float] = (0.05, 20.0)
) -> np.ndarray:
    """Median-frequency balancing over background + K classes, (median/freq)**power, normalised to mean 1 over
    present classes. power 1 is full balancing; 0.5 damps it.

    Classes absent from the training set get weight 0 (no pixel would use it anyway).
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64).ravel(), minlength=num_outputs)[:num_outputs]
    return weights_from_counts(counts, power, clip)


def weights_from_counts(counts: np.ndarray, power: float = 1.0, clip: tuple[float, float] = (0.05, 20.0)) -> np.ndarray:
    """class_weights from a label histogram (background + K classes)."""
    counts = np.asarray(counts, float)
    num_outputs = len(counts)
    present = counts > 0
    weights = np.zeros(num_outputs)
    freq = counts[present] / counts.sum()
    weights[present] = np.clip((np.median(freq) / freq) ** power, *clip)
    weights[present] /= weights[present].mean()
    return weights


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor,
    gamma: float,
    pixel_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Multi-class focal loss (Lin et al.) with per-class weights and optional per-pixel weights; mean over pixels."""
    logp = F.log_softmax(logits, dim=1)
    logp_t = logp.gather(1, target[:, None]).squeeze(1)
    p_t = logp_t.exp()
    w = weights[target]
    if pixel_weights is not None:
        w = w * pixel_weights
    return (-w * (1 - p_t) ** gamma * logp_t).mean()


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft Dice over the foreground classes, with sums over the whole batch (nnU-Net's batch Dice)."""
    probs = torch.softmax(logits, dim=1)[:, 1:]
    k = probs.shape[1]
    onehot = one_hot_foreground(target, k)
    inter = (probs * onehot).sum(dim=(0, 2, 3))
    denom = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    return 1 - ((2 * inter + smooth) / (denom + smooth)).mean()


def correction_weights(x: torch.Tensor, labels: torch.Tensor, num_classes: int, weight: float) -> torch.Tensor:
    """Per-pixel loss weights 1 + weight on the pixels an interactive input still gets wrong.

    For samples with clicks, the pixels where the previous mask disagrees with the ground truth are exactly what
    the clicks ask the network to correct; without extra weight there the network learns the shortcut of copying
    the previous mask, and a click barely changes its answer.
    """
    k = num_classes
    clicks = x[:, 1 : 1 + 2 * k]
    prev = x[:, 1 + 2 * k : 1 + 3 * k]
    prev_labels = torch.where(prev.sum(1) > 0.5, prev.argmax(1) + 1, torch.zeros_like(labels))
    interactive = clicks.flatten(1).amax(1) > 0
    wrong = (prev_labels != labels) & interactive[:, None, None]
    return 1.0 + weight * wrong.float()


def click_weights(x: torch.Tensor, num_classes: int, weight: float) -> torch.Tensor:
    """Per-pixel loss weights 1 + weight within the clicks of the input (any class, positive or negative): what a
    click says about its own disk is what a person checks first, so errors there cost more."""
    near = x[:, 1 : 1 + 2 * num_classes].amax(1) > 0
    return 1.0 + weight * near.float()


def _gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image (B, 1, H, W) with its own sigma (B,)."""
    radius = 3
    offs = torch.arange(-radius, radius + 1, dtype=torch.float32, device=images.device)
    k = torch.exp(-(offs[None] ** 2) / (2 * sigma[:, None] ** 2))
    k = k / k.sum(dim=1, keepdim=True)  # (B, 2r+1)
    b = images.shape[0]
    x = images.transpose(0, 1)  # (1, B, H, W): one group per image
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), k.view(b, 1, 1, -1), groups=b)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), k.view(b, 1, -1, 1), groups=b)
    return x.transpose(0, 1)


def has_lateral_classes(classes: tuple[str, ...]) -> bool:
    names = [c.lower() for c in classes]
    return any("left" in n for n in names) and any("right" in n for n in names)


def augment(
    images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator, hflip: bool, spatial: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paper §4.1: flips, intensity shift, gamma, blur, unsharp masking; with `spatial`, also a random affine
    (rotation up to 15 degrees, scale 0.85-1.15, shift up to 5 %) on half of the images. images (B, 1, H, W),
    preprocessed."""
    b = images.shape[0]
    dev = images.device

    def coin(p: float) -> torch.Tensor:
        return torch.rand(b, generator=gen) < p

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=gen)

    def per_image(mask: torch.Tensor) -> torch.Tensor:
        return mask.to(dev).view(b, 1, 1, 1)

    if spatial:
        m = coin(0.5).float()
        angle = uniform(-0.26, 0.26) * m  # +-15 degrees
        scale = 1 + uniform(-0.15, 0.15) * m
        shift = (torch.rand(b, 2, generator=gen) * 0.1 - 0.05) * m[:, None]
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        grid = F.affine_grid(theta.to(dev), list(images.shape), align_corners=False)
        images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        labels = (
            F.grid_sample(labels[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
            .squeeze(1)
            .long()
        )
    if hflip:
        m = coin(0.5)
        images = torch.where(per_image(m), images.flip(-1), images)
        labels = torch.where(m.to(dev).view(b, 1, 1), labels.flip(-1), labels)
    m = coin(0.5)
    images = torch.where(per_image(m), images.flip(-2), images)
    labels = torch.where(m.to(dev).view(b, 1, 1), labels.flip(-2), labels)
    # Intensity shift and gamma act on each image rescaled to [0, 1] (as nnU-Net's gamma), then go back to the
    # preprocessed (z-scored) range, so the augmentation does not depend on the modality's scheme.
    lo = images.amin(dim=(1, 2, 3), keepdim=True)
    span = (images.amax(dim=(1, 2, 3), keepdim=True) - lo).clamp_min(1e-6)
    unit = (images - lo) / span
    unit = (unit + (uniform(-0.1, 0.1) * coin(0.5)).to(dev).view(b, 1, 1, 1)).clamp(0, 1)  # intensity shift
    gamma = torch.where(coin(0.5), uniform(0.7, 1.5), torch.ones(b)).to(dev).view(b, 1, 1, 1)
    images = lo + span * unit.clamp_min(1e-6) ** gamma  # gamma correction
    blur_m, sharp_m = coin(0.2), coin(0.2)
    if blur_m.any():
        images = torch.where(per_image(blur_m), _gaussian_blur(images, uniform(0.5, 1.2).to(dev)), images)
    if sharp_m.any():
        smooth = _gaussian_blur(images, uniform(0.7, 1.5).to(dev))
        sharpened = images + uniform(0.3, 1.0).to(dev).view(b, 1, 1, 1) * (images - smooth)
        images = torch.where(per_image(sharp_m), sharpened, images)
    return torch.minimum(torch.maximum(images, lo), lo + span), labels


def _erode(mask: torch.Tensor, r: int) -> torch.Tensor:
    return -F.max_pool2d(-mask.float(), 2 * r + 1, stride=1, padding=r) > 0.5


def sample_error_clicks(
    gt: torch.Tensor, pred: torch.Tensor, allow: torch.Tensor, gen: torch.Generator, interior_p: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One random click per (b, k) inside the error region of class k (missed -> positive, false -> negative).

    gt, pred: (B, K, H, W) bool. Half of the clicks are drawn from the eroded error region, nearer to the
    virtual user's test-time behaviour (clicks away from region borders). Returns y, x, valid, positive (B, K).
    """
    b, k, h, w = gt.shape
    fn, fp = gt & ~pred, pred & ~gt
    err = fn | fp
    inner = _erode(err, 2)
    use_inner = (torch.rand(b, k, generator=gen).to(gt.device) < interior_p) & inner.flatten(2).any(-1)
    region = torch.where(use_inner[..., None, None], inner, err)
    score = torch.rand(b, k, h, w, generator=gen).to(gt.device) * region
    idx = score.flatten(2).argmax(-1)
    valid = region.flatten(2).any(-1) & allow
    positive = fn.flatten(2).gather(2, idx[..., None]).squeeze(-1)
    return idx // w, idx % w, valid, positive


def virtual_user_clicks(
    labels: torch.Tensor, pred_labels: torch.Tensor, allow: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The test-time virtual user's click for every (b, k): distance-transform peak of the largest error region of
    class k+1 (Mahadevan et al. place iterative-training clicks the way the evaluation does)."""
    b, k = allow.shape
    y = torch.zeros(b, k, dtype=torch.long)
    x = torch.zeros(b, k, dtype=torch.long)
    valid = torch.zeros(b, k, dtype=torch.bool)
    positive = torch.zeros(b, k, dtype=torch.bool)
    gt_np, pred_np, allow_np = labels.cpu().numpy(), pred_labels.cpu().numpy(), allow.cpu().numpy()
    for i in range(b):
        for c in range(k):
            if allow_np[i, c] and (region := largest_error(gt_np[i], pred_np[i], c + 1)) is not None:
                y[i, c], x[i, c] = region.click.y, region.click.x
                valid[i, c], positive[i, c] = True, region.click.positive
    dev = labels.device
    return y.to(dev), x.to(dev), valid.to(dev), positive.to(dev)


@torch.no_grad()
def _forward_labels(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Label map (B, H, W) of the network's current answer, in eval mode."""
    was_training = net.training
    net.eval()
    with autocast(x.device):
        pred = net(x.contiguous(memory_format=memory_format(x.device))).argmax(1)
    net.train(was_training)
    return pred


def simulate_interaction(
    net: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    mc: ModelConfig,
    tc: TrainConfig,
    gen: torch.Generator,
) -> torch.Tensor:
    """Build the network input for a training batch with simulated clicks and interaction memory.

    A share of the samples stays automatic (no clicks, no memory). The others start from an empty mask or from the
    network's automatic answer, then get up to `click_rounds` extra rounds in which the network's answer is fed
    back as the previous mask. Each round adds at most one click per class, either the virtual user's click
    (`p_virtual_user_click`) or a random point of the error region.
    """
    b, k, s = images.shape[0], mc.num_classes, mc.image_size
    dev = images.device
    gt = one_hot_foreground(labels, k) > 0.5
    zeros = torch.zeros(b, k, s, s, device=dev)
    pos, neg, prev = zeros.clone(), zeros.clone(), zeros.clone()
    interactive = (torch.rand(b, generator=gen) >= tc.p_no_clicks).to(dev)
    if not interactive.any():
        return encode(images, pos, neg, prev)
    pred_labels = torch.zeros_like(labels)
    if torch.rand(1, generator=gen).item() < 0.5:  # start from the automatic prediction, as at annotation time
        pred_labels = _forward_labels(net, encode(images, pos, neg, prev))
        prev = one_hot_foreground(pred_labels, k)
    extra_rounds = int(torch.randint(0, tc.click_rounds + 1, (1,), generator=gen))
    for r in range(extra_rounds + 1):
        allow = interactive[:, None] & (torch.rand(b, k, generator=gen) < 0.8).to(dev)
        if torch.rand(1, generator=gen).item() < tc.p_virtual_user_click:
            y, x, valid, positive = virtual_user_clicks(labels, pred_labels, allow)
        else:
            pred = one_hot_foreground(pred_labels, k) > 0.5
            y, x, valid, positive = sample_error_clicks(gt, pred, allow, gen)
        pos = paint_clicks(pos, y, x, valid & positive, mc.radius, mc.click_encoding)
        neg = paint_clicks(neg, y, x, valid & ~positive, mc.radius, mc.click_encoding)
        if r < extra_rounds:
            pred_labels = _forward_labels(net, encode(images, pos, neg, prev))
            prev = one_hot_foreground(pred_labels, k)
    keep = interactive.view(b, 1, 1, 1).float()
    return encode(images, pos * keep, neg * keep, prev * keep)


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
) -> torch.Tensor:
    """One optimisation step of saim's recipe on a batch (images (B, 1, H, W), labels (B, H, W), on the network's
    device): augmentation, simulated click rounds, focal + Dice loss (bf16 forward on CUDA, losses in fp32).
    Returns the loss. `train` runs it, and the benchmarks time it. `inner`: the network itself when `net` is its
    DistributedDataParallel wrapper (the click simulation's no-grad forwards bypass the gradient hooks)."""
    dev = images.device
    if tc.augment:
        images, labels = augment(images, labels, gen, hflip, tc.spatial_augment)
    x = simulate_interaction(inner if inner is not None else net, images, labels, mc, tc, gen)
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
    **kwargs,
) -> TrainResult:
    """`train` on preprocessed slices in memory: images (N, H, W) with label maps (N, H, W) in 0..K."""
    if len(images) < 2 or labels.shape != images.shape:
        raise InvalidInput(f"need at least 2 labelled slices with matching shapes, got {images.shape} / {labels.shape}")
    in_process = replace(config, loader_workers=0)  # in memory already: worker processes would only copy it
    return train(model_config, ArraySlices(images, labels), in_process, parent, progress, **kwargs)


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
    (saim.model.distributed): the network is wrapped in DistributedDataParallel and each rank samples its share.
    """
    n = len(data)
    if n < 2:
        raise InvalidInput(f"need at least 2 labelled slices, got {n}")
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed + 7919 * rank)  # augmentation and clicks differ per rank
    dev = torch.device(config.device)
    net = build_network(model_config).to(dev, memory_format=memory_format(dev))
    finetune = config.mode == "finetune" and parent is not None
    if finetune:
        net.load_state_dict(parent.network.state_dict())
    epochs = (config.finetune_epochs or max(1, config.epochs // 2)) if finetune else config.epochs
    weights_np = weights_from_counts(data.label_counts(model_config.num_classes + 1), config.class_weight_power)
    weights = torch.tensor(weights_np, dtype=torch.float32, device=dev)
    hflip = not has_lateral_classes(model_config.classes)
    bs = min(config.batch_size, n)
    steps = steps_per_epoch(n, bs, world, config.steps_per_epoch)
    total = epochs * steps
    sampler = EpochSampler(n, steps * bs, config.seed, rank, world)
    loader = DataLoader(
        data,
        batch_size=bs,
        sampler=sampler,
        num_workers=config.loader_workers,
        pin_memory=is_cuda(dev),
        persistent_workers=config.loader_workers > 0,
        multiprocessing_context="spawn" if config.loader_workers > 0 else None,  # never fork a gRPC/Kafka process
        drop_last=True,
    )
    lr = config.lr * (config.finetune_lr_scale if finetune else 1.0)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.15)
    model = net
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(net, device_ids=[dev.index] if is_cuda(dev) else None)
    history: list[float] = []
    val_history: list[float] = []
    best, best_state, best_epoch, start_epoch, resumed_from = -1.0, None, -1, 0, None
    state = checkpoints.load() if checkpoints is not None else None
    if state is not None:
        net.load_state_dict(state["network"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["schedule"])
        gen.set_state(state["generators"][rank] if rank < len(state["generators"]) else state["generators"][0])
        history, val_history = list(state["history"]), list(state["val_history"])
        best, best_epoch, best_state = state["best"], state["best_epoch"], state.get("best_network")
        start_epoch = resumed_from = state["epoch"] + 1
        log.info("resuming training after epoch %d of %d (checkpoint %s)", state["epoch"], epochs, checkpoints.key)
    net.train()
    step, stopped_early, last_saved = start_epoch * steps, False, time.monotonic()
    for epoch in range(start_epoch, epochs):
        sampler.set_epoch(epoch)
        epoch_loss = 0.0
        for img, lab in loader:
            img, lab = img.to(dev, non_blocking=True), lab.to(dev, non_blocking=True)
            loss = train_step(model, opt, img, lab, weights, model_config, config, gen, hflip, inner=net)
            sched.step()
            step += 1
            epoch_loss += loss.item()
            if progress:
                progress(step, total, loss.item())
        history.append(epoch_loss / steps)
        if not math.isfinite(history[-1]):
            raise FloatingPointError(f"training diverged at epoch {epoch} (loss {history[-1]})")
        if val is not None:
            val_history.append(_val_miou(net, model_config, dev, val))
            if val_history[-1] > best:
                best, best_epoch = val_history[-1], epoch
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}
        due = _agree(checkpoints is not None and time.monotonic() - last_saved >= config.checkpoint_every_s, world)
        if due and epoch < epochs - 1 and rank == 0:  # the last epoch's state is the result itself
            last_saved = time.monotonic()
            checkpoints.save(
                {
                    "epoch": epoch,
                    "network": net.state_dict(),
                    "optimizer": opt.state_dict(),
                    "schedule": sched.state_dict(),
                    "generators": _gather_generator_states(gen, world),
                    "history": history,
                    "val_history": val_history,
                    "best": best,
                    "best_epoch": best_epoch,
                    "best_network": best_state,
                }
            )
        elif due and epoch < epochs - 1 and world > 1:
            _gather_generator_states(gen, world)  # every rank takes part in the collective
        if val is not None and config.patience and epoch - best_epoch >= config.patience and epoch < epochs - 1:
            stopped_early = True
            log.info("early stop after epoch %d: no validation gain for %d epochs", epoch, config.patience)
            break
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    predictor = InteractivePredictor(model_config, device=config.device, network=net)
    stats = {
        "mode": "finetune" if finetune else "retrain",
        "epochs": epochs,
        "epochs_run": len(history),
        "steps_per_epoch": steps,
        "steps": step,
        "lr": lr,
        "slices": n,
        "batch_size": bs,
        "world_size": world,
        "loader_workers": config.loader_workers,
        "final_loss": history[-1] if history else float("nan"),
        "loss_history": [round(v, 5) for v in history],
        "val_miou_history": [round(v, 4) for v in val_history],
        "best_epoch": best_epoch if val is not None else None,
        "stopped_early": stopped_early,
        "resumed_after_epoch": None if resumed_from is None else resumed_from - 1,
        "class_weights": [round(float(w), 4) for w in weights_np],
        "hflip": hflip,
        "device": str(dev),
        "precision": precision(dev),
        "seconds": round(time.perf_counter() - started, 2),
    }
    return TrainResult(predictor, stats)


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
