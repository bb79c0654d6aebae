"""The virtual user's click rule (saim.model.clicks.largest_error) for a whole training batch at once, on the batch's
own device: for every sample b and class k, the largest connected error region of class k (missed or false, the
missed one winning a tie in size; among regions of one size, the first in raster order) and the peak of its Euclidean
distance transform (the image border counts as boundary; the first peak in raster order). The same clicks as the
scipy rule on the same inputs, without a round trip to the CPU per sample and class.

Two label images per sample carry every class at once: one with each missed pixel's true class, one with each false
pixel's predicted class; a class's error regions are the 4-connected runs of its value there.
- Connected components: every pixel points at a pixel of its component (at first itself); each pass takes the
  largest pointer among the pixel and its neighbours of the same value, hooks the pointed-at pixel onto it, and
  jumps pointers to their pointer's pointer until they settle. A component ends up pointing at its largest flat
  index (its root); sizes and first pixels come from one scatter each.
- The exact distance transform of the chosen regions, separable (the lower envelope of the column distances): per
  column, the distance to the nearest pixel outside the region (a run of the same region id), then per row the
  minimum of dx² + column distance² over shifts dx, stopping once dx² exceeds every pixel's best so far.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _shift(t: torch.Tensor, dy: int, dx: int, fill: int) -> torch.Tensor:
    """t (N, H, W) moved so that out[y, x] = t[y - dy, x - dx]; `fill` where that falls outside."""
    pad = (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0))
    padded = F.pad(t, pad, value=fill)
    h, w = t.shape[-2:]
    y0, x0 = max(-dy, 0), max(-dx, 0)
    return padded[:, y0 : y0 + h, x0 : x0 + w]


NEIGHBOURS = ((1, 0), (-1, 0), (0, 1), (0, -1))  # scipy.ndimage.label's default structure in 2D


def connected_components(values: torch.Tensor) -> torch.Tensor:
    """values (N, H, W) int, 0 for background. Returns (N, H, W) int64: for each foreground pixel the flat index
    (over the whole batch) of its 4-connected component's root, -1 for background. Pixels are connected when
    neighbours and of the same value."""
    n, h, w = values.shape
    fg = values > 0
    idx = torch.arange(n * h * w, device=values.device).view(n, h, w)
    lab = torch.where(fg, idx, torch.full_like(idx, -1))
    flat_fg = fg.view(-1)
    while True:
        best = lab
        for dy, dx in NEIGHBOURS:
            same = _shift(values, dy, dx, 0) == values
            best = torch.maximum(best, torch.where(same & fg, _shift(lab, dy, dx, -1), lab))
        grow = best > lab
        if not bool(grow.any()):
            return lab
        flat = lab.view(-1).clone()
        flat.scatter_reduce_(0, lab[grow], best[grow], "amax")  # hook the pointed-at pixel onto the larger label
        flat = torch.maximum(flat, best.view(-1))
        while True:  # pointer jumping until every pointer points at a pixel pointing at itself
            jumped = torch.where(flat_fg, flat[flat.clamp(min=0)], flat)
            if torch.equal(jumped, flat):
                break
            flat = jumped
        lab = flat.view(n, h, w)


def _column_distance(region: torch.Tensor) -> torch.Tensor:
    """region (N, H, W) int64 ids (0: none). Per pixel of a region, the distance along its column to the nearest
    pixel outside it (the image border counts as outside); 0 outside every region."""
    h = region.shape[1]
    ys = torch.arange(h, device=region.device).view(1, h, 1).expand_as(region)
    start = torch.ones_like(region, dtype=torch.bool)
    start[:, 1:] = region[:, 1:] != region[:, :-1]
    end = torch.ones_like(region, dtype=torch.bool)
    end[:, :-1] = region[:, :-1] != region[:, 1:]
    first = torch.cummax(torch.where(start, ys, torch.zeros_like(ys)), dim=1).values
    last = torch.flip(torch.cummin(torch.flip(torch.where(end, ys, torch.full_like(ys, h)), [1]), dim=1).values, [1])
    g = torch.minimum(ys - first + 1, last - ys + 1)
    return torch.where(region > 0, g, torch.zeros_like(g))


def squared_distance(region: torch.Tensor) -> torch.Tensor:
    """region (N, H, W) int64 ids (0: none), disjoint regions per image. Per pixel of a region, the squared
    Euclidean distance to the nearest pixel outside that region (the image border counts as outside); 0 elsewhere.
    Exact (integer arithmetic)."""
    w = region.shape[2]
    g2 = _column_distance(region) ** 2
    xs = torch.arange(w, device=region.device)
    border = torch.minimum(xs + 1, w - xs) ** 2  # the pixels just outside the left and right edges
    d2 = torch.minimum(g2, border.view(1, 1, w))
    inside = region > 0
    dx = 1
    while dx < w and inside.any() and dx * dx < int(d2[inside].max()):
        same = region[:, :, dx:] == region[:, :, :-dx]
        # a neighbour dx to the right (left) in the same region: dx² + its column distance²; outside the region: dx²
        right = torch.where(same, g2[:, :, dx:], 0) + dx * dx
        left = torch.where(same, g2[:, :, :-dx], 0) + dx * dx
        d2[:, :, :-dx] = torch.minimum(d2[:, :, :-dx], right)
        d2[:, :, dx:] = torch.minimum(d2[:, :, dx:], left)
        dx += 1
    return torch.where(inside, d2, 0)


def largest_error_clicks(
    labels: torch.Tensor, pred: torch.Tensor, allow: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """labels, pred (B, H, W) in 0..K; allow (B, K) bool. The virtual user's click for every (b, k) as (y, x, valid,
    positive), each (B, K), on the inputs' device: valid where allowed and class k+1 has an error."""
    b, h, w = labels.shape
    k = allow.shape[1]
    dev, hw = labels.device, h * w
    labels, pred = labels.long(), pred.long()
    wrong = labels != pred
    allowed = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=dev), allow.to(dev)], dim=1)  # (B, K+1)
    batch = torch.arange(b, device=dev).view(b, 1, 1)
    missed = torch.where(wrong & allowed[batch, labels], labels, torch.zeros_like(labels))
    false = torch.where(wrong & allowed[batch, pred], pred, torch.zeros_like(pred))
    values = torch.cat([missed, false])  # (2B, H, W): image n < B holds sample n's misses, n >= B its false pixels
    roots = connected_components(values).view(-1)
    fg = roots >= 0
    members = roots[fg]
    pixel = torch.arange(roots.numel(), device=dev)[fg]
    size = torch.zeros_like(roots).scatter_add_(0, members, torch.ones_like(members))
    first = torch.full_like(roots, roots.numel()).scatter_reduce_(0, members, pixel, "amin")
    root = torch.nonzero(size > 0).squeeze(1)  # every component, by its root
    image = root // hw
    cls = values.view(-1)[root] - 1
    group = image * k + cls  # (half, sample, class) flattened: half * B * K + b * K + c
    key = size[root] * hw + (hw - 1 - first[root] % hw)  # larger first, then the earlier first pixel
    best = torch.full((2 * b * k,), -1, dtype=torch.long, device=dev).scatter_reduce_(0, group, key, "amax")
    winner = torch.full((2 * b * k,), -1, dtype=torch.long, device=dev)
    chosen = key == best[group]
    winner[group[chosen]] = root[chosen]
    best_size = torch.where(best >= 0, best // hw, torch.zeros_like(best)).view(2, b, k)
    winner = winner.view(2, b, k)
    positive = best_size[0] >= best_size[1]  # a missed region wins a tie, as in the scipy rule
    valid = (best_size[0] > 0) | (best_size[1] > 0)
    pick = torch.where(positive, winner[0], winner[1])  # (B, K) root of the region to click, -1 when none
    picked = torch.zeros(roots.numel() + 1, dtype=torch.bool, device=dev)
    picked[torch.where(valid, pick, torch.full_like(pick, roots.numel()))] = True
    picked = picked[:-1]
    in_region = fg & picked[roots.clamp(min=0)]
    region = torch.where(in_region, roots + 1, torch.zeros_like(roots)).view(2 * b, h, w)
    d2 = squared_distance(region).view(-1)
    ids = region.view(-1)[in_region] - 1
    peak = torch.zeros(roots.numel(), dtype=torch.long, device=dev).scatter_reduce_(0, ids, d2[in_region], "amax")
    at_peak = d2[in_region] == peak[ids]
    spot = torch.full((roots.numel(),), roots.numel(), dtype=torch.long, device=dev)
    spot.scatter_reduce_(0, ids[at_peak], torch.nonzero(in_region).squeeze(1)[at_peak], "amin")
    where = spot[pick.clamp(min=0)] % hw
    y = torch.where(valid, where // w, torch.zeros_like(where))
    x = torch.where(valid, where % w, torch.zeros_like(where))
    return y, x, valid, positive & valid
