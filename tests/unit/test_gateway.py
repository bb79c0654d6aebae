"""The HTTP gateway over a real annotator servicer: the volume a viewer loads is the scan (source voxels, source
affine), and a second gateway replica serves a session it did not open (GetSession)."""

import base64
import gzip
import zlib

import grpc
import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient

from saim.data.splits import make_splits
from saim.model.config import ModelConfig
from saim.storage.pool import import_dataset
from services.gateway.server import Backends, create_app
from tests.unit.echo import echo_predictor, oblique_affine
from tests.unit.fakes import MemoryStore
from tests.unit.harness import OneCaseSelector, serve_annotator, serve_selector
from tests.unit.test_scan_space import INFO, SHAPE, _volume, dataset  # noqa: F401  (the fixture)

AUTH = {"Authorization": "Bearer any"}  # the servicers run without auth here: the token travels, nobody checks it


def test_a_second_replica_serves_the_volume_and_edits_of_a_session_it_did_not_open(dataset, tmp_path):  # noqa: F811
    store = MemoryStore()
    import_dataset(store, dataset, make_splits(dataset.cases, 0, unlabelled=dataset.unlabelled))
    echo = echo_predictor(ModelConfig(classes=INFO.classes, image_size=32, click_radius=1))
    web = tmp_path / "web"
    (web / "assets").mkdir(parents=True)
    (web / "index.html").write_text("<html>saim</html>")
    with serve_annotator(store, echo, 32, publish=False) as (port, _), serve_selector(OneCaseSelector("u6")) as sel:
        channels = [grpc.insecure_channel(f"127.0.0.1:{p}") for p in (sel, port, sel)]
        one, two = (TestClient(create_app(Backends.over(*channels), web)) for _ in range(2))
        case = one.post("/api/next", headers=AUTH).json()
        opened = one.post("/api/sessions", headers=AUTH, json={"case_id": case["case_id"], "lease_id": "x"}).json()
        sid = opened["session_id"]

        volume = two.get(f"/api/sessions/{sid}/volume.nii", headers=AUTH)  # Accept-Encoding: gzip, inflated here
        assert volume.status_code == 200, volume.text
        assert volume.headers["content-encoding"] == "gzip"
        img = nib.Nifti1Image.from_bytes(volume.content)
        np.testing.assert_array_equal(np.asanyarray(img.dataobj), _volume(6)[0])  # the source voxels, unchanged
        np.testing.assert_allclose(img.affine, oblique_affine(), atol=1e-5)
        assert img.shape == SHAPE

        stroke = np.zeros(SHAPE[:2], np.uint8)
        stroke[2:5, 3:6] = 1
        painted = base64.b64encode(zlib.compress(stroke.tobytes())).decode()
        edit = two.post(
            f"/api/sessions/{sid}/edits", headers=AUTH, json={"slice": 2, "class_index": 2, "painted": painted}
        )
        assert edit.status_code == 200, edit.text
        mask = np.frombuffer(zlib.decompress(base64.b64decode(edit.json()["mask"])), np.uint8).reshape(SHAPE[:2])
        assert (mask[2:5, 3:6] == 2).all() and edit.json()["edits"] == 1
        assert one.get("/").text == "<html>saim</html>" and one.get("/readyz").status_code == 200
        assert two.get("/api/sessions/nope/volume.nii", headers=AUTH).status_code == 404
        plain = two.get(f"/api/sessions/{sid}/volume.nii", headers={**AUTH, "Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers and plain.content == volume.content
        for ch in channels:
            ch.close()


def test_the_streamed_volume_is_the_scan_along_any_slice_axis():
    """NIfTI keeps i fastest: slices along k are written as they arrive, along i or j gathered first; either way the
    file is the scan, with the header nibabel writes."""
    from saim.v1 import annotator_pb2
    from services.gateway.server import ApiError, volume_nifti

    rng = np.random.default_rng(0)
    volume = rng.integers(-1000, 1000, (5, 6, 7)).astype(np.int16)
    affine = oblique_affine()
    for axis in (0, 1, 2):
        planes = np.moveaxis(volume, axis, 0)  # (slices, rows, cols): the other axes in increasing order
        chunks = [
            annotator_pb2.VolumeChunk(
                first_slice=first,
                num_slices=len(planes[first : first + 2]),
                image_dtype="int16",
                encoding=annotator_pb2.ENCODING_ZLIB,
                data=zlib.compress(np.ascontiguousarray(planes[first : first + 2]).tobytes()),
            )
            for first in range(0, len(planes), 2)
        ]
        rows, cols = planes.shape[1:]
        geometry = {
            "shape": volume.shape,
            "slice_axis": axis,
            "rows": rows,
            "cols": cols,
            "num_slices": len(planes),
            "affine": affine.ravel(),
        }
        data = gzip.decompress(b"".join(volume_nifti(iter(chunks), geometry)))
        assert b"".join(volume_nifti(iter(chunks), geometry, gzip=False)) == data  # the same file, not compressed
        img = nib.Nifti1Image.from_bytes(data)
        np.testing.assert_array_equal(np.asanyarray(img.dataobj), volume)
        np.testing.assert_allclose(img.affine, affine, atol=1e-5)
        expected = nib.Nifti1Image(volume, affine)
        expected.header.set_xyzt_units("mm")
        assert data[:352] == expected.to_bytes()[:352]  # the header nibabel writes for the same volume
        with pytest.raises(ApiError, match="sent 4 slices"):  # a stream that ends early is not a scan
            b"".join(volume_nifti(iter(chunks[:2]), geometry))


def test_a_sessions_calls_stay_on_one_replica_and_move_when_it_dies(dataset, tmp_path):  # noqa: F811
    """Two gateways over two annotator replicas (as the pods' DNS names them): every call of a session reaches the
    replica it was opened on, from either gateway (no rebuild, one copy in memory). Then that replica stores a click
    and dies before it answers; the gateway tries the other, which rebuilds the session and answers the stored click
    without applying it twice: every click is answered exactly once."""
    import threading

    from saim.annotation.drafts import DraftStore
    from saim.rpc import telemetry
    from saim.rpc.replicas import Replicas

    store = MemoryStore()
    import_dataset(store, dataset, make_splits(dataset.cases, 0, unlabelled=dataset.unlabelled))
    echo = echo_predictor(ModelConfig(classes=INFO.classes, image_size=32, click_radius=1))
    with (
        serve_annotator(store, echo, 32, publish=False) as (port_a, deps_a),
        serve_annotator(store, echo, 32, publish=False) as (port_b, deps_b),
        serve_selector(OneCaseSelector("u6")) as sel,
    ):
        dying = threading.Event()

        class DiesAfterStoring(DraftStore):
            """The first replica to store a click once `dying` is set dies before it answers."""

            def __init__(self, deps):
                super().__init__(store)
                self.deps = deps

            def save(self, session, index):
                saved = super().save(session, index)
                if dying.is_set():  # the answer is returned only once the server is gone: it never arrives
                    dying.clear()
                    assert self.deps.stop_server().wait(10)
                return saved

        for deps in (deps_a, deps_b):
            deps.drafts = DiesAfterStoring(deps)
        target = f"ipv4:127.0.0.1:{port_a},127.0.0.1:{port_b}"
        selector = grpc.insecure_channel(f"127.0.0.1:{sel}")
        gateways = [
            TestClient(
                create_app(Backends.over(selector, Replicas(target, grpc.insecure_channel), selector, 20), tmp_path)
            )
            for _ in range(2)
        ]
        opened = gateways[0].post("/api/sessions", headers=AUTH, json={"case_id": "u6", "lease_id": "x"}).json()
        sid = opened["session_id"]
        other = deps_b if deps_a.sessions.open(sid) else deps_a  # the replica the session is not on
        rebuilt = telemetry.SESSIONS_REBUILT._value.get()
        answers = []
        for n in range(12):
            if n == 6:  # the next click is stored by the session's replica, which dies before answering it
                assert not other.sessions.open(sid) and telemetry.SESSIONS_REBUILT._value.get() == rebuilt
                dying.set()
            reply = gateways[n % 2].post(
                f"/api/sessions/{sid}/clicks", headers=AUTH, json={"voxel": [10 + n, 20, 3], "class_index": 1}
            )
            assert reply.status_code == 200, reply.text
            answers.append(reply.json()["clicks"])
        assert answers == list(range(1, 13))  # each click once, none lost, none twice
        assert other.sessions.open(sid) and telemetry.SESSIONS_REBUILT._value.get() == rebuilt + 1
        submitted = gateways[1].post(
            f"/api/sessions/{sid}/submit", headers=AUTH, json={"submission_id": "after-failover"}
        )
        assert submitted.status_code == 200, submitted.text
        assert store.get_json(submitted.json()["provenance_key"])["num_clicks"] == 12
        selector.close()
