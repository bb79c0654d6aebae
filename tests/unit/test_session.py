"""Annotation sessions in scan space: a click at a source voxel lands at that voxel; edits, undo, provenance."""

import threading
import time

import numpy as np
import pytest
import torch

from saim.annotation.session import AnnotationSession, SessionStore
from saim.data.intensity import Intensity
from saim.data.slices import series_from_volume
from saim.errors import InvalidInput, NotFound
from saim.model.clicks import Click
from saim.model.config import ModelConfig
from saim.model.predictor import InteractivePredictor
from saim.registry.live import ServedModel
from tests.unit.echo import echo_predictor, oblique_affine

SHAPE = (70, 50, 6)  # 0.7 x 0.7 x 3 mm, oblique: slices along k


def _session(predictor: InteractivePredictor, version: str = "v0003"):
    rng = np.random.default_rng(0)
    image = rng.normal(100, 20, SHAPE).astype(np.float32)
    affine = oblique_affine()
    series = series_from_volume("case_1", image, affine, None, predictor.config.image_size, Intensity("zscore"))
    model = ServedModel(version, predictor, {})
    return AnnotationSession.open("case_1", "ann", 2, "lease", series, image, affine, model), model


@pytest.fixture
def echo():
    return _session(echo_predictor(ModelConfig(classes=("a", "b"), image_size=32, click_radius=2)))


def test_a_click_at_a_voxel_lands_at_that_voxel(echo):
    s, model = echo
    assert s.geometry.slice_axis == 2 and s.geometry.slice_shape == (70, 50)
    for voxel, cls in [((10, 40, 3), 1), ((60, 3, 0), 2), ((35, 25, 5), 1)]:
        index, mask, _ = s.add_click(model, voxel, cls, True)
        assert index == voxel[2] and mask.shape == (70, 50)
        assert mask[voxel[0], voxel[1]] == cls
        assert s.labels(model)[voxel] == cls  # and the volume that Submit stores has it at (i, j, k)
    assert s.labels(model).shape == SHAPE


def test_edits_stay_on_top_and_undo_restores(echo):
    s, model = echo
    _, clicked, _ = s.add_click(model, (20, 20, 1), 1, True)
    stroke = np.zeros((70, 50), bool)
    stroke[18:23, 18:23] = True
    erased, state = s.edit(model, 1, 0, stroke)
    assert (erased[stroke] == 0).all() and state.count("edit") == 1
    _, after, _ = s.add_click(model, (40, 10, 1), 2, True)  # a later model answer keeps the person's stroke
    assert (after[stroke] == 0).all() and after[40, 10] == 2
    np.testing.assert_array_equal(s.undo(model, 1)[0], erased)
    np.testing.assert_array_equal(s.undo(model, 1)[0], clicked)


def test_redo_applies_again_what_undo_took_back_until_a_new_operation(echo):
    from saim.annotation.drafts import decode_slice, encode_slice

    s, model = echo
    _, clicked, _ = s.add_click(model, (20, 20, 1), 1, True)
    stroke = np.zeros((70, 50), bool)
    stroke[30:35, 30:35] = True
    painted, _ = s.edit(model, 1, 2, stroke)
    s.undo(model, 1)
    s.undo(model, 1)
    again, state = s.redo(model, 1)  # the click first: the last undone comes back first
    np.testing.assert_array_equal(again, clicked)
    assert [op.kind for op in state.ops] == ["click"] and [op.kind for op, _ in state.undone] == ["edit"]
    restored = decode_slice(encode_slice(state), (70, 50))  # another replica reads the draft: redo goes on there
    assert [op.kind for op, _ in restored.undone] == ["edit"]
    np.testing.assert_array_equal(restored.undone[0][1], painted)
    np.testing.assert_array_equal(restored.undone[0][0].painted, stroke)
    np.testing.assert_array_equal(s.redo(model, 1)[0], painted)
    with pytest.raises(InvalidInput, match="nothing undone to redo"):
        s.redo(model, 1)
    s.undo(model, 1)
    s.add_click(model, (40, 10, 1), 2, True)  # a new operation: what was undone is gone
    with pytest.raises(InvalidInput, match="nothing undone to redo"):
        s.redo(model, 1)


def test_bad_requests_are_invalid_input(echo):
    s, model = echo
    with pytest.raises(InvalidInput, match="outside the scan's grid"):
        s.add_click(model, (70, 0, 0), 1, True)
    with pytest.raises(InvalidInput, match="no click or edit to undo"):
        s.undo(model, 0)
    with pytest.raises(InvalidInput, match="not a foreground class"):
        s.add_click(model, (0, 0, 0), 9, True)
    with pytest.raises(InvalidInput, match="slice 6 is outside"):
        s.mask(model, 6)
    with pytest.raises(InvalidInput, match="the slice has"):
        s.edit(model, 0, 1, np.ones((50, 70), bool))
    with pytest.raises(InvalidInput, match="paints no pixel"):
        s.edit(model, 0, 1, np.zeros((70, 50), bool))


def test_provenance_records_versions_clicks_edits_and_unedited_slices(tiny_model_config):
    s, model = _session(InteractivePredictor(tiny_model_config))
    s.add_click(model, (5, 6, 0), 1, True)
    newer = ServedModel("v0004", model.predictor, {})
    s.add_click(newer, (7, 8, 2), 2, False)
    s.edit(newer, 2, 1, np.eye(70, 50, dtype=bool))
    labels = s.labels(newer)
    p = s.provenance(12.5)
    assert p["model_version_opened"] == "v0003" and p["model_versions_used"] == ["v0003", "v0004"]
    assert p["num_clicks"] == 2 and p["num_edits"] == 1
    assert p["clicks"][1] == {"slice": 2, "class": 2, "voxel": [7, 8, 2], "positive": False, "model_version": "v0004"}
    assert p["edits"] == [{"slice": 2, "class": 1, "pixels": 50, "model_version": "v0004"}]
    assert p["slices_edited"] == [0, 2] and p["slices_accepted_unedited"] == [1, 3, 4, 5]
    assert p["accepted_unedited_model_versions"] == ["v0004"]  # predicted at submit by the version then current
    assert p["geometry"]["shape"] == list(SHAPE) and p["geometry"]["slice_axis"] == 2
    assert p["annotator"] == "ann" and p["iteration"] == 2
    assert p["seconds_spent_client"] == 12.5 and p["seconds_spent_server"] >= 0
    assert labels.shape == SHAPE and labels.dtype == np.uint8


def test_session_store_expires_idle_sessions(echo):
    s, _ = echo
    store = SessionStore(ttl_s=0.05)
    store.add(s)
    assert store.get(s.session_id) is s
    s.last_active = time.monotonic() - 1
    with pytest.raises(NotFound, match="unknown or expired session"):
        store.get(s.session_id)


def test_the_prefill_waits_for_its_case_on_screen_and_for_other_cases_opening():
    predictor = echo_predictor(ModelConfig(classes=("a", "b"), image_size=32, click_radius=2))
    (mine, model), (theirs, _) = _session(predictor), _session(predictor)
    store = SessionStore(ttl_s=3600)
    store.add(mine)
    store.add(theirs)
    done: list[int] = []

    def untouched() -> int:
        return sum(mine._state(i).auto is None for i in range(mine.geometry.num_slices))

    thread = threading.Thread(target=lambda: done.append(mine.prefill(model, lambda: False, store.opening)))
    thread.start()
    time.sleep(0.3)
    assert untouched() == SHAPE[2] and store.opening()  # the page still loading this case: nothing predicted
    mine.mask(model, 0)  # the case on screen (its first slice asked for)
    time.sleep(0.3)
    assert untouched() == SHAPE[2] - 1 and store.opening()  # another person's case is opening on the replica
    theirs.add_click(model, (10, 10, 1), 1, True)
    thread.join(10)
    assert done == [SHAPE[2] - 1] and untouched() == 0 and not store.opening()
    theirs.on_screen.clear()
    theirs.opened_at -= 3600  # a client that never asked for a slice holds the prefills for a minute at most
    assert not store.opening()


class _Stubborn(torch.nn.Module):
    """A network that ignores every click: the same class everywhere, whatever the input."""

    def __init__(self, num_classes: int, says: int):
        super().__init__()
        self.k, self.says = num_classes, says

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], self.k + 1, *x.shape[2:])
        logits[:, self.says] = 5.0
        return logits


@pytest.mark.parametrize("says", [0, 1])
def test_a_click_is_never_ignored_even_by_a_network_that_ignores_it(says):
    """The clicked voxel takes a positive click's class and loses a negative click's class, on the model grid and
    at source resolution (anisotropic, oblique), whatever the network answers; its other pixels stay the network's."""
    # refinement off: the guarantee holds without it (and this network has no encoder to refine on)
    config = ModelConfig(classes=("a", "b"), image_size=32, click_radius=2, refine_steps=0)
    predictor = InteractivePredictor(config, network=_Stubborn(2, says))
    s, model = _session(predictor)
    images = s.series.images[:1]
    on_grid = predictor.predict(images, [[Click(2, 7, 9, True), Click(says or 1, 20, 20, False)]])
    assert on_grid[0, 7, 9] == 2 and on_grid[0, 20, 20] not in (says or 1,)
    assert (on_grid[0] == says).sum() >= 32 * 32 - 2
    for voxel in [(13, 41, 3), (0, 0, 0), (69, 49, 5), (36, 24, 2)]:
        _, mask, _ = s.add_click(model, voxel, 2, True)
        assert mask[voxel[0], voxel[1]] == 2
    _, mask, _ = s.add_click(model, (13, 41, 3), 2, False)  # a later negative click at the same voxel wins
    assert mask[13, 41] != 2
    _, mask, _ = s.add_click(model, (50, 10, 3), 1, False)
    assert mask[50, 10] != 1 and mask[13, 41] != 2  # earlier clicks of the slice still hold
    assert s.labels(model)[36, 24, 2] == 2


def test_a_box_answers_its_class_inside_it_stays_for_later_clicks_and_is_a_draft_operation():
    from saim.annotation.drafts import decode_slice, encode_slice
    from tests.unit.echo import box_echo_predictor

    s, model = _session(box_echo_predictor(ModelConfig(classes=("a", "b"), image_size=32, click_radius=2)))
    auto = s.mask(model, 1)[0].copy()
    mask, state = s.add_box(model, 1, 2, (10, 5, 40, 30))
    assert (mask[14:37, 9:27] == 2).all()  # inside the box (the model grid's pixels are ~2.2 source pixels)
    assert not (mask[50:, 35:] == 2).any() and (mask[50:, 35:] == auto[50:, 35:]).all()  # outside it, as before
    _, clicked, state = s.add_click(model, (60, 45, 1), 1, True)
    assert clicked[60, 45] == 1 and (clicked[14:37, 9:27] == 2).all()  # the box stays for the slice's later answers
    assert [op.kind for op in state.ops] == ["box", "click"] and s.touched_by_person(1)
    _, state = s.add_box(model, 1, 2, (50, 30, 60, 40))  # a second box of the class replaces the first as a prompt
    assert state.prompts()[1] == [state.ops[-1].model_box] and state.prompts()[0] == [state.ops[1].model_click]
    s.undo(model, 1)
    restored = decode_slice(encode_slice(state), (70, 50))
    assert restored.ops[0].region == (10, 5, 40, 30) and restored.ops[0].model_box == state.ops[0].model_box
    provenance = s.provenance(None)
    assert provenance["num_boxes"] == 1 and provenance["boxes"][0]["box"] == [10, 5, 40, 30]
    s.undo(model, 1)
    np.testing.assert_array_equal(s.undo(model, 1)[0], auto)
    with pytest.raises(InvalidInput, match="is not a box within the 70x50 slice"):
        s.add_box(model, 1, 2, (10, 5, 70, 30))
    with pytest.raises(InvalidInput, match="box class 3 is not a foreground class"):
        s.add_box(model, 1, 3, (10, 5, 20, 30))


def test_a_model_without_box_prompts_refuses_a_box(echo):
    s, model = echo
    with pytest.raises(InvalidInput, match="trained without box prompts: use clicks"):
        s.add_box(model, 1, 1, (10, 5, 20, 30))


def test_a_scribble_marks_its_path_stays_for_later_clicks_and_is_a_draft_operation(echo):
    from saim.annotation.drafts import decode_slice, encode_slice

    s, model = echo
    path = [(35, c) for c in range(5, 45)]
    mask, state = s.add_scribble(model, 2, 1, True, path)
    assert all(mask[r, c] == 1 for r, c in path)  # the echo model paints each click's disk along it
    assert len(state.ops[0].model_clicks) >= 5 and state.prompts()[0] == list(state.ops[0].model_clicks)
    _, after, state = s.add_click(model, (10, 10, 2), 2, True)
    assert all(after[r, c] == 1 for r, c in path) and after[10, 10] == 2
    restored = decode_slice(encode_slice(state), (70, 50))
    assert restored.ops[0].path == tuple(path) and restored.ops[0].model_clicks == state.ops[0].model_clicks
    provenance = s.provenance(None)
    assert provenance["num_scribbles"] == 1 and provenance["scribbles"][0]["points"] == len(path)
    assert 2 in provenance["slices_edited"]
    removed, _ = s.add_scribble(model, 2, 1, False, [(35, c) for c in range(20, 30)])
    assert all(removed[35, c] != 1 for c in range(20, 30))  # a negative scribble takes its class away on its path
    with pytest.raises(InvalidInput, match="the scribble has no point"):
        s.add_scribble(model, 2, 1, True, [])
    with pytest.raises(InvalidInput, match="the scribble leaves the 70x50 slice"):
        s.add_scribble(model, 2, 1, True, [(69, 49), (70, 49)])
