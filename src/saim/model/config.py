"""What a model is: its architecture and input encoding (ModelConfig), stored with every version's weights.

Defined once, with its defaults here, like the training run's settings (saim.training.config) and the split rule
(saim.data.splits): the services nest them in their settings (`SAIM_MODEL__IMAGE_SIZE`, ...), the emulation in
`EmulationConfig`, and the CLI derives its flags from the fields (saim.cli.flags), each field's `help` from its
metadata."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal

from saim.options import option

CLICK_RADIUS_SHARE = 3 / 64  # chosen with tools/click_study.py (docs/results.md)
REFINE_REACH_RADII: float | Literal["anywhere"] = 2.0  # chosen with tools/refine_reach.py (docs/results.md)


@dataclass(frozen=True)
class ModelConfig:
    classes: tuple[str, ...] = ()  # foreground class names, from the dataset; output channel 0 is background
    image_size: int = option(256, "model input size in pixels (slices are resampled to it, aspect kept, padded)")
    encoder: str = option("resnet34", "segmentation_models_pytorch encoder of the Unet")
    encoder_weights: str | None = option(None, "e.g. 'imagenet': the real pretrained weights (needs network access)")
    click_encoding: Literal["disk", "gaussian"] = option("disk", "how a click is rasterised into its input channel")
    click_radius: float | None = option(
        None,
        "click radius in pixels at model resolution (default: 3/64 of the model size, so that a click covers the same "
        "share of the slice at every size)",
    )
    box_prompts: bool = option(
        True,
        "the network takes a box per class as a prompt, trained with the virtual user's boxes (one more input channel "
        "per class; a model without them answers clicks only and refuses a box)",
    )

    refine_steps: int = option(
        20,
        "test-time refinement where the answer ignores a click (f-BRS on the stride-4 features, saim.model.refine): "
        "at most this many optimiser steps, stopping once every clicked pixel is followed; 0 is off (each step costs "
        "a decoder pass with its backward; docs/results.md measures what it buys)",
    )
    refine_radius: float = option(
        0.0,
        "the refinement's loss covers this radius (pixels at model resolution) around each click: 0 is the clicked "
        "pixel only (f-BRS), the click radius asks for its whole disk (docs/results.md compares the two)",
    )
    refine_reach: float | Literal["anywhere"] = option(
        REFINE_REACH_RADII,
        "the refinement's changes are kept only within this many click radii of one of the slice's clicks, or "
        "'anywhere' in the slice; farther away the unrefined answer stays (docs/results.md measures the choice)",
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
    def reach(self) -> float | None:
        """How far from a click refinement may change the answer, in pixels at model resolution (None: anywhere)."""
        return None if self.refine_reach == "anywhere" else float(self.refine_reach) * self.radius

    @property
    def in_channels(self) -> int:
        """Image + positive and negative click maps per class + previous mask per class (+ a box map per class)."""
        return 1 + (4 if self.box_prompts else 3) * self.num_classes

    def to_dict(self) -> dict:
        d = asdict(self)
        d["classes"] = list(self.classes)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        d = dict(d)
        d["classes"] = tuple(d["classes"])
        d.setdefault("refine_steps", 0)  # a model saved before refinement existed answers as it did
        d.setdefault("refine_reach", "anywhere")  # one saved before the reach existed keeps changes anywhere
        d.setdefault("box_prompts", False)  # and one saved before box prompts takes clicks only
        return cls(**d)


@dataclass(frozen=True)
class ServingConfig:
    """How a replica serves a model: its own settings (SAIM_SERVING__*), not the model's. A version's ModelConfig
    carries a refinement recommendation; a replica that sets its own wins, one that does not follows the version."""

    refine_steps: int | None = option(
        None, "test-time refinement steps per click on this replica (unset: the model version's recommendation)"
    )
    refine_radius: float | None = option(
        None, "the refinement loss's radius on this replica (unset: the model version's recommendation)"
    )
    refine_reach: float | Literal["anywhere"] | None = option(
        None, "how far from a click the refinement may change the answer on this replica (unset: the version's)"
    )
    click_time_cap_s: float = option(
        1.0,
        "a click's refinement stops once it has run this long (seconds), so it never holds the next person's click "
        "on the replica's tensor thread for longer; the click itself is still honoured at its pixel",
    )
    propagate_max_slices: int = option(
        40, "a propagation walks at most this many slices in each direction unless the request says otherwise"
    )

    def applied_to(self, config: ModelConfig) -> ModelConfig:
        steps = config.refine_steps if self.refine_steps is None else self.refine_steps
        radius = config.refine_radius if self.refine_radius is None else self.refine_radius
        reach = config.refine_reach if self.refine_reach is None else self.refine_reach
        return replace(config, refine_steps=steps, refine_radius=radius, refine_reach=reach)
