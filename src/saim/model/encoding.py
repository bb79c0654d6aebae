"""The predictor's input encoding: image, per-class positive/negative click maps, per-class previous mask.

Channel layout for K foreground classes: [image, pos_1..pos_K, neg_1..neg_K, prev_1..prev_K].
Clicks are rasterised as disks or Gaussians of a configurable radius (pixels at model resolution).
"""

from __future__ import annotations

import torch

from saim.clicks import Click


def _grid(h: int, w: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    yy = torch.arange(h, device=device, dtype=torch.float32).view(h, 1)
    xx = torch.arange(w, device=device, dtype=torch.float32).view(1, w)
    return yy, xx


def paint_clicks(
    maps: torch.Tensor, y: torch.Tensor, x: torch.Tensor, valid: torch.Tensor, radius: float, kind: str
) -> torch.Tensor:
    """Add one click per (b, k) to maps (B, K, H, W) at (y, x) (each (B, K)) where valid; returns the new maps."""
    _, _, h, w = maps.shape
    yy, xx = _grid(h, w, maps.device)
    d2 = (yy - y[..., None, None].float()) ** 2 + (xx - x[..., None, None].float()) ** 2
    if kind == "disk":
        blob = (d2 <= radius**2).float()
    elif kind == "gaussian":
        blob = torch.exp(-d2 / (2 * radius**2))
    else:
        raise ValueError(f"unknown click encoding {kind!r}")
    return torch.maximum(maps, blob * valid[..., None, None].float())


def rasterize_clicks(
    clicks: list[list[Click]], num_classes: int, size: int, radius: float, kind: str, device="cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image click lists -> (pos, neg) maps, each (B, K, H, W). Clicks must be valid (see the predictor)."""
    b = len(clicks)
    pos = torch.zeros(b, num_classes, size, size, device=device)
    neg = torch.zeros(b, num_classes, size, size, device=device)
    for i, image_clicks in enumerate(clicks):
        for c in image_clicks:
            valid = torch.zeros(b, num_classes, dtype=torch.bool, device=device)
            valid[i, c.cls - 1] = True
            y = torch.full((b, num_classes), c.y, device=device)
            x = torch.full((b, num_classes), c.x, device=device)
            if c.positive:
                pos = paint_clicks(pos, y, x, valid, radius, kind)
            else:
                neg = paint_clicks(neg, y, x, valid, radius, kind)
    return pos, neg


def one_hot_foreground(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, H, W) int in 0..K -> (B, K, H, W) float masks of the foreground classes."""
    classes = torch.arange(1, num_classes + 1, device=labels.device).view(1, -1, 1, 1)
    return (labels[:, None] == classes).float()


def encode(images: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    """images (B, 1, H, W), preprocessed by modality (saim.data.intensity); pos/neg/prev (B, K, H, W) -> network
    input (B, 1 + 3K, H, W)."""
    return torch.cat([images, pos, neg, prev], dim=1)
