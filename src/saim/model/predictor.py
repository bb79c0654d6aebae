"""The interactive predictor shared by selection, annotation and training (paper §3.3, §4.1).

A segmentation-models-pytorch Unet (ResNet34 encoder by default) takes the encoded input (image, click maps,
previous mask) and returns per-class logits; probabilities are a softmax over background + K classes.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import segmentation_models_pytorch as smp
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from saim.errors import InvalidInput
from saim.model.clicks import Box
from saim.model.config import ModelConfig, ServingConfig
from saim.model.device import autocast, is_cuda, memory_format
from saim.model.encoding import Click, encode, one_hot_foreground, rasterize_boxes, rasterize_clicks
from saim.model.refine import refine

MODEL_FORMAT = "saim-model/1"
WEIGHTS_FILE = "weights.safetensors"
METADATA_FILE = "metadata.json"


def pixel_entropy(probs: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Per-pixel entropy (nats) of class probabilities (B, C, H, W) -> (B, H, W)."""
    return -(probs * probs.clamp_min(eps).log()).sum(dim=1)


def build_network(config: ModelConfig) -> torch.nn.Module:
    return smp.Unet(
        encoder_name=config.encoder,
        encoder_weights=config.encoder_weights,
        in_channels=config.in_channels,
        classes=config.num_classes + 1,
    )


def honour_clicks(probs: torch.Tensor, clicks: list[list[Click]]) -> torch.Tensor:
    """A click is never ignored: at each clicked pixel, in click order, a positive click's class takes all the
    probability, and a negative click's class loses its share to the other classes in proportion (to the background
    if it had everything). Everywhere else the network's answer stands. probs (B, K+1, H, W), changed in place."""
    for i, image_clicks in enumerate(clicks):
        for c in image_clicks:
            p = probs[i, :, c.y, c.x]
            if c.positive:
                p.zero_()
                p[c.cls] = 1.0
            else:
                p[c.cls] = 0.0
                total = p.sum()
                if total > 0:
                    p /= total
                else:
                    p[0] = 1.0
    return probs


def honour_boxes(probs: torch.Tensor, boxes: list[list[Box]], clicks: list[list[Click]] | None) -> torch.Tensor:
    """A box says its class is in it and only there: outside the boxes of a class the class loses its share to the
    other classes in proportion (to the background if it had everything), unless a positive click of the class lies
    outside them (the person's click says the box was not the whole structure). probs (B, K+1, H, W), changed in
    place."""
    h, w = probs.shape[-2:]
    for i, image_boxes in enumerate(boxes):
        placed = [] if clicks is None else clicks[i]
        for cls in sorted({b.cls for b in image_boxes}):
            around = [b for b in image_boxes if b.cls == cls]
            if any(c.positive and c.cls == cls and not any(b.contains(c.y, c.x) for b in around) for c in placed):
                continue
            inside = torch.zeros(h, w, dtype=torch.bool, device=probs.device)
            for b in around:
                inside[b.y0 : b.y1 + 1, b.x0 : b.x1 + 1] = True
            p = probs[i]
            p[cls].masked_fill_(~inside, 0.0)
            total = p.sum(dim=0)
            p[0] = torch.where(total > 0, p[0], torch.ones_like(p[0]))
            p /= p.sum(dim=0, keepdim=True)
    return probs


class InteractivePredictor:
    """Image + clicks + previous mask in, per-class probabilities out."""

    def __init__(self, config: ModelConfig, device: str = "cpu", network: torch.nn.Module | None = None):
        self.config = config
        self.device = torch.device(device)
        self.network = (network or build_network(config)).to(self.device)
        if is_cuda(self.device):
            self.network = self.network.to(memory_format=torch.channels_last)
        self.network.eval()
        self.metadata: dict = {}
        self.refine_time_cap_s: float | None = None  # a replica's cap on one click's refinement (ServingConfig)

    def serving(self, serving: ServingConfig) -> InteractivePredictor:
        """This predictor as a replica serves it: the replica's refinement settings over the version's
        recommendation, and its time cap. The network and the stored metadata are shared, not copied."""
        served = copy.copy(self)
        served.config, served.refine_time_cap_s = serving.applied_to(self.config), serving.click_time_cap_s
        return served

    # ---- inference -------------------------------------------------------------------------------------------
    def click_tensors(self, clicks: list[list[Click]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image click lists -> (pos, neg), each (B, K, H, W)."""
        for image_clicks in clicks:
            for c in image_clicks:
                self.validate_click(c)
        cfg = self.config
        return rasterize_clicks(clicks, cfg.num_classes, cfg.image_size, cfg.radius, cfg.click_encoding, self.device)

    def validate_click(self, c: Click) -> None:
        k, s = self.config.num_classes, self.config.image_size
        if not 1 <= c.cls <= k:
            raise InvalidInput(f"click class {c.cls} is not a foreground class (1..{k})")
        if not (0 <= c.y < s and 0 <= c.x < s):
            raise InvalidInput(f"click ({c.y}, {c.x}) is outside the {s}x{s} slice")

    def box_tensor(self, boxes: list[list[Box]] | None, b: int) -> torch.Tensor | None:
        """Per-image box lists -> box maps (B, K, H, W) for a model with box prompts (zeros without boxes); None for
        a model without them."""
        cfg = self.config
        if not cfg.box_prompts:
            return None
        if boxes is None:
            return torch.zeros(b, cfg.num_classes, cfg.image_size, cfg.image_size, device=self.device)
        return rasterize_boxes(boxes, cfg.num_classes, cfg.image_size, self.device)

    def validate_box(self, box: Box) -> None:
        k, s = self.config.num_classes, self.config.image_size
        if not self.config.box_prompts:
            raise InvalidInput("this model version was trained without box prompts: use clicks")
        if not 1 <= box.cls <= k:
            raise InvalidInput(f"box class {box.cls} is not a foreground class (1..{k})")
        if not (0 <= box.y0 <= box.y1 < s and 0 <= box.x0 <= box.x1 < s):
            raise InvalidInput(f"box ({box.y0}, {box.x0})-({box.y1}, {box.x1}) is not a box within the {s}x{s} slice")

    def _probabilities_on_device(
        self,
        images: np.ndarray,
        clicks: list[list[Click]] | None,
        prev_masks: np.ndarray | None,
        batch_size: int,
        boxes: list[list[Box]] | None = None,
    ):
        """Per batch: softmax probabilities (b, K+1, H, W), fp32, on the predictor's device."""
        images = np.asarray(images, dtype=np.float32)
        s = self.config.image_size
        if images.ndim != 3 or images.shape[1:] != (s, s):
            raise InvalidInput(f"images must be (B, {s}, {s}), got {images.shape}")
        for image_boxes in boxes or []:
            for box in image_boxes:
                self.validate_box(box)
        for start in range(0, len(images), batch_size):
            stop = start + batch_size
            img = torch.from_numpy(images[start:stop]).to(self.device)[:, None]
            b, k = img.shape[0], self.config.num_classes
            if clicks is None:
                pos = neg = torch.zeros(b, k, s, s, device=self.device)
            else:
                pos, neg = self.click_tensors(clicks[start:stop])
            if prev_masks is None:
                prev = torch.zeros(b, k, s, s, device=self.device)
            else:
                prev = one_hot_foreground(
                    torch.from_numpy(np.asarray(prev_masks[start:stop])).long().to(self.device), k
                )
            box_maps = self.box_tensor(None if boxes is None else boxes[start:stop], b)
            x = encode(img, pos, neg, prev, box_maps).contiguous(memory_format=memory_format(self.device))
            if clicks is not None and self.config.refine_steps > 0:
                cfg = self.config
                probs = refine(
                    self.network,
                    x,
                    k,
                    clicks[start:stop],
                    cfg.refine_steps,
                    cfg.refine_radius,
                    self.refine_time_cap_s,
                    cfg.reach,
                )
            else:
                with autocast(self.device):
                    logits = self.network(x)
                probs = torch.softmax(logits.float(), dim=1)
            if boxes is not None and self.config.box_prompts:
                probs = honour_boxes(probs, boxes[start:stop], None if clicks is None else clicks[start:stop])
            yield probs if clicks is None else honour_clicks(probs, clicks[start:stop])

    @torch.inference_mode()
    def probabilities(
        self,
        images: np.ndarray,
        clicks: list[list[Click]] | None = None,
        prev_masks: np.ndarray | None = None,
        batch_size: int = 32,
        boxes: list[list[Box]] | None = None,
    ) -> np.ndarray:
        """images (B, H, W) preprocessed; clicks per image; prev_masks (B, H, W) label maps; boxes per image (a model
        with box prompts) -> probs (B, K+1, H, W)."""
        out = [p.cpu().numpy() for p in self._probabilities_on_device(images, clicks, prev_masks, batch_size, boxes)]
        s = self.config.image_size
        return np.concatenate(out) if out else np.zeros((0, self.config.num_classes + 1, s, s), np.float32)

    @torch.inference_mode()
    def mean_entropy(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Mean per-pixel entropy (nats) of each image's automatic prediction (B,), computed on the device: only B
        numbers leave it, not B x (K+1) x H x W probabilities."""
        out = [
            pixel_entropy(p).flatten(1).mean(dim=1).cpu()
            for p in self._probabilities_on_device(images, None, None, batch_size)
        ]
        return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)

    @torch.inference_mode()
    def class_entropy(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Per image and foreground class, the predictive entropy that belongs to the class (B, K): the per-pixel
        entropy weighted by the class's probability, summed over pixels and divided by the image's pixels. Computed on
        the device; only B x K numbers leave it."""
        k = self.config.num_classes
        out = [
            (pixel_entropy(p)[:, None] * p[:, 1:]).flatten(2).mean(dim=2).float().cpu()
            for p in self._probabilities_on_device(images, None, None, batch_size)
        ]
        return torch.cat(out).numpy().astype(np.float64) if out else np.zeros((0, k))

    @torch.inference_mode()
    def mc_dropout_entropy(
        self, images: np.ndarray, passes: int, p: float, seed: int = 0, batch_size: int = 32
    ) -> np.ndarray:
        """Mean per-pixel predictive entropy (nats) of each image's automatic prediction under Monte Carlo dropout
        (B,): `passes` forwards with dropout `p` on the encoder features the decoder reads (the network has no
        dropout layers of its own), the entropy of their mean probabilities. Seeded: the same images give the same
        answer; p = 0 gives `mean_entropy`."""
        decoder = getattr(self.network, "decoder", None)
        if not isinstance(decoder, torch.nn.Module):
            raise InvalidInput("MC dropout needs a network with a decoder (a segmentation-models-pytorch Unet)")

        def drop(module, args):
            features = args[0]
            return ([torch.nn.functional.dropout2d(f, p, training=True) for f in features],)

        hook = decoder.register_forward_pre_hook(drop)
        out = []
        try:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                torch.manual_seed(seed)
                for start in range(0, len(images), batch_size):
                    chunk = images[start : start + batch_size]
                    runs = [next(self._probabilities_on_device(chunk, None, None, batch_size)) for _ in range(passes)]
                    out.append(pixel_entropy(torch.stack(runs).mean(dim=0)).flatten(1).mean(dim=1).cpu())
        finally:
            hook.remove()
        return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)

    def predict(self, images: np.ndarray, clicks=None, prev_masks=None, boxes=None) -> np.ndarray:
        """Label maps (B, H, W) uint8."""
        return self.probabilities(images, clicks, prev_masks, boxes=boxes).argmax(axis=1).astype(np.uint8)

    # ---- weights IO ------------------------------------------------------------------------------------------
    def describe(self, **extra) -> dict:
        meta = {
            "format": MODEL_FORMAT,
            "architecture": {"library": "segmentation_models_pytorch", "name": "Unet", "encoder": self.config.encoder},
            "model_config": self.config.to_dict(),
            "classes": ["background", *self.config.classes],
            "input_encoding": {
                "channels": ["image"]
                + [f"pos_{c}" for c in self.config.classes]
                + [f"neg_{c}" for c in self.config.classes]
                + [f"prev_{c}" for c in self.config.classes]
                + ([f"box_{c}" for c in self.config.classes] if self.config.box_prompts else []),
                "image": "preprocessed by modality: see the preprocessing entry (saim.data.intensity)",
                "clicks": f"{self.config.click_encoding} radius {self.config.radius:g} px",
                "in_channels": self.config.in_channels,
            },
            "created_at": datetime.now(UTC).isoformat(),
        }
        meta.update(self.metadata)
        meta.update(extra)
        return meta

    def to_bytes(self) -> bytes:
        state = {k: v.detach().cpu().contiguous() for k, v in self.network.state_dict().items()}
        return st_save(state)

    @classmethod
    def from_bytes(cls, weights: bytes, metadata: dict, device: str = "cpu") -> InteractivePredictor:
        if metadata.get("format") != MODEL_FORMAT:
            raise InvalidInput(f"unknown model format {metadata.get('format')!r}")
        config = ModelConfig.from_dict({**metadata["model_config"], "encoder_weights": None})
        predictor = cls(config, device=device)
        predictor.network.load_state_dict(st_load(weights))
        predictor.network.eval()
        predictor.metadata = dict(metadata)
        return predictor

    def save(self, directory: Path | str, **extra) -> dict:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = self.describe(**extra)
        (directory / WEIGHTS_FILE).write_bytes(self.to_bytes())
        (directory / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        return meta

    @classmethod
    def load(cls, directory: Path | str, device: str = "cpu") -> InteractivePredictor:
        directory = Path(directory)
        meta = json.loads((directory / METADATA_FILE).read_text())
        return cls.from_bytes((directory / WEIGHTS_FILE).read_bytes(), meta, device=device)
