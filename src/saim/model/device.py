"""Where the model runs and at what precision: one setting for every service and the emulation (`SAIM_DEVICE`,
`saim emulate --device`): `auto` (the default: CUDA when present), `cpu`, or `cuda[:N]`.

On CUDA the network runs under bf16 autocast with channels_last tensors (tensor cores; bf16 needs no loss scaling),
softmax and losses in fp32; on the CPU everything stays fp32. Inference runs in `torch.inference_mode`.
"""

from __future__ import annotations

import contextlib

import torch

from saim.errors import SaimError


def resolve_device(spec: str | None) -> str:
    """'auto' -> 'cuda' when a CUDA device is present, else 'cpu'; 'cuda' without one is an error that says so."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return spec
    if spec == "cuda" or (spec.startswith("cuda:") and spec[5:].isdigit()):
        if not torch.cuda.is_available():
            raise SaimError(f"device {spec!r}: no CUDA device is available on this machine (use auto or cpu)")
        index = int(spec[5:]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise SaimError(f"device {spec!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return spec
    raise SaimError(f"device must be auto, cpu or cuda[:N], got {spec!r}")


def is_cuda(device: torch.device | str) -> bool:
    return torch.device(device).type == "cuda"


def precision(device: torch.device | str) -> str:
    """What `autocast` does on this device, as recorded in reports and model metadata."""
    return "bf16-autocast" if is_cuda(device) else "fp32"


def autocast(device: torch.device | str):
    """bf16 autocast on CUDA; nothing elsewhere."""
    if is_cuda(device):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(device: torch.device | str) -> torch.memory_format:
    """channels_last on CUDA (what cuDNN's tensor-core convolutions want), the default layout elsewhere."""
    return torch.channels_last if is_cuda(device) else torch.contiguous_format
