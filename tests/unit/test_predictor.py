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
    assert meta["classes"] == ["background", "a", "b"] and meta["input_encoding"]["in_channels"] == 7
    assert meta["model_config"]["image_size"] == 32 and meta["training_set"] == ["c1", "c2"]
    q = InteractivePredictor.load(tmp_path / "m")
    img = np.random.default_rng(1).random((2, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(p.probabilities(img), q.probabilities(img), atol=1e-6)
    assert q.metadata["metrics"] == {"val_miou": 0.5}


def test_unknown_model_format_is_rejected(tiny_model_config):
    p = InteractivePredictor(tiny_model_config)
    with pytest.raises(InvalidInput, match="unknown model format"):
        InteractivePredictor.from_bytes(p.to_bytes(), {"format": "other/9"})
