"""A predictor whose network follows the clicks exactly (the clicked class inside each click's disk, the previous
mask elsewhere): it makes scan-space plumbing testable without a trained model."""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import torch

from saim.model.config import ModelConfig
from saim.model.predictor import InteractivePredictor


class EchoNet(torch.nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.k = num_classes
        self.threads: set[str] = set()  # the names of the threads its forwards ran on

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.threads.add(threading.current_thread().name)
        k = self.k
        pos, neg, prev = x[:, 1 : 1 + k], x[:, 1 + k : 1 + 2 * k], x[:, 1 + 2 * k : 1 + 3 * k]
        fg = 4 * prev + 10 * pos - 10 * neg
        return torch.cat([torch.full_like(fg[:, :1], 2.0), fg], dim=1)


def echo_predictor(config: ModelConfig) -> InteractivePredictor:
    """It follows every click, so there is nothing to refine (and no encoder to refine on); it takes no box prompts
    (box_echo_predictor does)."""
    return InteractivePredictor(replace(config, refine_steps=0, box_prompts=False), network=EchoNet(config.num_classes))


def oblique_affine(spacing=(0.7, 0.7, 3.0), degrees=(20.0, -35.0, 10.0), flips=(-1, 1, -1)) -> np.ndarray:
    """A non-diagonal affine: voxel axes rotated about all three world axes, some flipped, anisotropic."""
    ax, ay, az = np.deg2rad(degrees)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ ry @ rx @ np.diag(np.array(spacing) * np.array(flips))
    affine[:3, 3] = (-80.0, 40.0, 12.5)
    return affine


class BoxEchoNet(EchoNet):
    """EchoNet that also answers each class inside its box channel (a model with box prompts)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.k
        out = super().forward(x)
        return torch.cat([out[:, :1], out[:, 1:] + 10 * x[:, 1 + 3 * k : 1 + 4 * k]], dim=1)


def box_echo_predictor(config: ModelConfig) -> InteractivePredictor:
    return InteractivePredictor(
        replace(config, refine_steps=0, box_prompts=True), network=BoxEchoNet(config.num_classes)
    )
