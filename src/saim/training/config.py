"""A training run's settings (TrainConfig): the recipe's hyperparameters and the trainer service's run."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from saim.options import option


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = option(12, "epochs of a training run from scratch (each of steps_per_epoch iterations)")
    # nnU-Net convention for small sets (a fixed number of iterations); large ones get a full pass per epoch
    steps_per_epoch: int = option(25, "iterations per epoch at least (more when one pass over the data needs more)")
    batch_size: int = option(8, "slices per training batch")
    lr: float = option(2e-3, "peak learning rate (one-cycle schedule)")
    weight_decay: float = option(1e-4, "AdamW weight decay")
    focal_gamma: float = option(2.0, "focal-loss gamma")
    class_weight_power: float = option(0.5, "focal-loss class weights are (median freq / freq) ** power")
    dice_weight: float = option(1.0, "weight of the batch soft-Dice term added to the focal loss")
    mode: Literal["retrain", "finetune"] = option(
        "finetune",
        "warm-start each run from the previous model (affordable on a CPU) or retrain from scratch as in the paper "
        "(needs a converging training budget, i.e. a GPU)",
    )
    finetune_epochs: int | None = option(None, "epochs of a fine-tuning run (default: half of epochs)")
    finetune_lr_scale: float = option(0.3, "fine-tuning uses this share of the peak learning rate")
    click_rounds: int = option(
        4, "max iterative click rounds that feed the previous prediction back (chosen with tools/click_study.py)"
    )
    p_no_clicks: float = option(0.25, "share of samples trained in automatic mode (no clicks, no previous mask)")
    p_virtual_user_click: float = option(0.7, "share of rounds clicking like the test-time virtual user (else random)")
    p_propagation: float = option(
        0.2,
        "share of the interactive samples whose previous mask is a neighbouring slice's ground truth (the "
        "annotator's Propagate), half of them without clicks",
    )
    p_scribble: float = option(
        0.15,
        "share of the click rounds in which the virtual user draws a scribble along each class's largest error "
        "region instead of clicking on it",
    )
    p_box: float = option(
        0.25,
        "share of the interactive samples that get a box around each class present (its sides jittered by up to a "
        "tenth of its size), half of them without clicks (a model with box prompts)",
    )
    correction_weight: float = option(0.0, "extra loss weight on the pixels an interactive input gets wrong (0: none)")
    click_weight: float = option(0.0, "extra loss weight on the pixels within the input's clicks (0: none)")
    augment: bool = option(True, "the paper's intensity and flip augmentations")
    spatial_augment: bool = option(True, "a random affine on top of the paper's augmentations")
    # The trainer service's run (no flags: `saim emulate` trains in memory, without validation, in one process)
    patience: int = 3  # epochs without validation gain before a run stops, keeping its best epoch (0: never)
    checkpoint_every_s: float = 300.0  # an epoch checkpoint when this long has passed since the last (0: every epoch)
    loader_workers: int = 2  # DataLoader worker processes reading the decoded slice cache (0: in process)
    world_size: int = 1  # data-parallel training processes (torchrun; one per GPU, gloo on CPU)
    collective_timeout_s: float = 600.0  # a data-parallel rank waiting longer in a collective fails the run
    run_timeout_s: float | None = None  # a data-parallel run still going after this long is killed and fails
    seed: int = 0  # set per run by the caller (services: SAIM_SEED + iteration)
    device: str = "cpu"  # set by the caller from its device setting

    def to_dict(self) -> dict:
        return asdict(self)
