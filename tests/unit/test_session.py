import time

import numpy as np
import pytest

from saim.data.slices import Series
from saim.errors import InvalidInput, NotFound
from saim.live_model import ServedModel
from saim.model.encoding import Click
from saim.model.predictor import InteractivePredictor
from saim.session import AnnotationSession, SessionStore


@pytest.fixture
def session(tiny_model_config):
    model = ServedModel("v0003", InteractivePredictor(tiny_model_config), {})
    images = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32)
    series = Series("case_1", images, None, np.array([0, 4, 8]), (40, 40, 9))
    return AnnotationSession.open("case_1", "ann", 2, "lease", series, model), model


def test_click_answers_and_undo_restores(session):
    s, model = session
    before = s.slices[1].mask.copy()
    mask = s.add_click(model, 1, Click(1, 10, 10, True))
    assert mask.shape == (32, 32) and len(s.slices[1].clicks) == 1
    s.add_click(model, 1, Click(2, 20, 20, False))
    restored = s.undo(model, 1)
    np.testing.assert_array_equal(restored, mask)
    np.testing.assert_array_equal(s.undo(model, 1), before)


def test_bad_requests_are_invalid_input(session):
    s, model = session
    with pytest.raises(InvalidInput, match="slice 3 is outside 0..2"):
        s.add_click(model, 3, Click(1, 1, 1, True))
    with pytest.raises(InvalidInput, match="no click to undo"):
        s.undo(model, 0)
    with pytest.raises(InvalidInput, match="not a foreground class"):
        s.add_click(model, 0, Click(9, 1, 1, True))


def test_provenance_records_versions_clicks_and_geometry(session):
    s, model = session
    s.add_click(model, 0, Click(1, 5, 6, True))
    newer = ServedModel("v0004", model.predictor, {})
    s.add_click(newer, 2, Click(2, 7, 8, False))
    p = s.provenance(12.5)
    assert p["model_version_opened"] == "v0003" and p["model_versions_used"] == ["v0003", "v0004"]
    assert p["num_clicks"] == 2 and p["clicks"][2] == [{"class": 2, "y": 7, "x": 8, "positive": False}]
    assert p["annotator"] == "ann" and p["iteration"] == 2 and p["slice_index"] == [0, 4, 8]
    assert p["seconds_spent_client"] == 12.5 and p["seconds_spent_server"] >= 0
    assert s.labels().shape == (3, 32, 32) and s.labels().dtype == np.uint8


def test_session_store_expires_idle_sessions(session):
    s, _ = session
    store = SessionStore(ttl_s=0.05)
    store.add(s)
    assert store.get(s.session_id) is s
    s.last_active = time.monotonic() - 1
    with pytest.raises(NotFound, match="unknown or expired session"):
        store.get(s.session_id)
