"""The predictor's input encoding: image, per-class positive/negative click maps, per-class previous mask, and
(for models with box prompts) per-class box maps.

Channel layout for K foreground classes: [image, pos_1..pos_K, neg_1..neg_K, prev_1..prev_K(, box_1..box_K)].
Clicks are rasterised as disks or Gaussians of a configurable radius (pixels at model resolution); a box as 1 inside
it, corners included. The box channels come last, so the click and memory channels sit where they always did.
"""

from __future__ import annotations

import numpy as np
import torch

from saim.model.clicks import Box, Click


def _grid(h: int, w: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    yy = torch.arange(h, device=device, dtype=torch.float32).view(h, 1)
    xx = torch.arange(w, device=device, dtype=torch.float32).view(1, w)
    return yy, xx


GAUSSIAN_REACH = 4.0  # a Gaussian click ends at 4 sigma (exp(-8) = 0.03 % of its peak)


def click_reach(radius: float, kind: str) -> float:
    if kind == "disk":
        return radius
    if kind == "gaussian":
        return GAUSSIAN_REACH * radius
    raise ValueError(f"unknown click encoding {kind!r}")


def _blob(d2: torch.Tensor, radius: float, kind: str) -> torch.Tensor:
    inside = (d2 <= click_reach(radius, kind) ** 2).float()
    return inside if kind == "disk" else torch.exp(-d2 / (2 * radius**2)) * inside


def paint_clicks(
    maps: torch.Tensor, y: torch.Tensor, x: torch.Tensor, valid: torch.Tensor, radius: float, kind: str
) -> torch.Tensor:
    """Add one click per (b, k) to maps (B, K, H, W) at (y, x) (each (B, K)) where valid; returns the new maps.
    The batched form, for the clicks simulated at training time."""
    _, _, h, w = maps.shape
    yy, xx = _grid(h, w, maps.device)
    d2 = (yy - y[..., None, None].float()) ** 2 + (xx - x[..., None, None].float()) ** 2
    return torch.maximum(maps, _blob(d2, radius, kind) * valid[..., None, None].float())


def rasterize_clicks(
    clicks: list[list[Click]], num_classes: int, size: int, radius: float, kind: str, device="cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image click lists -> (pos, neg) maps, each (B, K, H, W), the same maps paint_clicks makes. Each click is
    stamped into its own window only: a session's n-th click costs the same as its first (painting every click
    over the whole grid made each click cost more than the one before). Clicks must be valid."""
    reach = int(click_reach(radius, kind))
    offsets = torch.arange(-reach, reach + 1, dtype=torch.float32)
    stamp = _blob(offsets.view(-1, 1) ** 2 + offsets.view(1, -1) ** 2, radius, kind).numpy()
    maps = np.zeros((2, len(clicks), num_classes, size, size), np.float32)  # [pos, neg]
    for i, image_clicks in enumerate(clicks):
        for c in image_clicks:
            y0, y1 = max(c.y - reach, 0), min(c.y + reach + 1, size)
            x0, x1 = max(c.x - reach, 0), min(c.x + reach + 1, size)
            window = maps[0 if c.positive else 1, i, c.cls - 1, y0:y1, x0:x1]
            part = stamp[y0 - c.y + reach : y1 - c.y + reach, x0 - c.x + reach : x1 - c.x + reach]
            np.maximum(window, part, out=window)
    out = torch.from_numpy(maps).to(device)
    return out[0], out[1]


def rasterize_boxes(boxes: list[list[Box]], num_classes: int, size: int, device="cpu") -> torch.Tensor:
    """Per-image box lists -> box maps (B, K, H, W): 1 inside each box of its class."""
    maps = torch.zeros(len(boxes), num_classes, size, size)
    for i, image_boxes in enumerate(boxes):
        for b in image_boxes:
            maps[i, b.cls - 1, b.y0 : b.y1 + 1, b.x0 : b.x1 + 1] = 1.0
    return maps.to(device)


def paint_boxes(
    maps: torch.Tensor, y0: torch.Tensor, x0: torch.Tensor, y1: torch.Tensor, x1: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """One box per (b, k) into maps (B, K, H, W) where valid (corners (B, K), inclusive): the batched form, for the
    boxes simulated at training time."""
    _, _, h, w = maps.shape
    yy = torch.arange(h, device=maps.device).view(1, 1, h, 1)
    xx = torch.arange(w, device=maps.device).view(1, 1, 1, w)
    inside = (yy >= y0[..., None, None]) & (yy <= y1[..., None, None]) & (xx >= x0[..., None, None])
    inside &= (xx <= x1[..., None, None]) & valid[..., None, None]
    return torch.maximum(maps, inside.float())


def one_hot_foreground(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, H, W) int in 0..K -> (B, K, H, W) float masks of the foreground classes."""
    classes = torch.arange(1, num_classes + 1, device=labels.device).view(1, -1, 1, 1)
    return (labels[:, None] == classes).float()


def encode(
    images: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    prev: torch.Tensor,
    boxes: torch.Tensor | None = None,
) -> torch.Tensor:
    """images (B, 1, H, W), preprocessed by modality (saim.data.intensity); pos/neg/prev (and boxes, for a model
    with box prompts) (B, K, H, W) -> network input (B, 1 + 3K (+ K), H, W)."""
    return torch.cat([images, pos, neg, prev] + ([] if boxes is None else [boxes]), dim=1)
