"""Propagation through the gateway, as the page calls it: a corrected slice's mask carried by the model to its
neighbours until the structure ends, a slice the person touched, the scan's edge or the limit; each slice an
operation of its own (undo, drafts, retries, another replica) and in the provenance."""

import base64
import zlib
from dataclasses import replace

import grpc
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from saim.annotation.drafts import DraftStore, decode_slice, encode_slice
from saim.data.dataset import NnUNetDataset, write_dataset
from saim.data.nifti import save_volume
from saim.data.splits import make_splits
from saim.model.config import ModelConfig
from saim.model.predictor import InteractivePredictor
from saim.storage.pool import import_dataset
from services.gateway.server import Backends, create_app
from tests.unit.echo import oblique_affine
from tests.unit.fakes import MemoryStore
from tests.unit.harness import OneCaseSelector, serve_annotator, serve_selector
from tests.unit.test_scan_space import INFO, SHAPE

AUTH = {"Authorization": "Bearer any"}
ORGAN = (25, 20)  # in-plane voxel inside the organ, which spans slices 1..3
VESSEL = (33, 35)  # inside the vessel, through every slice


def _volume(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An organ on slices 1..3 brighter than the body around it (with texture), a vessel through every slice."""
    rng = np.random.default_rng(seed)
    image = rng.normal(-500, 100, SHAPE)
    label = np.zeros(SHAPE, np.uint8)
    label[15:40, 10:30, 1:4] = 1
    label[30:36, 30:40, :] = 2
    image[label == 1] = rng.normal(100, 15, int((label == 1).sum()))
    image[label == 2] = 250
    return image.astype(np.int16), label


@pytest.fixture
def dataset(tmp_path):
    root = write_dataset(tmp_path / "ds", INFO, {f"c{i}": (*_volume(i), oblique_affine()) for i in range(6)})
    (root / "imagesTs").mkdir()
    save_volume(root / "imagesTs" / "u6_0000.nii.gz", _volume(6)[0], oblique_affine())
    return NnUNetDataset(root)


class FollowsTheImage(torch.nn.Module):
    """A network that keeps the previous mask where the scan is brighter than the body (CT preprocessing clips the
    body to the foreground's lowest values) and follows clicks: a structure carried from slice to slice ends where
    the organ does."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.k = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.k
        image, pos, neg, prev = x[:, :1], x[:, 1 : 1 + k], x[:, 1 + k : 1 + 2 * k], x[:, 1 + 2 * k : 1 + 3 * k]
        bright = image > image.amin(dim=(2, 3), keepdim=True) + 1e-3
        fg = 4 * prev * bright + 10 * pos - 10 * neg
        return torch.cat([torch.full_like(fg[:, :1], 2.0), fg], dim=1)


def _mask(reply: dict) -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(reply["mask"])), np.uint8).reshape(SHAPE[:2])


@pytest.fixture
def gateways(dataset):
    """Two annotator replicas over one bucket (drafts on), each behind its own gateway."""
    store = MemoryStore()
    import_dataset(store, dataset, make_splits(dataset.cases, 0, unlabelled=dataset.unlabelled))
    config = ModelConfig(classes=INFO.classes, image_size=32, click_radius=2, refine_steps=0)
    net = FollowsTheImage(config.num_classes)
    predictor = InteractivePredictor(replace(config, refine_steps=0), network=net)
    with (
        serve_annotator(store, predictor, 32, publish=False) as (one, deps_one),
        serve_annotator(store, predictor, 32, publish=False) as (two, deps_two),
        serve_selector(OneCaseSelector("u6")) as sel,
    ):
        for deps in (deps_one, deps_two):
            deps.drafts = DraftStore(store)
        channels = [grpc.insecure_channel(f"127.0.0.1:{p}") for p in (sel, one, two)]
        clients = [TestClient(create_app(Backends.over(channels[0], ch, channels[0]))) for ch in channels[1:]]
        yield clients, store, (deps_one, deps_two)
        for ch in channels:
            ch.close()


def test_a_slice_is_carried_to_its_neighbours_until_the_organ_ends(gateways):
    (one, two), store, (deps, _) = gateways
    case = one.post("/api/next", headers=AUTH).json()
    sid = one.post("/api/sessions", headers=AUTH, json={"case_id": case["case_id"], "lease_id": "x"}).json()[
        "session_id"
    ]
    path = f"/api/sessions/{sid}"
    nothing = one.post(f"{path}/propagate", headers=AUTH, json={"slice": 2})
    assert nothing.status_code == 400 and "no structure to propagate" in nothing.text  # the automatic answer is empty
    click = one.post(f"{path}/clicks", headers=AUTH, json={"voxel": [*ORGAN, 2], "class_index": 1})
    assert click.status_code == 200 and _mask(click.json())[ORGAN] == 1

    body = {"slice": 2, "request_id": "propagate-0001"}
    reply = one.post(f"{path}/propagate", headers=AUTH, json=body)
    assert reply.status_code == 200, reply.text
    out = reply.json()
    assert [m["slice"] for m in out["masks"]] == [3, 1]  # up first, then down
    assert out["stopped"] == {"up": "vanished", "down": "vanished"}  # slices 0 and 4 are outside the organ
    for m in out["masks"]:
        assert _mask(m)[ORGAN] == 1 and m["clicks"] == 0 and m["edits"] == 0

    again = two.post(f"{path}/propagate", headers=AUTH, json=body)  # a retry, on the other replica
    assert again.status_code == 200 and [m["slice"] for m in again.json()["masks"]] == [3, 1]
    undone = two.post(f"{path}/undo", headers=AUTH, json={"slice": 3})
    assert _mask(undone.json())[ORGAN] == 0  # a propagated slice is taken back like any operation
    redone = one.post(f"{path}/redo", headers=AUTH, json={"slice": 3})  # and redone, on the other replica
    assert redone.status_code == 200 and _mask(redone.json())[ORGAN] == 1
    assert _mask(two.post(f"{path}/undo", headers=AUTH, json={"slice": 3}).json())[ORGAN] == 0
    nothing_to_redo = one.post(f"{path}/redo", headers=AUTH, json={"slice": 4})
    assert nothing_to_redo.status_code == 400 and "nothing undone to redo" in nothing_to_redo.json()["error"]

    vessel = one.post(f"{path}/clicks", headers=AUTH, json={"voxel": [*VESSEL, 4], "class_index": 2})
    assert _mask(vessel.json())[VESSEL] == 2
    down = {"slice": 4, "direction": -1, "class_indices": [2]}
    limited = one.post(f"{path}/propagate", headers=AUTH, json={**down, "max_slices": 1})
    assert limited.status_code == 200, limited.text
    assert [m["slice"] for m in limited.json()["masks"]] == [3] and limited.json()["stopped"] == {"down": "limit"}
    assert _mask(limited.json()["masks"][0])[VESSEL] == 2
    touched = one.post(f"{path}/propagate", headers=AUTH, json=down)  # slice 2 has the person's click
    assert [m["slice"] for m in touched.json()["masks"]] == [3] and touched.json()["stopped"] == {"down": "edited"}
    edge = one.post(f"{path}/propagate", headers=AUTH, json={"slice": 4, "direction": 1})
    assert edge.json() == {"masks": [], "stopped": {"up": "edge"}}

    bad = [
        ({"slice": 2, "direction": 2}, "direction: Input should be less than or equal to 1"),
        ({"slice": 2, "class_indices": [9]}, "classes [9] are not foreground classes 1..2"),
        ({"slice": 99}, "slice 99 is outside 0..4"),
    ]
    for request, message in bad:
        refused = one.post(f"{path}/propagate", headers=AUTH, json=request)
        assert refused.status_code == 400 and message in refused.json()["error"]

    session = deps.sessions.get(sid)
    state = session.slices[1]
    assert [op.kind for op in state.ops] == ["propagate"] and state.ops[0].source == 2
    restored = decode_slice(encode_slice(state), SHAPE[:2])  # as another replica reads the draft
    assert restored.ops[0].source == 2 and restored.ops[0].classes == (1,)
    np.testing.assert_array_equal(restored.mask, state.mask)

    submitted = one.post(f"{path}/submit", headers=AUTH, json={"submission_id": "submit-0001"})
    assert submitted.status_code == 200, submitted.text
    provenance = store.get_json(submitted.json()["provenance_key"])
    assert provenance["slices_edited"] == [2, 4] and provenance["slices_propagated"] == [1, 3]
    assert provenance["num_propagated"] == 3  # 1 from 2; 3 from 4, twice (3 from 2 was undone)
    assert [(p["slice"], p["source"], p["classes"]) for p in provenance["propagations"]] == [
        (1, 2, [1]),
        (3, 4, [2]),
        (3, 4, [2]),
    ]
    assert 0 in provenance["slices_accepted_unedited"] and 1 not in provenance["slices_accepted_unedited"]


def _painted(rows: slice, cols: slice) -> str:
    stroke = np.zeros(SHAPE[:2], np.uint8)
    stroke[rows, cols] = 1
    return base64.b64encode(zlib.compress(stroke.tobytes())).decode()


def test_the_slices_between_two_annotated_ones_are_filled(gateways):
    (one, two), store, _ = gateways
    case = one.post("/api/next", headers=AUTH).json()
    sid = one.post("/api/sessions", headers=AUTH, json={"case_id": case["case_id"], "lease_id": "x"}).json()[
        "session_id"
    ]
    path = f"/api/sessions/{sid}"
    lone = one.post(f"{path}/interpolate", headers=AUTH, json={"slice": 2})
    assert lone.status_code == 400
    assert lone.json()["error"].startswith("nothing to fill at slice 2: interpolation needs a slice you clicked")
    # a structure painted on slices 0 and 4, moved 16 columns between them
    for k, cols in ((0, slice(4, 12)), (4, slice(20, 28))):
        edit = one.post(
            f"{path}/edits", headers=AUTH, json={"slice": k, "class_index": 2, "painted": _painted(slice(5, 13), cols)}
        )
        assert edit.status_code == 200, edit.text
    filled = two.post(f"{path}/interpolate", headers=AUTH, json={"slice": 2, "request_id": "interpolate-01"})
    assert filled.status_code == 200, filled.text
    assert filled.json()["gaps"] == [[0, 4]] and [m["slice"] for m in filled.json()["masks"]] == [1, 2, 3]
    centres = []
    for m in filled.json()["masks"]:
        region = _mask(m) == 2
        assert 40 <= region.sum() <= 90  # about the 8 x 8 painted, neither vanished nor smeared
        centres.append(np.argwhere(region).mean(axis=0))
    np.testing.assert_allclose([c[1] for c in centres], [11.5, 15.5, 19.5], atol=1.0)  # a quarter of the way each
    assert all(abs(c[0] - 8.5) < 1.0 for c in centres)

    click = one.post(f"{path}/clicks", headers=AUTH, json={"voxel": [*VESSEL, 2], "class_index": 2})
    assert click.status_code == 200  # slice 2 is the person's now: two gaps on both sides of it
    again = one.post(f"{path}/interpolate", headers=AUTH, json={"slice": 2, "class_indices": [2]})
    assert again.json()["gaps"] == [[0, 2], [2, 4]] and [m["slice"] for m in again.json()["masks"]] == [1, 3]
    undone = one.post(f"{path}/undo", headers=AUTH, json={"slice": 3})
    assert (_mask(undone.json()) == _mask(filled.json()["masks"][2])).all()  # back to the first interpolation
    refused = one.post(f"{path}/interpolate", headers=AUTH, json={"slice": 2, "class_indices": [7]})
    assert refused.status_code == 400 and "classes [7] are not foreground classes 1..2" in refused.json()["error"]

    submitted = one.post(f"{path}/submit", headers=AUTH, json={"submission_id": "submit-0002"})
    provenance = store.get_json(submitted.json()["provenance_key"])
    assert provenance["slices_edited"] == [0, 2, 4] and provenance["slices_interpolated"] == [1, 3]
    assert provenance["num_interpolated"] == 4  # 1, 2 (later clicked), 3, then 1 again; the second 3 undone
    assert {tuple(i["between"]) for i in provenance["interpolations"]} == {(0, 4), (0, 2)}
    assert 1 not in provenance["slices_accepted_unedited"]
