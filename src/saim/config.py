"""Typed configuration of the core: the model's architecture/encoding and a training run."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal


@dataclass(frozen=True)
class ModelConfig:
    classes: tuple[str, ...]  # foreground class names; output channel 0 is background
    image_size: int = 64
    encoder: str = "resnet34"
    encoder_weights: str | None = None  # "imagenet" loads the real pretrained weights (needs network access)
    click_encoding: Literal["disk", "gaussian"] = "disk"
    click_radius: float = 5.0

    @property
    def num_classes(self) -> int:
        """Foreground classes (K)."""
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        """Image + positive and negative click maps per class + previous mask per class."""
        return 1 + 3 * self.num_classes

    def to_dict(self) -> dict:
        d = asdict(self)
        d["classes"] = list(self.classes)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        d = dict(d)
        d["classes"] = tuple(d["classes"])
        return cls(**d)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    steps_per_epoch: int = 25  # nnU-Net convention: an epoch is a fixed number of iterations, not a data pass
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    focal_gamma: float = 2.0
    class_weight_power: float = 0.5  # focal-loss class weights are (median freq / freq) ** power
    dice_weight: float = 1.0  # weight of a batch soft-Dice term added to the focal loss
    mode: Literal["retrain", "finetune"] = "retrain"  # paper: full retraining; finetune warm-starts from a parent
    finetune_epochs: int | None = None  # epochs when fine-tuning (default: half of `epochs`)
    finetune_lr_scale: float = 0.3  # fine-tuning uses a lower peak learning rate than training from scratch
    click_rounds: int = 2  # max iterative click rounds that feed the previous prediction back (Mahadevan et al.)
    p_no_clicks: float = 0.25  # share of samples trained in automatic mode (no clicks, no previous mask)
    p_virtual_user_click: float = 0.7  # share of rounds clicking like the test-time virtual user (else random)
    correction_weight: float = 0.0  # extra loss weight on pixels the interaction input gets wrong (see training)
    augment: bool = True
    spatial_augment: bool = True  # random affine on top of the paper's augmentations
    seed: int = 0
    device: str = "cpu"

    def to_dict(self) -> dict:
        return asdict(self)
