"""The HTTP gateway over a real annotator servicer: the volume a viewer loads is the scan (source voxels, source
affine), and a second gateway replica serves a session it did not open (GetSession)."""

import base64
import gzip
import zlib

import grpc
import nibabel as nib
import numpy as np
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

        volume = two.get(f"/api/sessions/{sid}/volume.nii.gz", headers=AUTH)
        assert volume.status_code == 200, volume.text
        img = nib.Nifti1Image.from_bytes(gzip.decompress(volume.content))
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
        assert two.get("/api/sessions/nope/volume.nii.gz", headers=AUTH).status_code == 404
        for ch in channels:
            ch.close()
