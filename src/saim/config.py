"""Typed configuration of the core: the model's architecture/encoding, a training run, and the dataset split rule.

Each is defined once, with its defaults here: the services nest them in their settings (`SAIM_MODEL__IMAGE_SIZE`,
`SAIM_TRAIN__EPOCHS`, ...), the emulation nests them in `EmulationConfig`, and the CLI derives its flags from the
fields (saim.argfields), taking each field's `help` from its metadata.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal


def _opt(default, help: str):
    """A field with its help text (CLI flags and documentation are derived from it)."""
    return field(default=default, metadata={"help": help})


CLICK_RADIUS_SHARE = 3 / 64  # tools/click_study.py at 64 px, seed 0: radius 3 NoC@85 7.7, radius 5 11.5


@dataclass(frozen=True)
class ModelConfig:
    classes: tuple[str, ...] = ()  # foreground class names, from the dataset; output channel 0 is background
    image_size: int = _opt(256, "model input size in pixels (slices are resampled to it, aspect kept, padded)")
    encoder: str = _opt("resnet34", "segmentation_models_pytorch encoder of the Unet")
    encoder_weights: str | None = _opt(None, "e.g. 'imagenet': the real pretrained weights (needs network access)")
    click_encoding: Literal["disk", "gaussian"] = _opt("disk", "how a click is rasterised into its input channel")
    click_radius: float | None = _opt(
        None,
        "click radius in pixels at model resolution (default: 3/64 of the model size, 3 px at 64 and 12 px at 256: "
        "a click covers the same share of the slice at every size)",
    )

    refine_steps: int = _opt(
        20,
        "test-time refinement where the answer ignores a click (f-BRS on the stride-4 features, saim.model.refine): "
        "at most this many optimiser steps, stopping once every clicked pixel is followed; 0 is off (a refined click "
        "costs up to that many decoder passes; at 256 px a CPU-trained model gave a click's meaning to 0.78 of its "
        "disk without it, 0.91 with 20 steps)",
    )
    refine_radius: float = _opt(
        0.0,
        "the refinement's loss covers this radius (px at model resolution) around each click: 0 is the clicked pixel "
        "only (f-BRS; on the synthetic phantoms the 3 px disk lost), the click radius asks for its whole disk "
        "(on 3 TotalSegmentator slabs that lifted 3-click mIoU more)",
    )

    @property
    def num_classes(self) -> int:
        """Foreground classes (K)."""
        return len(self.classes)

    @property
    def radius(self) -> float:
        """The click radius in pixels at model resolution (click_radius, or 3/64 of the model size)."""
        return self.click_radius if self.click_radius is not None else self.image_size * CLICK_RADIUS_SHARE

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
        d.setdefault("refine_steps", 0)  # a model saved before refinement existed answers as it did
        return cls(**d)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = _opt(12, "epochs of a training run from scratch (each of steps_per_epoch iterations)")
    # nnU-Net convention for small sets (a fixed number of iterations); large ones get a full pass per epoch
    steps_per_epoch: int = _opt(25, "iterations per epoch at least (more when one pass over the data needs more)")
    batch_size: int = _opt(8, "slices per training batch")
    lr: float = _opt(2e-3, "peak learning rate (one-cycle schedule)")
    weight_decay: float = _opt(1e-4, "AdamW weight decay")
    focal_gamma: float = _opt(2.0, "focal-loss gamma")
    class_weight_power: float = _opt(0.5, "focal-loss class weights are (median freq / freq) ** power")
    dice_weight: float = _opt(1.0, "weight of the batch soft-Dice term added to the focal loss")
    mode: Literal["retrain", "finetune"] = _opt(
        "finetune",
        "warm-start each run from the previous model (affordable on a CPU) or retrain from scratch as in the paper "
        "(needs a converging training budget, i.e. a GPU)",
    )
    finetune_epochs: int | None = _opt(None, "epochs of a fine-tuning run (default: half of epochs)")
    finetune_lr_scale: float = _opt(0.3, "fine-tuning uses this share of the peak learning rate")
    click_rounds: int = _opt(
        4, "max iterative click rounds that feed the previous prediction back (tools/click_study.py: 4 beat 2)"
    )
    p_no_clicks: float = _opt(0.25, "share of samples trained in automatic mode (no clicks, no previous mask)")
    p_virtual_user_click: float = _opt(0.7, "share of rounds clicking like the test-time virtual user (else random)")
    correction_weight: float = _opt(0.0, "extra loss weight on the pixels an interactive input gets wrong (0: none)")
    click_weight: float = _opt(0.0, "extra loss weight on the pixels within the input's clicks (0: none)")
    augment: bool = _opt(True, "the paper's intensity and flip augmentations")
    spatial_augment: bool = _opt(True, "a random affine on top of the paper's augmentations")
    # The trainer service's run (no flags: `saim emulate` trains in memory, without validation, in one process)
    patience: int = 3  # epochs without validation gain before a run stops, keeping its best epoch (0: never)
    checkpoint_every_s: float = 300.0  # an epoch checkpoint when this long has passed since the last (0: every epoch)
    loader_workers: int = 2  # DataLoader worker processes reading the decoded slice cache (0: in process)
    world_size: int = 1  # data-parallel training processes (torchrun; one per GPU, gloo on CPU)
    seed: int = 0  # set per run by the caller (services: SAIM_SEED + iteration)
    device: str = "cpu"  # set by the caller from its device setting

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SplitRule:
    """How a labelled dataset is split into test, validation, initial (pre-training) and pool series."""

    test_fraction: float = _opt(0.15, "share of all series held out for testing")
    val_fraction: float = _opt(0.1, "share of all series for validation (the promotion gate)")
    pretrain_fraction: float | Literal["auto"] = _opt(
        0.1,
        "share of the remaining series annotated up front, or 'auto' (the emulation only: the paper's rule, the "
        "smallest initial set whose pre-trained model has every class above 0.5 IoU on validation, mIoU above 0.5 "
        "if none has)",
    )
    stratify: str | None = _opt(
        None,
        "a regular expression on the case name whose first group (or whole match) is the case's stratum, e.g. "
        "'ts_(ct|mr)_' for modality: test, validation and the initial set's order then mix the strata in proportion",
    )
