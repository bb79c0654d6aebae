"""The annotation app for people, end to end: HTTP refusals, a person annotating in chromium, a killed annotator
replica under an open page, and the operator's dashboard after the retrain that the two submissions trigger.

The tests share one stack and run in this order (one batch of two series: alice's and bob's cases).
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import re
import zlib

import httpx
import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from saim.rpc.tokens import TokenRegistry
from saim.storage.pool import annotation_key, provenance_key
from tests.waiting import poll

from .conftest import SHOTS

pytestmark = pytest.mark.timeout(900)


def api(web, method, path, token=None, **kw):
    headers = kw.pop("headers", {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.request(method, web.url + path, headers=headers, timeout=60, **kw)


def error_of(response) -> str:
    body = response.json()
    assert set(body) == {"error"} and body["error"], body
    return body["error"]


# ---- bad input through HTTP ---------------------------------------------------------------------------------------
def test_bad_input_gets_a_clear_4xx_and_stores_nothing(web):
    bob = web.tokens["bob"]
    case = api(web, "POST", "/api/next", bob).json()
    assert "case_id" in case, case
    opened = api(web, "POST", "/api/sessions", bob, json={"case_id": case["case_id"], "lease_id": case["lease_id"]})
    assert opened.status_code == 200, opened.text
    sid = opened.json()["session_id"]
    g = opened.json()["geometry"]
    click, edits = f"/api/sessions/{sid}/clicks", f"/api/sessions/{sid}/edits"
    good_click = {"voxel": [10, 10, 1], "class_index": 1, "positive": True}
    store = web.stack.store()
    TokenRegistry(store).revoke("mallory")
    alice = web.tokens["alice"]

    admin, json_type, plain = web.tokens["admin"], {"Content-Type": "application/json"}, {"Content-Type": "text/plain"}
    wrong_size = base64.b64encode(zlib.compress(b"\x01" * 10)).decode()
    stale = {"case_id": case["case_id"], "lease_id": "0" * 32}
    # (what, method, path, token, request keywords, status, what the message must say)
    cases = [
        ("malformed JSON", "POST", click, bob, {"content": b"{not json", "headers": json_type}, 400, "malformed"),
        ("voxel of the wrong type", "POST", click, bob, {"json": {**good_click, "voxel": "centre"}}, 400, "voxel"),
        ("unknown field", "POST", click, bob, {"json": {**good_click, "colour": "red"}}, 400, "colour"),
        (
            "voxel outside",
            "POST",
            click,
            bob,
            {"json": {**good_click, "voxel": [g["shape"][0] + 5, 1, 1]}},
            400,
            "outside",
        ),
        (
            "negative voxel",
            "POST",
            click,
            bob,
            {"json": {**good_click, "voxel": [-1, 2, 1]}},
            400,
            r"voxel\.0: .*greater than or equal to 0",
        ),
        ("class 0 for a click", "POST", click, bob, {"json": {**good_click, "class_index": 0}}, 400, "class_index"),
        ("class beyond the classes", "POST", click, bob, {"json": {**good_click, "class_index": 9}}, 400, "class"),
        ("no token", "POST", click, None, {"json": good_click}, 401, "Bearer"),
        ("unknown token", "POST", click, "not-a-token", {"json": good_click}, 401, "token"),
        ("basic auth", "GET", "/api/me", None, {"headers": {"Authorization": "Basic Ym9iOmJvYg=="}}, 401, "Bearer"),
        ("another annotator's session", "POST", click, alice, {"json": good_click}, 403, "bob"),
        ("dashboard, not admin", "GET", "/api/dashboard", bob, {}, 403, "admin"),
        ("an expired or unknown lease", "POST", "/api/sessions", bob, {"json": stale}, 409, "expired"),
        (
            "oversized body",
            "POST",
            click,
            bob,
            {"content": b"{" + b" " * 3 * 2**20 + b"}", "headers": json_type},
            413,
            "KiB",
        ),
        (
            "wrong content type",
            "POST",
            click,
            bob,
            {"content": json.dumps(good_click), "headers": plain},
            415,
            "application/json",
        ),
        ("unknown session", "POST", "/api/sessions/feedbeef/clicks", bob, {"json": good_click}, 404, "session"),
        ("slice beyond the scan", "GET", f"/api/sessions/{sid}/slices/{g['num_slices']}", bob, {}, 400, "slice"),
        (
            "stroke not base64",
            "POST",
            edits,
            bob,
            {"json": {"slice": 1, "class_index": 1, "painted": "%%%"}},
            400,
            "base64",
        ),
        (
            "stroke of the wrong size",
            "POST",
            edits,
            bob,
            {"json": {"slice": 1, "class_index": 1, "painted": wrong_size}},
            400,
            "bytes",
        ),
        ("nothing to undo", "POST", f"/api/sessions/{sid}/undo", bob, {"json": {"slice": 1}}, 400, "no click"),
        (
            "box outside the slice",
            "POST",
            f"/api/sessions/{sid}/boxes",
            bob,
            {"json": {"slice": 1, "class_index": 1, "box": [0, 0, g["rows"], 5]}},
            400,
            "not a box within",
        ),
        (
            "box with a missing corner",
            "POST",
            f"/api/sessions/{sid}/boxes",
            bob,
            {"json": {"slice": 1, "class_index": 1, "box": [0, 0, 5]}},
            400,
            "box",
        ),
        ("rollback to no version", "POST", "/api/models/rollback", admin, {"json": {"version": "v0099"}}, 404, "v0099"),
    ]

    for name, method, path, token, kw, status, words in cases:
        r = api(web, method, path, token, **kw)
        assert r.status_code == status, f"{name}: {r.status_code} {r.text}"
        assert re.search(words, error_of(r), re.I), f"{name}: {error_of(r)!r} does not say {words!r}"

    # a revoked token: refused once the services' token table is refreshed
    poll(lambda: api(web, "GET", "/api/me", web.tokens["mallory"]).status_code == 401, 30, "the revocation")
    assert "revoked" in error_of(api(web, "GET", "/api/me", web.tokens["mallory"]))

    # the gateway keeps serving, and nothing was stored
    assert api(web, "GET", "/api/me", bob).json() == {"name": "bob", "role": "annotator"}
    assert api(web, "GET", "/healthz").status_code == 200
    assert api(web, "GET", "/readyz").status_code == 200
    metrics = httpx.get(f"http://127.0.0.1:{web.stack.ports['gateway_metrics']}/metrics", timeout=10).text
    assert 'saim_http_requests_total{route="/api/sessions/*",status="400"}' in metrics  # refusals are counted
    assert not store.exists(annotation_key(case["case_id"]))
    assert not store.list(f"drafts/{case['case_id']}/")


# ---- a person annotating ------------------------------------------------------------------------------------------
def log_in(page, web, who: str, path: str = "/"):
    page.goto(web.url + path)
    page.fill("#token", web.tokens[who])
    page.click("#login-form button")


def take_case(page):
    page.wait_for_function("window.saim && window.saim.ready", timeout=30_000)
    page.click("#next")
    page.wait_for_function("saim.state.session && saim.state.masks.has(saim.state.slice)", timeout=120_000)


def page_mask(page, k: int, shape) -> np.ndarray:
    return np.array(page.evaluate(f"Array.from(saim.state.masks.get({k}))"), np.uint8).reshape(shape)


def canvas_shot(page) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(page.locator("#gl").screenshot())).convert("RGB"), np.int16)


def inner_voxel(label: np.ndarray, value: int, k: int) -> tuple[int, int, int]:
    """The voxel of slice k deepest inside the structure with this label value."""
    depth = ndimage.distance_transform_edt(label[:, :, k] == value)
    i, j = np.unravel_index(int(np.argmax(depth)), depth.shape)
    assert depth[i, j] >= 3, f"label {value} is too small on slice {k}"
    return int(i), int(j), k


def click_voxel(page, voxel, n_before: int, button="left"):
    pos = page.evaluate(f"saim.voxelToClient({list(voxel)})")
    page.mouse.click(pos["x"], pos["y"], button=button)
    page.wait_for_function(f"saim.state.rtt.length > {n_before}", timeout=60_000)


def drag(page, start, end, steps: int, release: bool = True):
    """A left-button drag on the canvas from one voxel to another (brush strokes, boxes, scribbles)."""
    a = page.evaluate(f"saim.voxelToClient({list(start)})")
    b = page.evaluate(f"saim.voxelToClient({list(end)})")
    page.mouse.move(a["x"], a["y"])
    page.mouse.down()
    page.mouse.move(b["x"], b["y"], steps=steps)
    if release:
        page.mouse.up()


def test_a_person_annotates_in_the_browser(web, page):
    log_in(page, web, "alice")
    take_case(page)
    s = page.evaluate("saim.state.session")
    case, g = s["case_id"], s["geometry"]
    shape = (g["rows"], g["cols"])
    image, label, _ = web.dataset.load_case(case)  # label: class indices 0..K
    assert s["model_version"] and g["shape"] == list(image.shape)
    liver, spleen = web.dataset.info.label_values[:2]  # what the stored file holds
    k = int(np.argmax((label == 1).sum(axis=(0, 1))))  # the slice with the most liver
    page.evaluate(f"saim.goToSlice({k})")
    page.wait_for_function(f"saim.state.slice === {k} && saim.state.masks.has({k})", timeout=60_000)
    voxel = inner_voxel(label, 1, k)
    # the page's voxel mapping: plain arrays out (they go into JSON), and both directions inverse to each other, for
    # this LPS scan and for a scan already in RAS (no reorientation)
    ras = "saim.reorientation({permRAS: [1, 2, 3]}).toNative(new Float32Array([1.4, 2.6, 3]))"
    assert page.evaluate(f"JSON.stringify({ras})") == "[1,3,3]"
    round_trip = "(v) => {const f = saim.reorientation(saim.nv.volumes[0]); return f.toRAS(f.toNative(v))}"
    for v in ([0, 0, 0], [5, 17, 3], [95, 2, 5]):
        assert page.evaluate(f"({round_trip})({v})") == v

    # click on the liver: the overlay changes (mask pixel counts from the page state, and the picture)
    before_mask, before_shot = page_mask(page, k, shape), canvas_shot(page)
    click_voxel(page, voxel, 0)
    after_mask, after_shot = page_mask(page, k, shape), canvas_shot(page)
    assert after_mask[voxel[0], voxel[1]] == 1  # the clicked voxel is liver (class 1): a click is never ignored
    assert page.evaluate(f"saim.shownAt({list(voxel)})") == 1  # and the picture shows it there
    assert (after_mask != before_mask).any()
    changed = np.abs(after_shot - before_shot).sum(axis=2) > 30
    assert changed.mean() > 0.0005, f"the picture barely changed ({changed.mean():.5f} of the pixels)"
    assert page.evaluate(f"saim.state.info.get({k}).clicks") == 1
    assert "click" in page.locator("#rtt").inner_text()

    # undo restores the mask as it was
    page.keyboard.press("u")
    page.wait_for_function(f"saim.state.info.get({k}).clicks === 0", timeout=60_000)
    np.testing.assert_array_equal(page_mask(page, k, shape), before_mask)
    page.keyboard.press("Control+y")  # redo brings the click's answer back, undo takes it again
    page.wait_for_function(f"saim.state.info.get({k}).clicks === 1", timeout=60_000)
    np.testing.assert_array_equal(page_mask(page, k, shape), after_mask)
    page.click("#undo")
    page.wait_for_function(f"saim.state.info.get({k}).clicks === 0", timeout=60_000)

    # click again, then a brush stroke of spleen (class 2)
    click_voxel(page, voxel, 1)
    page.keyboard.press("b")
    page.keyboard.press("2")
    page.fill("#radius", "2")
    row, col = voxel[0], voxel[1]
    drag(page, (row, col + 4, k), (row, col + 10, k), steps=10)
    page.wait_for_function(f"saim.state.info.get({k}).edits === 1", timeout=60_000)
    edited = page_mask(page, k, shape)
    assert (edited[row, col + 5 : col + 10] == 2).all()
    assert edited[row, col] == 1
    assert page.evaluate(f"saim.shownAt([{row}, {col + 7}, {k}])") == 2

    # slices by keyboard (each fetched on arrival), zoom, a CT window preset, the lease countdown
    page.keyboard.press("ArrowUp")
    page.wait_for_function(f"saim.state.slice === {k + 1} && saim.state.masks.has({k + 1})", timeout=60_000)
    page.keyboard.press("ArrowDown")
    page.wait_for_function(f"saim.state.slice === {k}", timeout=60_000)
    page.keyboard.press("+")
    assert page.evaluate("saim.nv.scene.pan2Dxyzmm[3]") > 1
    page.click("#zoom-reset")
    page.select_option("#window", "soft")
    assert page.evaluate("[saim.nv.volumes[0].cal_min, saim.nv.volumes[0].cal_max]") == [-160, 240]
    page.select_option("#window", "auto")
    assert re.fullmatch(r"1[0-5]:\d\d", page.locator("#lease").inner_text())

    # reload the page: the draft comes back as it was shown
    page.reload()
    page.wait_for_function(f"saim.state && saim.state.resumed && saim.state.masks.has({k})", timeout=120_000)
    assert page.evaluate("saim.state.resumed") == {"slices": [k], "clicks": 1, "edits": 1}
    np.testing.assert_array_equal(page_mask(page, k, shape), edited)
    assert page.locator("#message").inner_text() == f"resumed your draft: 1 click and 1 edit on slice {k}"
    assert page.evaluate(f"saim.shownAt([{row}, {col + 7}, {k}])") == 2
    assert page.evaluate(f"saim.shownAt({list(voxel)})") == 1
    page.evaluate(f"saim.goToSlice({k})")
    page.wait_for_timeout(300)
    page.screenshot(path=str(SHOTS / "annotator.png"))

    # propagate (P): slice k's liver and spleen carried by the model to the neighbouring slices, each one shown
    page.keyboard.press("p")
    page.wait_for_function("saim.state.propagated.length === 1", timeout=120_000)
    carried = page.evaluate("saim.state.propagated[0]")
    message = page.locator("#message").inner_text()
    assert carried["from"] == k and carried["slices"], message  # the liver goes on above or below the slice
    up = [x for x in carried["slices"] if x > k]
    down = [x for x in carried["slices"] if x < k]
    assert up == list(range(k + 1, k + 1 + len(up))) and down == list(range(k - 1, k - 1 - len(down), -1))
    for x in carried["slices"]:
        assert (page_mask(page, x, shape) == 1).any()  # the structure is there; the page holds what was answered
        assert page.evaluate(f"saim.state.info.get({x}).clicks") == 0
    assert message.startswith(f"propagated slice {k} to {len(carried['slices'])} slices")

    # interpolate (I): a click two slices away, then the slice between them filled from the two
    k2 = next(x for x in (k + 2, k - 2) if 0 <= x < g["num_slices"] and (label[:, :, x] == 1).sum() > 30)
    page.evaluate(f"saim.goToSlice({k2})")
    page.wait_for_function(f"saim.state.slice === {k2} && saim.state.masks.has({k2})", timeout=60_000)
    page.keyboard.press("c")
    click_voxel(page, inner_voxel(label, 1, k2), page.evaluate("saim.state.rtt.length"))
    page.keyboard.press("i")
    page.wait_for_function("saim.state.interpolated.length === 1", timeout=120_000)
    between = (k + k2) // 2
    filled = page.evaluate("saim.state.interpolated[0]")
    assert filled["gaps"] == [[min(k, k2), max(k, k2)]] and filled["slices"] == [between]
    assert (page_mask(page, between, shape) == 1).any() and page.evaluate(f"saim.shownAt({list(voxel)})") == 1
    assert page.locator("#message").inner_text() == f"filled 1 slices between slices {min(k, k2)}–{max(k, k2)}"

    # linked views (V): the three planes and a 3D render around one crosshair; prompts in the acquisition plane only
    acquisition = page.evaluate("saim.nv.opts.sliceType")
    page.keyboard.press("v")
    assert page.evaluate("saim.nv.opts.sliceType") == 3  # Niivue's MULTIPLANAR
    page.wait_for_timeout(300)
    tiles = page.evaluate("saim.nv.screenSlices.map((t) => [t.axCorSag, ...t.leftTopWidthHeight])")
    assert sorted(t[0] for t in tiles) == [0, 1, 2, 4]  # axial, coronal, sagittal, render
    page.screenshot(path=str(SHOTS / "multiplanar.png"))
    clicks = page.evaluate("saim.state.rtt.length")
    rect, dpr = page.evaluate("[saim.nv.canvas.getBoundingClientRect().toJSON(), saim.nv.uiData.dpr || 1]")
    for axis, left, top, width, height in tiles:
        if axis != acquisition:  # another plane or the render: reviewed, never a prompt
            page.mouse.click(rect["x"] + (left + width / 2) / dpr, rect["y"] + (top + height / 2) / dpr)
    page.wait_for_timeout(1000)
    assert page.evaluate("saim.state.rtt.length") == clicks
    click_voxel(page, inner_voxel(label, 1, k2), clicks)  # in the acquisition plane's tile: a click as before
    page.keyboard.press("v")
    assert page.evaluate("saim.nv.opts.sliceType") == acquisition

    # outlines (O) and a class hidden: the picture changes, the masks do not
    shown = canvas_shot(page)
    page.keyboard.press("o")
    assert page.evaluate("saim.nv.drawRimOpacity") == 1
    page.wait_for_timeout(300)
    outlined = canvas_shot(page)
    assert (np.abs(outlined - shown).sum(axis=2) > 30).mean() > 0.0005
    page.keyboard.press("o")
    page.click('#classes input.shown[data-k="1"]')
    assert page.evaluate("Array.from(saim.state.hidden)") == [1]
    page.wait_for_timeout(300)
    assert (np.abs(canvas_shot(page) - shown).sum(axis=2) > 30).mean() > 0.0005
    page.click('#classes input.shown[data-k="1"]')
    assert page.evaluate("saim.state.hidden.size") == 0 and (page_mask(page, k2, shape) == 1).any()

    # a box (X): dragged around a structure of slice k2, the annotator answers the slice with it as the prompt
    cls = 2 if (label[:, :, k2] == 2).sum() > 20 else 1
    rows_in, cols_in = np.nonzero(label[:, :, k2] == cls)
    corners = (int(rows_in.min()), int(cols_in.min()), int(rows_in.max()), int(cols_in.max()))
    page.evaluate("document.activeElement.blur()")  # the class checkbox had the focus: keys go to the page again
    page.keyboard.press("x")
    page.keyboard.press(str(cls))
    assert page.evaluate("saim.state.tool") == "box"
    before_box = page_mask(page, k2, shape)
    drag(page, (corners[0], corners[1], k2), (corners[2], corners[3], k2), steps=8, release=False)
    assert page.locator("#box-preview").is_visible()  # the box is shown while it is dragged
    page.screenshot(path=str(SHOTS / "box.png"))
    page.mouse.up()
    page.wait_for_function("saim.state.boxes.length === 1", timeout=120_000)
    drawn = page.evaluate("saim.state.boxes[0]")
    assert drawn["slice"] == k2 and drawn["cls"] == cls
    assert all(abs(a - b) <= 1 for a, b in zip(drawn["box"], corners, strict=True))  # the voxels under the pointer
    assert page.locator("#message").inner_text().startswith(f"box for {web.dataset.info.classes[cls - 1]}")
    after_box = page_mask(page, k2, shape)
    assert (after_box != before_box).any()  # the slice was answered anew, with the box
    assert not page.locator("#box-preview").is_visible()

    # a scribble (S): dragged along the liver of slice k2, every voxel under it is liver in the answer
    page.keyboard.press("s")
    page.keyboard.press("1")
    r2, c2, _ = inner_voxel(label, 1, k2)
    path = [(r2, c2 - 2), (r2, c2 + 2)]
    drag(page, (*path[0], k2), (*path[1], k2), steps=8)
    page.wait_for_function("saim.state.scribbles.length === 1", timeout=120_000)
    drawn_scribble = page.evaluate("saim.state.scribbles[0]")
    assert drawn_scribble["slice"] == k2 and drawn_scribble["positive"] and drawn_scribble["points"] >= 3
    scribbled = page_mask(page, k2, shape)
    assert (scribbled[r2, c2 - 1 : c2 + 2] == 1).all()

    # a one-voxel eraser stroke (radius 0) across it, three pointer events 3 voxels apart: the line between them is
    # erased too (no gaps), and not a voxel beside it
    page.keyboard.press("e")
    page.fill("#radius", "0")
    drag(page, (r2, c2 - 3, k2), (r2, c2 + 3, k2), steps=2)
    page.wait_for_function(f"saim.state.info.get({k2}).edits === 1", timeout=60_000)
    erased = page_mask(page, k2, shape)
    line = np.zeros(shape, bool)
    line[r2, c2 - 3 : c2 + 4] = True
    assert (erased[line] == 0).all()
    np.testing.assert_array_equal(erased[~line], scribbled[~line])
    page.keyboard.press("c")

    # submit: the annotation is in the bucket in the scan's geometry, with the clicks and the edit in its provenance
    page.click("#submit")
    page.wait_for_function("document.getElementById('message').textContent.startsWith('submitted')", timeout=120_000)
    store = web.stack.store()
    stored = nib.Nifti1Image.from_bytes(gzip.decompress(store.get_bytes(annotation_key(case))))
    src = nib.Nifti1Image.from_bytes(gzip.decompress(store.get_bytes(f"dataset/imagesTr/{case}_0000.nii.gz")))
    labels = np.asanyarray(stored.dataobj)
    assert labels.shape == image.shape and np.allclose(stored.affine, src.affine)
    assert labels[voxel] == liver and (labels[row, col + 5 : col + 10, k] == spleen).all()
    prov = store.get_json(provenance_key(case))
    assert prov["annotator"] == "alice" and prov["num_clicks"] == 3 and prov["num_edits"] == 2  # k, k2 twice
    assert prov["clicks"][0]["voxel"] == list(voxel)
    assert sorted((e["slice"] == k2, e["class"]) for e in prov["edits"]) == [(False, 2), (True, 0)]
    assert next(e["pixels"] for e in prov["edits"] if e["slice"] == k2) == 7  # the one-voxel stroke's line
    assert prov["slices_edited"] == sorted([k, k2]) and prov["slices_interpolated"] == [between]
    assert prov["slices_propagated"] == sorted(set(carried["slices"]) - {k2, between})
    assert prov["num_propagated"] == len(carried["slices"]) and prov["num_interpolated"] == 1
    assert prov["num_boxes"] == 1 and prov["boxes"][0]["box"] == drawn["box"] and prov["boxes"][0]["slice"] == k2
    assert prov["num_scribbles"] == 1 and prov["scribbles"][0]["points"] == drawn_scribble["points"]
    for x in carried["slices"]:
        assert (labels[:, :, x] == liver).any()
    assert not store.list(f"drafts/{case}/")  # the draft went with the submission


def test_a_killed_annotator_loses_no_click_of_an_open_page(web, page):
    log_in(page, web, "bob")
    take_case(page)  # bob's own case from the HTTP test, its lease renewed
    s = page.evaluate("saim.state.session")
    case, g = s["case_id"], s["geometry"]
    _, label, _ = web.dataset.load_case(case)
    k = int(np.argmax((label == 1).sum(axis=(0, 1))))
    page.evaluate(f"saim.goToSlice({k})")
    page.wait_for_function(f"saim.state.slice === {k} && saim.state.masks.has({k})", timeout=60_000)
    first = inner_voxel(label, 1, k)
    second = (first[0] + 2, first[1] + 1, k)
    click_voxel(page, first, 0)
    click_voxel(page, second, 1, button="right")  # a negative click

    # the answer to a click is lost on its way back (the click was applied): the page sends it again, same id
    lost = []

    def lose_first_answer(route):
        if lost:
            return route.continue_()
        lost.append(route.fetch().status)  # the gateway answered; the browser never sees it
        route.abort("connectionreset")

    page.route("**/clicks", lose_first_answer)
    retried = (first[0], first[1] + 2, k)
    click_voxel(page, retried, 2)
    page.unroute("**/clicks")
    assert lost == [200] and page.evaluate(f"saim.state.info.get({k}).clicks") == 3  # applied once, not twice
    shown = page_mask(page, k, (g["rows"], g["cols"]))

    web.stack.kill("annotator")  # kill -9: no shutdown code runs
    web.stack.start_service("annotator")
    web.stack.wait_serving(["annotator"], timeout_s=300)

    third = (first[0] - 2, first[1], k)
    opened = page.evaluate("saim.state.session.session_id")
    click_voxel(page, third, 3)  # the restarted replica rebuilds the session from storage: the click lands on it
    assert page.evaluate("saim.state.session.session_id") == opened  # the page did not even have to reopen the case
    assert page.evaluate(f"saim.state.info.get({k}).clicks") == 4
    assert page_mask(page, k, (g["rows"], g["cols"]))[third[0], third[1]] == 1
    page.keyboard.press("u")  # undo reaches back across the restart: the mask as it was shown before the kill
    page.wait_for_function(f"saim.state.info.get({k}).clicks === 3", timeout=60_000)
    np.testing.assert_array_equal(page_mask(page, k, (g["rows"], g["cols"])), shown)

    # a one-way propagation (] up, [ down, towards the farther end): slice k carried that way only
    way, key = (1, "]") if k < g["num_slices"] / 2 else (-1, "[")
    behind = [x for x in range(g["num_slices"]) if (x - k) * way < 0]
    before = {}
    for x in [*behind, k]:  # each shown once, so the page holds its mask
        page.evaluate(f"saim.goToSlice({x})")
        page.wait_for_function(f"saim.state.slice === {x} && saim.state.masks.has({x})", timeout=60_000)
        before[x] = page_mask(page, x, (g["rows"], g["cols"]))
    page.keyboard.press(key)
    page.wait_for_function("saim.state.propagated.length === 1", timeout=120_000)
    carried = page.evaluate("saim.state.propagated[0]")
    assert carried["from"] == k and carried["direction"] == way
    assert carried["slices"] == [k + way * (i + 1) for i in range(len(carried["slices"]))] and carried["slices"]
    for x in behind:  # nothing written behind it
        np.testing.assert_array_equal(page_mask(page, x, (g["rows"], g["cols"])), before[x])
    page.click("#submit")
    page.wait_for_function("document.getElementById('message').textContent.startsWith('submitted')", timeout=120_000)
    prov = web.stack.store().get_json(provenance_key(case))
    assert prov["num_propagated"] == len(carried["slices"]) and prov["slices_propagated"] == sorted(carried["slices"])
    assert [c["voxel"] for c in prov["clicks"]] == [list(first), list(second), list(retried)]
    assert [c["positive"] for c in prov["clicks"]] == [True, False, True]


# ---- the operator's dashboard -------------------------------------------------------------------------------------
def test_the_dashboard_shows_versions_and_the_curve_after_the_retrain(web, page):
    log_in(page, web, "admin", "/dashboard")
    # both submissions closed the batch: the trainer publishes iteration 1's version. The gate records "promoted"
    # and then moves CURRENT (two writes), so a poll can fall between them: wait for both.
    page.wait_for_function(
        "saim.data && saim.data.models.some((m) => m.version === 'v0001' && m.current)", timeout=300_000, polling=1000
    )
    rows = page.locator("#models tbody tr")
    assert rows.count() == len(page.evaluate("saim.data.models"))
    assert "v0001" in rows.first.inner_text() and "current" in rows.first.inner_text()
    assert page.locator("#chart .point").count() >= 2
    assert len(page.locator("#miou-line").get_attribute("points").split()) >= 2
    data = page.evaluate("saim.data")
    assert data["selector"]["complete"] and data["selector"]["annotated"] == 2
    assert data["selector"]["scoring_slices_per_s"] > 0
    assert {a["annotator_id"] for a in data["selector"]["annotators"]} <= {"alice", "bob"}
    page.screenshot(path=str(SHOTS / "dashboard.png"), full_page=True)

    # roll back from the dashboard
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#models button[data-v='v0000']")
    page.wait_for_function("saim.data.trainer.current_version === 'v0000'", timeout=60_000, polling=500)
    assert "current" in page.locator("#models tr[data-version='v0000']").inner_text()
