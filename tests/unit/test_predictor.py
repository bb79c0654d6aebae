import json

import numpy as np
import pytest

from saim.errors import InvalidInput
from saim.model.encoding import Click
from saim.model.predictor import InteractivePredictor


def test_probabilities_are_a_distribution_over_background_and_classes(tiny_model_config):
    p = InteractivePredictor(tiny_model_config)
    probs = p.probabilities(np.random.default_rng(0).random((3, 32, 32)).astype(np.float32))
    assert probs.shape == (3, 3, 32, 32)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_clicks_and_previous_mask_change_the_answer(tiny_model_config):
    p = InteractivePredictor(tiny_model_config)
    img = np.random.default_rng(0).random((1, 32, 32)).astype(np.float32)
    base = p.probabilities(img)
    clicked = p.probabilities(img, [[Click(1, 10, 10, True)]])
    prev = np.zeros((1, 32, 32), np.uint8)
    prev[0, 5:15, 5:15] = 2
    remembered = p.probabilities(img, None, prev)
    assert not np.allclose(base, clicked) and not np.allclose(base, remembered)


def test_bad_clicks_and_images_are_invalid_input(tiny_model_config):
    p = InteractivePredictor(tiny_model_config)
    img = np.zeros((1, 32, 32), np.float32)
    with pytest.raises(InvalidInput, match="not a foreground class"):
        p.probabilities(img, [[Click(3, 1, 1, True)]])
    with pytest.raises(InvalidInput, match="outside the 32x32 slice"):
        p.probabilities(img, [[Click(1, 32, 0, True)]])
    with pytest.raises(InvalidInput, match=r"images must be \(B, 32, 32\)"):
        p.probabilities(np.zeros((1, 16, 16), np.float32))


def test_save_load_round_trip_describes_itself(tmp_path, tiny_model_config):
    p = InteractivePredictor(tiny_model_config)
    meta = p.save(tmp_path / "m", training_set=["c1", "c2"], metrics={"val_miou": 0.5})
    on_disk = json.loads((tmp_path / "m" / "metadata.json").read_text())
    assert on_disk == meta
    assert meta["architecture"] == {"library": "segmentation_models_pytorch", "name": "Unet", "encoder": "resnet18"}
    assert meta["classes"] == ["background", "a", "b"] and meta["input_encoding"]["in_channels"] == 9  # with boxes
    assert meta["model_config"]["image_size"] == 32 and meta["training_set"] == ["c1", "c2"]
    q = InteractivePredictor.load(tmp_path / "m")
    img = np.random.default_rng(1).random((2, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(p.probabilities(img), q.probabilities(img), atol=1e-6)
    assert q.metadata["metrics"] == {"val_miou": 0.5}


def test_unknown_model_format_is_rejected(tiny_model_config):
    p = InteractivePredictor(tiny_model_config)
    with pytest.raises(InvalidInput, match="unknown model format"):
        InteractivePredictor.from_bytes(p.to_bytes(), {"format": "other/9"})


IMAGENET_PROBE = """
import sys, torch
from safetensors.torch import load_file
from saim.model.config import ModelConfig
from saim.model.predictor import build_network
net = build_network(ModelConfig(classes=("a", "b"), image_size=32, encoder="resnet18", encoder_weights="imagenet"))
saved = load_file(sys.argv[1])
same = all(torch.equal(net.encoder.state_dict()[k], v) for k, v in saved.items() if not k.startswith("conv1"))
print("loaded" if same else "different")
"""


def test_imagenet_weights_load_through_the_real_path_from_a_local_snapshot(tmp_path):
    """encoder_weights='imagenet' goes through smp's own loader (huggingface_hub download, load_state_dict, first
    conv adapted to our 7 input channels). No network here: a state dict saved locally in the hub cache's layout
    (the revision smp pins) stands in for the download, with the hub offline."""
    import os
    import subprocess
    import sys

    import segmentation_models_pytorch as smp
    from safetensors.torch import save_file
    from segmentation_models_pytorch.encoders import encoders

    pinned = encoders["resnet18"]["pretrained_settings"]["imagenet"]
    snapshot = tmp_path / "hub" / f"models--{pinned['repo_id'].replace('/', '--')}" / "snapshots" / pinned["revision"]
    snapshot.mkdir(parents=True)
    state = smp.encoders.get_encoder("resnet18", in_channels=3, weights=None).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, snapshot / "model.safetensors")
    (snapshot / "config.json").write_text("{}")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    probe = [sys.executable, "-c", IMAGENET_PROBE, str(snapshot / "model.safetensors")]
    out = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "loaded", out.stderr[-2000:]
