"""Click simulation at training time (iterative interactive training): the clicks a training sample gets and the
interaction memory fed back between rounds, from the ground truth and the network's current answer. The virtual
user's rule (saim.model.clicks.largest_error) places most clicks; random points of the error region the rest."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from saim.model.clicks import Click, error_scribble, largest_error
from saim.model.config import ModelConfig
from saim.model.device import argmax_autocast
from saim.model.encoding import encode, one_hot_foreground, paint_boxes, paint_clicks, rasterize_clicks
from saim.training.config import TrainConfig
from saim.training.device_clicks import largest_error_clicks


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
    labels: torch.Tensor, pred_labels: torch.Tensor, allow: torch.Tensor, batched: bool | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The test-time virtual user's click for every (b, k): distance-transform peak of the largest error region of
    class k+1 (Mahadevan et al. place iterative-training clicks the way the evaluation does).

    `batched` (default: off the CPU) computes them for the whole batch on its device (saim.training.device_clicks);
    otherwise scipy does it per sample and class, which is faster on a CPU (docs/benchmarks.md). Both give the same
    clicks."""
    if batched if batched is not None else labels.device.type != "cpu":
        return largest_error_clicks(labels, pred_labels, allow)
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


def virtual_user_scribbles(
    labels: torch.Tensor, pred_labels: torch.Tensor, allow: torch.Tensor, spacing: float
) -> list[list[Click]]:
    """The virtual user's scribble for every allowed (b, k) with an error: along the largest error region of class
    k+1 (saim.model.clicks.error_scribble), as clicks `spacing` apart; per sample, one list of clicks."""
    b, k = allow.shape
    gt_np, pred_np, allow_np = labels.cpu().numpy(), pred_labels.cpu().numpy(), allow.cpu().numpy()
    return [
        [click for c in range(k) if allow_np[i, c] for click in error_scribble(gt_np[i], pred_np[i], c + 1, spacing)]
        for i in range(b)
    ]


def jittered_boxes(gt: torch.Tensor, gen: torch.Generator, jitter: float = 0.1) -> tuple[torch.Tensor, ...]:
    """The box around each class of each sample (gt (B, K, H, W) bool), each side moved in or out at random by up
    to `jitter` of the box's extent (at least 1 px), kept on the image: y0, x0, y1, x1, present (each (B, K))."""
    b, k, h, w = gt.shape
    rows, cols = gt.any(3), gt.any(2)  # (B, K, H), (B, K, W)
    present = rows.any(2)
    ys, xs = torch.arange(h, device=gt.device), torch.arange(w, device=gt.device)
    y0 = torch.where(rows, ys, h).amin(2)
    y1 = torch.where(rows, ys, -1).amax(2)
    x0 = torch.where(cols, xs, w).amin(2)
    x1 = torch.where(cols, xs, -1).amax(2)
    reach_y = ((y1 - y0 + 1).float() * jitter).clamp_min(1)
    reach_x = ((x1 - x0 + 1).float() * jitter).clamp_min(1)

    def move(v: torch.Tensor, reach: torch.Tensor, top: int) -> torch.Tensor:
        shift = (torch.rand(b, k, generator=gen).to(gt.device) * 2 - 1) * reach
        return (v.float() + shift).round().long().clamp(0, top)

    y0, y1 = move(y0, reach_y, h - 1), move(y1, reach_y, h - 1)
    x0, x1 = move(x0, reach_x, w - 1), move(x1, reach_x, w - 1)
    return torch.minimum(y0, y1), torch.minimum(x0, x1), torch.maximum(y0, y1), torch.maximum(x0, x1), present


@torch.no_grad()
def _forward_labels(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Label map (B, H, W) of the network's current answer, in eval mode (bf16 where the hardware has it: only the
    argmax is used)."""
    was_training = net.training
    net.eval()
    precision, layout = argmax_autocast(x.device)
    with precision:
        pred = net(x.contiguous(memory_format=layout)).argmax(1)
    net.train(was_training)
    return pred


def simulate_interaction(
    net: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    mc: ModelConfig,
    tc: TrainConfig,
    gen: torch.Generator,
    neighbours: torch.Tensor | None = None,
    has_neighbour: torch.Tensor | None = None,
) -> torch.Tensor:
    """Build the network input for a training batch with simulated clicks and interaction memory.

    A share of the samples stays automatic (no clicks, no memory). The others start from an empty mask or from the
    network's automatic answer, then get up to `click_rounds` extra rounds in which the network's answer is fed
    back as the previous mask. Each round adds at most one click per class, either the virtual user's click
    (`p_virtual_user_click`) or a random point of the error region; in a share `p_scribble` of the rounds a scribble
    along each class's largest error region instead (`virtual_user_scribbles`).

    Propagation (with `neighbours`, (B, H, W) labels of a neighbouring slice, where `has_neighbour`): a share
    `p_propagation` of the interactive samples starts instead from the neighbouring slice's ground truth as the
    previous mask, as the annotator's Propagate carries a person's corrected slice to the next; half of those get
    no clicks at all (the propagation's own answer), the others the click rounds that correct it.

    Boxes (a model with box prompts): a share `p_box` of the other interactive samples gets a box around each class
    present (`jittered_boxes`), kept through the rounds; half of those get no clicks (one box's answer), the
    others box and clicks.
    """
    b, k, s = images.shape[0], mc.num_classes, mc.image_size
    dev = images.device
    gt = one_hot_foreground(labels, k) > 0.5
    zeros = torch.zeros(b, k, s, s, device=dev)
    pos, neg, prev = zeros.clone(), zeros.clone(), zeros.clone()
    box = zeros.clone() if mc.box_prompts else None
    interactive = (torch.rand(b, generator=gen) >= tc.p_no_clicks).to(dev)
    if not interactive.any():
        return encode(images, pos, neg, prev, box)
    shown = interactive.nonzero().squeeze(1)  # the automatic samples' answers are never used: not computed

    def answer() -> torch.Tensor:
        out = torch.zeros_like(labels)
        boxes = None if box is None else box[shown]
        out[shown] = _forward_labels(net, encode(images[shown], pos[shown], neg[shown], prev[shown], boxes))
        return out

    pred_labels = torch.zeros_like(labels)
    if torch.rand(1, generator=gen).item() < 0.5:  # start from the automatic prediction, as at annotation time
        pred_labels = answer()
        prev = one_hot_foreground(pred_labels, k)
    silent = torch.zeros(b, dtype=torch.bool, device=dev)  # propagations trained without clicks
    if neighbours is not None and has_neighbour is not None and tc.p_propagation > 0:
        carried = interactive & has_neighbour & (torch.rand(b, generator=gen) < tc.p_propagation).to(dev)
        if carried.any():
            prev = torch.where(carried.view(b, 1, 1, 1), one_hot_foreground(neighbours, k), prev)
            pred_labels = torch.where(carried.view(b, 1, 1), neighbours, pred_labels)
            silent = carried & (torch.rand(b, generator=gen) < 0.5).to(dev)
    if box is not None and tc.p_box > 0:
        boxed = interactive & ~silent & (torch.rand(b, generator=gen) < tc.p_box).to(dev)
        if boxed.any():
            y0, x0, y1, x1, present = jittered_boxes(gt, gen)
            box = paint_boxes(box, y0, x0, y1, x1, present & boxed[:, None])
            silent = silent | (boxed & (torch.rand(b, generator=gen) < 0.5).to(dev))
    extra_rounds = int(torch.randint(0, tc.click_rounds + 1, (1,), generator=gen))
    for r in range(extra_rounds + 1):
        allow = (interactive & ~silent)[:, None] & (torch.rand(b, k, generator=gen) < 0.8).to(dev)
        if tc.p_scribble > 0 and torch.rand(1, generator=gen).item() < tc.p_scribble:
            drawn = virtual_user_scribbles(labels, pred_labels, allow, mc.radius)
            more_pos, more_neg = rasterize_clicks(drawn, k, s, mc.radius, mc.click_encoding, dev)
            pos, neg = torch.maximum(pos, more_pos), torch.maximum(neg, more_neg)
        else:
            if torch.rand(1, generator=gen).item() < tc.p_virtual_user_click:
                y, x, valid, positive = virtual_user_clicks(labels, pred_labels, allow)
            else:
                pred = one_hot_foreground(pred_labels, k) > 0.5
                y, x, valid, positive = sample_error_clicks(gt, pred, allow, gen)
            pos = paint_clicks(pos, y, x, valid & positive, mc.radius, mc.click_encoding)
            neg = paint_clicks(neg, y, x, valid & ~positive, mc.radius, mc.click_encoding)
        if r < extra_rounds:
            pred_labels = answer()
            prev = one_hot_foreground(pred_labels, k)
    keep = interactive.view(b, 1, 1, 1).float()
    return encode(images, pos * keep, neg * keep, prev * keep, None if box is None else box * keep)
