"""The browser's click for `make bench`: a person's click -> the overlay painted, timed by the page itself
(web/src/annotate.js records each click's round trip after the second animation frame that follows the new mask),
in Debian's chromium driven by Playwright, through the real gateway to a real annotator servicer.

The selector is a stand-in that hands out the one benchmark case (no loop runs in a benchmark); everything the click
passes -- page, HTTP, gateway, gRPC, annotator, model, mask back, Niivue texture upload, paint -- is the real thing.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time

import grpc
import httpx
import numpy as np
import uvicorn

from saim.stack.local import free_port, wait_port
from services.gateway.server import Backends, create_app
from tests.browser.conftest import CHROMIUM_ARGS, chromium_path
from tests.unit.harness import OneCaseSelector, serve_selector

# the case is open: its session, and the mask of the slice shown (polled on a timer, not on animation frames:
# waiting must not make the page render)
OPENED = "window.saim && saim.state.session && saim.state.masks.has(saim.state.slice)"


@contextlib.contextmanager
def gateway(annotator_port: int, case: str):
    """The gateway app on uvicorn in a thread, over channels to the annotator and the stand-in selector; yields its
    URL."""
    with serve_selector(OneCaseSelector(case, "bench")) as selector_port:
        opts = [("grpc.max_receive_message_length", 64 * 2**20)]
        channels = [grpc.insecure_channel(f"127.0.0.1:{p}", options=opts) for p in (selector_port, annotator_port)]
        port = free_port()
        app = create_app(Backends.over(channels[0], channels[1], channels[0]))
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            wait_port(port, 30)
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            thread.join(10)
            for ch in channels:
                ch.close()


def open_case(pw, url: str):
    """Chromium on the page at `url`, logged in, the case taken (Next case) and on screen: (browser, page, seconds
    from Next case to its first mask)."""
    browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(url + "/")
    page.fill("#token", "bench-token")
    page.click("#login-form button")
    page.wait_for_function("window.saim && window.saim.ready", timeout=60_000)
    t0 = time.perf_counter()
    page.click("#next")
    page.wait_for_function(OPENED, timeout=600_000, polling=100)
    return browser, page, time.perf_counter() - t0


def browser_clicks(
    annotator_port: int,
    case: str,
    shape: tuple[int, int, int],
    clicks: int,
    warmup: int = 3,
    pause_s: float = 0.5,
    reopens: int = 2,
) -> dict:
    """Open the case in the page, then click at voxels of the middle slice, `pause_s` apart (a person's pace), then
    load the page again `reopens` times (each opens the case anew); the page's own timings."""
    from playwright.sync_api import sync_playwright

    with gateway(annotator_port, case) as url:
        with sync_playwright() as pw:
            browser, page, open_s = open_case(pw, url)
            rng = np.random.default_rng(0)
            k = shape[2] // 2
            for n in range(clicks + warmup):
                i, j = (int(v) for v in rng.integers(shape[0] // 4, 3 * shape[0] // 4, 2))
                pos = page.evaluate(f"saim.voxelToClient([{i}, {j}, {k}])")
                page.wait_for_timeout(pause_s * 1000)
                page.mouse.click(pos["x"], pos["y"])
                # polling, not on animation frames: waiting must not make the page render
                page.wait_for_function(f"saim.state.rtt.length > {n}", timeout=120_000, polling=50)
            rtt = page.evaluate("saim.state.rtt")[warmup:]
            sid = page.evaluate("saim.state.session.session_id")
            timings = page.evaluate("saim.state.timings")
            opens, parts = [open_s], [timings]
            for _ in range(reopens):  # the page loaded again: the case opened anew (volume, first mask)
                t0 = time.perf_counter()
                page.reload()
                page.wait_for_function(OPENED, timeout=600_000, polling=100)
                opens.append(time.perf_counter() - t0)
                parts.append(page.evaluate("saim.state.timings"))
            fetch_ms = page.evaluate(  # the page's download alone (inflated by the browser), without the viewer
                """async () => {
                  const t0 = performance.now();
                  const url = `/api/sessions/${saim.state.session.session_id}/volume.nii`;
                  await (await fetch(url, { headers: { Authorization: "Bearer x" } })).arrayBuffer();
                  return performance.now() - t0;
                }"""
            )
            browser.close()
        t0 = time.perf_counter()  # the gateway's share of opening: the volume streamed from GetVolume, as NIfTI
        volume = httpx.get(f"{url}/api/sessions/{sid}/volume.nii", headers={"Authorization": "Bearer x"}, timeout=120)
        volume_s = time.perf_counter() - t0
        volume.raise_for_status()
    painted = [r["rtt_ms"] for r in rtt]
    return {
        "open_s": open_s,
        "open_p50_s": statistics.median(opens),
        # the page's own parts of an open, p50: next case + OpenSession, the volume, the mask layer, the first mask
        "open_parts_s": {k: statistics.median(p[k] for p in parts) / 1000 for k in parts[0]},
        "opens": len(opens),
        "volume_s": volume_s,
        "page_volume_s": timings["volume_ms"] / 1000,  # download + decode + Niivue's load (includes volume_s)
        "page_viewer_s": timings["viewer_ms"] / 1000,
        "volume_mib": volume.num_bytes_downloaded / 2**20,  # on the wire: gzip
        "page_fetch_s": fetch_ms / 1000,
        "painted_p50_ms": statistics.median(painted),
        "painted_p95_ms": float(np.percentile(painted, 95)),
        "server_p50_ms": statistics.median(r["inference_ms"] for r in rtt),
        "http_p50_ms": statistics.median(r["request_ms"] - r["inference_ms"] for r in rtt),
        "page_p50_ms": statistics.median(r["rtt_ms"] - r["request_ms"] for r in rtt),
        "clicks": len(rtt),
        "pause_s": pause_s,
    }
