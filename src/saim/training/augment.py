"""The training recipe's augmentations (paper §4.1): flips, intensity shift, gamma, blur, unsharp masking, and
optionally a random affine; applied to image and label batches on the model's device."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
    preprocessed; labels (B, H, W), or (B, C, H, W): C label maps of each image, transformed alike."""
    b = images.shape[0]
    stacked = labels.ndim == 4
    if not stacked:
        labels = labels[:, None]
    per_label = (b, 1, 1, 1)
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
        labels = F.grid_sample(labels.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False).long()
    if hflip:
        m = coin(0.5)
        images = torch.where(per_image(m), images.flip(-1), images)
        labels = torch.where(m.to(dev).view(per_label), labels.flip(-1), labels)
    m = coin(0.5)
    images = torch.where(per_image(m), images.flip(-2), images)
    labels = torch.where(m.to(dev).view(per_label), labels.flip(-2), labels)
    if not stacked:
        labels = labels[:, 0]
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
