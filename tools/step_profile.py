"""Where saim's training step spends its time, against the bare model's step, on one device (make bench at 512² on
the CPU, tools/gpu_bench.sh on a GPU).

The bare step is one forward + backward (cross-entropy, no clicks) + the optimizer, on the same network, batch and
optimizer as saim's step (saim.training.recipe.train_step: augmentation, the simulated click rounds, focal + Dice).
Both are timed over the same number of steps (means: saim's step varies with its random click rounds). The parts of
saim's step are timed by wrapping the functions it calls, with a device synchronisation around each part on CUDA:
- augmentation (saim.training.augment.augment);
- the click rounds' forwards (the network's answers fed back, no gradient);
- the virtual user's clicks (saim.training.simulation.virtual_user_clicks: batched on the device off the CPU, scipy
  on the CPU) and the random error clicks (sample_error_clicks);
- the rest of the simulation (click painting, encoding);
- the optimizer step; the remainder is the forward, the loss and the backward.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from unittest import mock

import torch

import saim.training.recipe as recipe
import saim.training.simulation as simulation
from saim.model.config import ModelConfig
from saim.model.device import autocast, is_cuda, memory_format
from saim.model.encoding import encode
from saim.training.config import TrainConfig

PARTS = {
    "augmentation": (recipe, "augment"),
    "simulation": (recipe, "simulate_interaction"),
    "click rounds' forwards (no grad)": (simulation, "_forward_labels"),
    "virtual user clicks": (simulation, "virtual_user_clicks"),
    "random error clicks": (simulation, "sample_error_clicks"),
}


def sync(device: torch.device | str) -> None:
    if is_cuda(device):
        torch.cuda.synchronize(device)


def _timed_parts(device, spent: dict[str, float]) -> ExitStack:
    stack = ExitStack()
    for name, (module, attr) in PARTS.items():
        real = getattr(module, attr)

        def wrapper(*args, _real=real, _name=name, **kwargs):
            sync(device)
            t0 = time.perf_counter()
            out = _real(*args, **kwargs)
            sync(device)
            spent[_name] = spent.get(_name, 0.0) + time.perf_counter() - t0
            return out

        stack.enter_context(mock.patch.object(module, attr, wrapper))
    return stack


def _mean_s(fn: Callable[[], None], steps: int, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / steps


def step_profile(net: torch.nn.Module, mc: ModelConfig, batch: int, steps: int, device: str, warmup: int = 1) -> dict:
    """Mean seconds of the bare and saim's steps and of saim's parts over `steps` steps each, on phantom-like labels
    (a disc per class at a random place: error regions like a network's early answers, not per-pixel noise)."""
    s, k = mc.image_size, mc.num_classes
    gen_data = torch.Generator().manual_seed(1)
    images = torch.randn(batch, 1, s, s, generator=gen_data)
    yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    labels = torch.zeros(batch, s, s, dtype=torch.long)
    for i in range(batch):
        for c in range(1, k + 1):
            cy, cx = torch.randint(s // 5, 4 * s // 5, (2,), generator=gen_data).tolist()
            r = int(torch.randint(s // 20, s // 6, (1,), generator=gen_data))
            labels[i][(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = c
    images, labels = images.to(device), labels.to(device)
    weights = torch.ones(k + 1, device=device)
    tc, gen = TrainConfig(), torch.Generator().manual_seed(0)
    net.train()
    opt = recipe.optimizer(net.parameters(), 1e-4, tc.weight_decay)
    zeros = torch.zeros(batch, k, s, s, device=device)

    def bare() -> None:
        with autocast(device):
            x = encode(images, zeros, zeros, zeros, zeros if mc.box_prompts else None)
            logits = net(x.contiguous(memory_format=memory_format(device))).float()
        loss = torch.nn.functional.cross_entropy(logits, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    neighbours = labels.roll(1, dims=0)  # a neighbouring slice's label (the propagation samples): another sample's

    def saim() -> None:
        recipe.train_step(net, opt, images, labels, weights, mc, tc, gen, hflip=False, neighbours=neighbours)

    for _ in range(warmup):
        bare()
        saim()
    bare_s = _mean_s(bare, steps, device)
    spent: dict[str, float] = {}
    real_step = opt.step

    def opt_step(*args, **kwargs):
        sync(device)
        t0 = time.perf_counter()
        out = real_step(*args, **kwargs)
        sync(device)
        spent["optimizer step"] = spent.get("optimizer step", 0.0) + time.perf_counter() - t0
        return out

    opt.step = opt_step  # type: ignore[method-assign]
    with _timed_parts(device, spent):
        saim_s = _mean_s(saim, steps, device)
    opt.step = real_step  # type: ignore[method-assign]
    net.eval()
    parts = {name: spent.get(name, 0.0) / steps for name in (*PARTS, "optimizer step")}
    inner = sum(
        parts.get(n, 0.0) for n in ("click rounds' forwards (no grad)", "virtual user clicks", "random error clicks")
    )
    parts["simulation: painting, encoding"] = parts.pop("simulation", 0.0) - inner
    accounted = sum(parts.values())
    parts["forward, loss, backward"] = saim_s - accounted
    return {"bare_s": bare_s, "saim_s": saim_s, "parts_s": parts, "batch": batch, "steps": steps}


def print_profile(profile: dict, size: int) -> None:
    saim_s, bare_s = profile["saim_s"], profile["bare_s"]
    print(
        f"training step at {size}², batch {profile['batch']}, mean of {profile['steps']} steps: saim {saim_s:.2f} s, "
        f"bare {bare_s:.2f} s; saim at {bare_s / saim_s:.2f} x the bare model's throughput"
    )
    print(f"  {'part of saim step':40s} {'s':>8s} {'share':>7s}")
    for name, seconds in sorted(profile["parts_s"].items(), key=lambda kv: -kv[1]):
        print(f"  {name:40s} {seconds:8.3f} {seconds / saim_s:7.1%}")
