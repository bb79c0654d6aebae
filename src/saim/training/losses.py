"""The training recipe's losses: focal loss with per-class weights recomputed from the current training set, a
batch soft-Dice term, and optional extra weights on the pixels an interactive input gets wrong or clicks on."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from saim.model.encoding import one_hot_foreground


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
