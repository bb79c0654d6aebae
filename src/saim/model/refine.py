"""Test-time refinement of an answer that ignores a click (f-BRS, Sofiiuk et al., CVPR 2020).

When the network's own answer disagrees with a click at the clicked pixel, per-image, per-channel scale and bias on
the encoder's stride-4 features are optimised (Adam, a few steps; the encoder runs once, only the decoder and head
are repeated) until the answer gives every click's pixel the click's meaning, with a loss on the pixels within
`radius` of each click that still disagree (0: the clicked pixel itself, f-BRS's loss on click positions). The
decoder then propagates the change as it learnt to. Only the changes the clicks ask for are kept: pixels that take a
positively clicked class, or leave a negatively clicked one, and (with `reach`) only within that distance of one of
the image's clicks; everything else keeps the unrefined answer. An image whose clicks are all followed is not
touched. Without a reach the changes in the clicks' direction are kept anywhere in the slice, so refinement can only
raise a click's fidelity while it breaks pixels far away (saim.model.clicks.click_overshoot counts those).

The loss's footprint and the number of steps are serving settings (ModelConfig.refine_radius, refine_steps); what
each costs and gains is measured in docs/results.md. A click the network ignores costs up to `steps` decoder passes
with their backward; a click it follows costs nothing more.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from saim.model.clicks import Click
from saim.model.device import autocast
from saim.model.encoding import rasterize_clicks

FEATURE_LEVEL = 2  # the encoder's stride-4 features. In the first try on the seed-1 model above (20 steps, every
# image refined): 3-click mIoU 0.36 at stride 4, 0.30 at stride 8, none at 16 and 32 (they barely reach a click's
# pixel), 0.22 at stride 2 and on the decoder's output (they change the whole slice)
LR = 0.1
REGULARISATION = 0.01  # on (scale - 1)^2 + bias^2, per image


def _click_index(clicks: list[list[Click]], device: torch.device) -> tuple[torch.Tensor, ...]:
    """The clicks as tensors (image, class, y, x, positive), for checking them all in one gather."""
    flat = [(i, c.cls, c.y, c.x, c.positive) for i, image_clicks in enumerate(clicks) for c in image_clicks]
    if not flat:
        return tuple(torch.zeros(0, dtype=torch.long, device=device) for _ in range(5))
    return tuple(torch.tensor(column, device=device) for column in zip(*flat, strict=True))


def near_clicks(clicks: list[list[Click]], shape: torch.Size, reach: float, device: torch.device) -> torch.Tensor:
    """(B, H, W) bool: the pixels within `reach` of one of the image's clicks (of any class)."""
    yy = torch.arange(shape[0], device=device).view(-1, 1)
    xx = torch.arange(shape[1], device=device).view(1, -1)
    near = torch.zeros(len(clicks), *shape, dtype=torch.bool, device=device)
    for i, image_clicks in enumerate(clicks):
        for c in image_clicks:
            near[i] |= (yy - c.y) ** 2 + (xx - c.x) ** 2 <= reach**2
    return near


def ignored(labels: torch.Tensor, index: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """(B,) bool: the answer (B, H, W) disagrees with at least one of the image's clicks (`_click_index`) at the
    clicked pixel."""
    image, cls, y, x, positive = index
    wrong = (labels[image, y, x] == cls) != positive.bool()
    return torch.zeros(labels.shape[0], dtype=torch.long, device=labels.device).index_add_(0, image, wrong.long()) > 0


def _click_loss(logits: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the pixels near clicks (pos / neg (B, K, H, W) bool) whose label still disagrees with the
    click, per image normalised by its click pixels."""
    logp = torch.log_softmax(logits, dim=1)
    fg = logp[:, 1:]  # (B, K, H, W) log p(class)
    # log(1 - p(class)): the log of the other classes' share
    total = torch.logsumexp(logits, dim=1, keepdim=True)
    rest = [torch.cat([logits[:, :c], logits[:, c + 1 :]], dim=1) for c in range(1, logits.shape[1])]
    others = torch.stack([torch.logsumexp(r, dim=1) for r in rest], dim=1)
    not_fg = others - total
    labels = logits.detach().argmax(1, keepdim=True)
    said = labels == torch.arange(1, logits.shape[1], device=logits.device).view(1, -1, 1, 1)  # (B, K, H, W)
    gate = active.view(-1, 1, 1, 1)
    wrong_pos, wrong_neg = pos & ~said & gate, neg & said & gate
    pixels = (pos | neg).flatten(1).sum(1).clamp_min(1).view(-1, 1, 1, 1)
    return -((fg * wrong_pos + not_fg * wrong_neg) / pixels).sum()


def refine(
    network: Any,  # an smp Unet: encoder, decoder, segmentation_head
    x: torch.Tensor,
    num_classes: int,
    clicks: list[list[Click]],
    steps: int,
    radius: float = 0.0,
    time_cap_s: float | None = None,
    reach: float | None = None,
) -> torch.Tensor:
    """Probabilities (B, K+1, H, W) for the encoded input x (B, 1 + 3K, H, W): the network's own where they follow
    every click, refined where they do not, with the loss on the pixels within `radius` of each click and the
    refined answer kept only within `reach` of a click (None: anywhere). The network is in eval mode; its weights do
    not change. With `time_cap_s` the steps stop once the call has run that long (the
    answer is the last step's)."""
    started = time.perf_counter()
    k = num_classes
    with torch.inference_mode(False), torch.enable_grad():
        x = x.clone()  # a normal tensor: inference-mode tensors cannot enter autograd
        with torch.no_grad(), autocast(x.device):  # the unrefined answer exactly as the predictor computes it
            features = network.encoder(x)
            base = network.segmentation_head(network.decoder(features)).float()
        base_labels = base.argmax(1)
        index = _click_index(clicks, x.device)
        if not ignored(base_labels, index).any():
            return torch.softmax(base, dim=1)
        pos, neg = (m > 0.5 for m in rasterize_clicks(clicks, k, x.shape[-1], radius, "disk", x.device))
        features = [f.float() for f in features]  # the refinement runs in fp32
        f = features[FEATURE_LEVEL]
        b, channels = f.shape[:2]
        scale = torch.ones(b, channels, 1, 1, device=f.device, requires_grad=True)
        bias = torch.zeros(b, channels, 1, 1, device=f.device, requires_grad=True)
        optimiser = torch.optim.Adam([scale, bias], lr=LR)

        def forward() -> torch.Tensor:
            fs = list(features)
            fs[FEATURE_LEVEL] = f * scale + bias
            return network.segmentation_head(network.decoder(fs)).float()

        out = None
        for _ in range(steps):
            out = forward()
            active = ignored(out.detach().argmax(1), index)
            if not active.any() or (time_cap_s is not None and time.perf_counter() - started >= time_cap_s):
                break
            kept_scale, kept_bias = scale.detach().clone(), bias.detach().clone()
            regulariser = REGULARISATION * (((scale - 1) ** 2).sum() + (bias**2).sum())
            loss = _click_loss(out, pos, neg, active) + regulariser
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            with torch.no_grad():  # an image that follows its clicks keeps its parameters
                scale[~active] = kept_scale[~active]
                bias[~active] = kept_bias[~active]
            out = None
        logits = (out if out is not None else forward()).detach()
        with torch.no_grad():
            refined = torch.softmax(logits, dim=1)
            labels = refined.argmax(1)
            asked = torch.zeros_like(base_labels, dtype=torch.bool)
            for i, image_clicks in enumerate(clicks):
                for cls in {c.cls for c in image_clicks if c.positive}:
                    asked[i] |= (labels[i] == cls) & (base_labels[i] != cls)
                for cls in {c.cls for c in image_clicks if not c.positive}:
                    asked[i] |= (base_labels[i] == cls) & (labels[i] != cls)
            if reach is not None:
                asked &= near_clicks(clicks, labels.shape[-2:], reach, labels.device)
            return torch.where(asked[:, None], refined, torch.softmax(base, dim=1))
