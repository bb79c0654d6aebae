"""make bench: saim against the bare model at the same size, in one run.

1. Scan space at deployment size: a 512 x 512 x 200 synthetic CT series (int16 HU, 0.7 x 0.7 x 1.5 mm) is opened,
   fetched, clicked, edited and submitted through a real annotator servicer over loopback gRPC, running in its own
   (spawned) process so its peak RSS is the annotator's. Reports click p50/p95 against the bare forward at the model
   size, the largest gRPC message, the annotator's peak RSS, and Submit: right after the clicks, and p50/p95 over
   sessions submitted once the annotator's background prefill has predicted the untouched slices.
2. The browser: the same annotator servicer behind the real HTTP gateway, the annotator page in Debian's chromium
   (Playwright); a click -> the overlay painted, as the page times it, and the case opened in the page (p50 over
   3 opens) (tools/bench_browser.py). --no-browser skips it. The gateway's own memory while it streams a
   512 x 512 x 600 CT (tools/bench_gateway.py).
3. Test-time click refinement (saim.model.refine, --refine-steps): a predictor call with one positive click on a
   pixel the randomly initialised network's automatic answer gives another class, with and without refinement (it
   runs only if the network's answer ignores the click, until it follows it, at most that many steps).
4. The training step at 512² (--train-size): saim's train_step against a bare forward+backward with the same
   optimizer, and a profile of saim's step (tools/step_profile.py).

Prints absolute medians and ratios to the bare smp Unet forward (batch 1). Never run by the tests; no thresholds.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.bench_gateway import gateway_memory  # noqa: E402
from tools.step_profile import print_profile, step_profile  # noqa: E402

from saim.annotation.drafts import DraftStore  # noqa: E402
from saim.data import phantom  # noqa: E402
from saim.data.intensity import fit_intensity  # noqa: E402
from saim.data.nifti import volume_to_bytes  # noqa: E402
from saim.data.splits import Splits  # noqa: E402
from saim.model.compute import TensorThread  # noqa: E402
from saim.model.config import ModelConfig  # noqa: E402
from saim.model.encoding import Click  # noqa: E402
from saim.model.predictor import InteractivePredictor  # noqa: E402
from saim.rpc.wire import decode_mask, encode_mask  # noqa: E402
from saim.storage.pool import DATASET_JSON, PREPROCESSING_JSON, SPLITS_JSON, image_key  # noqa: E402
from saim.v1 import annotator_pb2, annotator_pb2_grpc  # noqa: E402
from tests.unit.fakes import MemoryStore  # noqa: E402
from tests.unit.harness import serve_annotator  # noqa: E402

CT_SHAPE, CT_SPACING = (512, 512, 200), (0.7, 0.7, 1.5)


def timed(fn, repeat: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1000


def ct_store(shape=CT_SHAPE, spacing=CT_SPACING, case: str = "ct_0000") -> tuple[MemoryStore, str]:
    """An object store with one imported CT series in the pool (CT preprocessing fitted on its own label)."""
    image, label = phantom.make_ct(shape)
    store = MemoryStore()
    store.put_bytes(image_key(case), volume_to_bytes(image, np.diag([*spacing, 1.0])))
    intensity = fit_intensity({"0": "CT"}, [(image, label)])
    store.put_json(PREPROCESSING_JSON, intensity.to_json())
    store.put_json(SPLITS_JSON, Splits((), (), (), (case,)).to_json())
    labels = {"background": 0, **{c: i + 1 for i, c in enumerate(phantom.CLASSES)}}
    store.put_json(DATASET_JSON, {"name": "bench-ct", "labels": labels, "channel_names": {"0": "CT"}})
    return store, case


def session_bench(stub, case: str, clicks: int, fetches: int, warmup: int = 3) -> dict:
    """OpenSession, GetSlice (image + mask), AddClick at voxels (three per fetched slice), an EditSlice, Submit."""
    largest = {"name": "", "bytes": 0}

    def call(name, method, request):
        reply = method(request)
        for what, msg in ((f"{name} request", request), (f"{name} reply", reply)):
            if msg.ByteSize() > largest["bytes"]:
                largest.update(name=what, bytes=msg.ByteSize())
        return reply

    t0 = time.perf_counter()
    opened = call("OpenSession", stub.OpenSession, annotator_pb2.OpenSessionRequest(case_id=case, annotator_id="b"))
    open_ms = (time.perf_counter() - t0) * 1000
    g = opened.geometry
    sid = opened.session_id
    rng = np.random.default_rng(0)
    fetch_ms = []
    for index in np.linspace(0, g.num_slices - 1, fetches).astype(int):
        t0 = time.perf_counter()
        call("GetSlice", stub.GetSlice, annotator_pb2.GetSliceRequest(session_id=sid, slice=index, include_image=True))
        fetch_ms.append((time.perf_counter() - t0) * 1000)
    click_ms, server_ms = [], []
    k = 0
    for n in range(clicks + warmup):
        i, j = (int(v) for v in rng.integers(g.shape[0] // 4, 3 * g.shape[0] // 4, 2))
        if n % 3 == 0:  # as a person: fetch a slice (image + the model's mask), then click on it a few times
            k = int(rng.integers(g.num_slices // 3, 2 * g.num_slices // 3))
            stub.GetSlice(annotator_pb2.GetSliceRequest(session_id=sid, slice=k, include_image=True))
        request = annotator_pb2.AddClickRequest(
            session_id=sid, class_index=1 + n % 4, positive=True, voxel=annotator_pb2.Voxel(i=i, j=j, k=k)
        )
        t0 = time.perf_counter()
        reply = call("AddClick", stub.AddClick, request)
        if n >= warmup:
            click_ms.append((time.perf_counter() - t0) * 1000)
            server_ms.append(reply.inference_ms)
    mask = decode_mask(reply.mask, (g.rows, g.cols))
    stroke = np.zeros_like(mask)
    stroke[g.rows // 3 : g.rows // 2, g.cols // 3 : g.cols // 2] = 1
    call(
        "EditSlice",
        stub.EditSlice,
        annotator_pb2.EditSliceRequest(
            session_id=sid, slice=reply.mask.slice, class_index=1, painted=encode_mask(reply.mask.slice, stroke)
        ),
    )
    t0 = time.perf_counter()
    call("Submit", stub.Submit, annotator_pb2.SubmitRequest(session_id=sid))
    submit_s = time.perf_counter() - t0
    return {
        "geometry": f"{tuple(g.shape)} slices along axis {g.slice_axis}",
        "open_ms": open_ms,
        "get_slice_p50_ms": statistics.median(fetch_ms),
        "click_p50_ms": statistics.median(click_ms),
        "click_p95_ms": float(np.percentile(click_ms, 95)),
        "click_server_p50_ms": statistics.median(server_ms),
        "click_reply_bytes": reply.ByteSize(),
        "largest_message": largest,
        "submit_s": submit_s,
    }


def submit_bench(stub, case: str, sessions: int, prefilled, wait_s: float = 900.0) -> dict:
    """Submit as a person meets it: open the case, fetch a slice and click, let the annotator predict the untouched
    slices in the background (the prefill; a person works for minutes), then Submit. Over `sessions` sessions."""
    submit_s, prefill_s = [], []
    for _ in range(sessions):
        t0 = time.perf_counter()
        opened = stub.OpenSession(annotator_pb2.OpenSessionRequest(case_id=case, annotator_id="b"))
        g, sid = opened.geometry, opened.session_id
        k = g.num_slices // 2
        stub.GetSlice(annotator_pb2.GetSliceRequest(session_id=sid, slice=k, include_image=True))
        voxel = annotator_pb2.Voxel(i=g.shape[0] // 2, j=g.shape[1] // 2, k=k)
        stub.AddClick(annotator_pb2.AddClickRequest(session_id=sid, class_index=1, positive=True, voxel=voxel))
        while not prefilled(sid):
            if time.perf_counter() - t0 > wait_s:
                raise TimeoutError(f"the prefill of {g.num_slices} slices took more than {wait_s} s")
            time.sleep(0.1)
        prefill_s.append(time.perf_counter() - t0)
        t1 = time.perf_counter()
        stub.Submit(annotator_pb2.SubmitRequest(session_id=sid))
        submit_s.append(time.perf_counter() - t1)
    return {
        "submit_p50_s": statistics.median(submit_s),
        "submit_p95_s": float(np.percentile(submit_s, 95)),
        "prefill_p50_s": statistics.median(prefill_s),
        "sessions": sessions,
    }


def _serve_and_measure(conn, store, case, mc, threads, clicks, fetches, sessions):
    """The child process: the annotator servicer and the gRPC client; then it keeps serving for the browser bench
    (the parent's) until told, and reports the measures and its own peak RSS."""
    compute = None
    try:
        torch.set_num_threads(threads)
        compute = TensorThread(threads)  # as the service: all tensor work of the process on one thread
        predictor = compute.run(InteractivePredictor, mc)
        x = compute.run(torch.randn, 1, mc.in_channels, mc.image_size, mc.image_size)

        @torch.inference_mode()
        def forward():
            return predictor.network(x)

        bare = compute.run(timed, forward, clicks)  # in this process, on the thread that serves, in the same run
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        with serve_annotator(store, predictor, mc.image_size, compute=compute) as (port, deps):
            deps.drafts = DraftStore(store)  # as the service: each click's slice saved (an in-memory store here)
            opts = [("grpc.max_receive_message_length", 64 * 2**20)]
            with grpc.insecure_channel(f"127.0.0.1:{port}", options=opts) as channel:
                stub = annotator_pb2_grpc.AnnotatorServiceStub(channel)
                out = session_bench(stub, case, clicks, fetches)

                def prefilled(sid: str) -> bool:
                    session = deps.sessions.get(sid)
                    with session.lock:
                        return all(session._state(i).auto is not None for i in range(session.geometry.num_slices))

                out.update(submit_bench(stub, case, sessions, prefilled))
            conn.send({"port": port})
            conn.recv()  # the browser bench is done
        out["bare_ms"] = bare
        out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out["rss_at_start_mib"] = rss_before
    except Exception as exc:  # the parent waits for an answer: send the failure
        out = {"error": f"{type(exc).__name__}: {exc}"}
    conn.send(out)
    conn.close()
    if compute is not None:
        compute.close()  # the tensor thread ends before the interpreter does (else: "terminate called" at exit)


def refine_bench(
    mc: ModelConfig, net: torch.nn.Module, steps: int, radius: float, repeat: int = 5, device: str = "cpu"
) -> tuple[float, float]:
    """Median ms of a predictor call (one image, the previous mask, one positive click on a pixel the automatic answer
    gives another class) without and with test-time refinement."""
    s = mc.image_size
    image = np.random.default_rng(0).random((1, s, s)).astype(np.float32)
    plain = InteractivePredictor(replace(mc, refine_steps=0), device=device, network=net)
    refined = InteractivePredictor(replace(mc, refine_steps=steps, refine_radius=radius), device=device, network=net)
    auto = plain.predict(image)
    ys, xs = np.nonzero(auto[0] != 1)
    clicks = [[Click(1, int(ys[len(ys) // 2]), int(xs[len(xs) // 2]), True)]]
    return (
        timed(lambda: plain.probabilities(image, clicks, auto), repeat, warmup=1),
        timed(lambda: refined.probabilities(image, clicks, auto), repeat, warmup=1),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256, help="model size (the deployment default)")
    ap.add_argument("--encoder", default="resnet34")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the model and of the annotator")
    ap.add_argument("--clicks", type=int, default=30)
    ap.add_argument("--fetches", type=int, default=10, help="GetSlice calls (image + mask)")
    ap.add_argument("--submits", type=int, default=5, help="sessions submitted after the background prefill")
    ap.add_argument("--ct-shape", type=int, nargs=3, default=list(CT_SHAPE))
    ap.add_argument("--browser-clicks", type=int, default=15, help="clicks in the page (chromium)")
    ap.add_argument("--no-browser", action="store_true", help="skip the browser bench")
    ap.add_argument("--gateway-slices", type=int, default=600, help="slices of the CT the gateway streams")
    ap.add_argument("--train-size", type=int, default=512, help="model size of the training-step profile")
    ap.add_argument("--train-batch", type=int, default=8, help="slices per training step (TrainConfig's default)")
    ap.add_argument("--train-steps", type=int, default=6, help="timed training steps, bare and saim's each")
    ap.add_argument("--only-train", action="store_true", help="the training-step profile alone")
    ap.add_argument("--refine-steps", type=int, default=20, help="at most this many click-refinement steps")
    ap.add_argument(
        "--refine-radius", type=float, default=0.0, help="the refinement loss's radius (0: the clicked pixel)"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    # the service path without refinement: this randomly initialised network ignores every click, so with it the
    # service rows would time the optimiser; refine_bench below gives its cost
    mc = ModelConfig(classes=phantom.CLASSES, image_size=args.size, encoder=args.encoder, refine_steps=0)
    net = InteractivePredictor(mc).network
    s = args.size
    train_mc = replace(mc, image_size=args.train_size)
    if args.only_train:
        print_profile(
            step_profile(InteractivePredictor(train_mc).network, train_mc, args.train_batch, args.train_steps, "cpu"),
            args.train_size,
        )
        return

    store, case = ct_store(tuple(args.ct_shape))
    ctx = mp.get_context("spawn")  # not fork: OpenMP's thread pool does not survive a fork
    parent, child = ctx.Pipe()
    proc = ctx.Process(
        target=_serve_and_measure,
        args=(child, store, case, mc, args.threads, args.clicks, args.fetches, args.submits),
    )
    proc.start()
    first = parent.recv()
    browser = None
    if "port" in first:
        try:
            if not args.no_browser:
                from tools.bench_browser import browser_clicks

                browser = browser_clicks(first["port"], case, tuple(args.ct_shape), args.browser_clicks)
        finally:
            parent.send("done")
        session = parent.recv()
    else:
        session = first
    proc.join()
    if "error" in session:
        raise SystemExit(f"bench: the annotator process failed: {session['error']}")
    bare = session["bare_ms"]

    plain_click, refined_click = refine_bench(mc, net, args.refine_steps, args.refine_radius)

    # the training step at --train-size: bare forward+backward vs saim's, and where saim's spends its time
    train_net = net if args.train_size == s else InteractivePredictor(train_mc).network
    train = step_profile(train_net, train_mc, args.train_batch, args.train_steps, "cpu")
    params = sum(p.numel() for p in net.parameters()) * 4 / 2**20
    print(
        f"saim bench: {args.encoder} Unet, model {s}x{s}, {mc.in_channels} input channels, torch threads {args.threads}"
    )
    print(f"scan: synthetic CT {session['geometry']}, int16, {CT_SPACING} mm")
    print(f"{'measure':52s} {'median ms':>10s} {'x bare':>8s}")
    rows = [
        ("bare model forward (batch 1, annotator process)", bare),
        ("gRPC AddClick round trip p50 (512x512 mask back)", session["click_p50_ms"]),
        ("gRPC AddClick round trip p95", session["click_p95_ms"]),
        ("AddClick server time p50 (session + model)", session["click_server_p50_ms"]),
        ("gRPC GetSlice p50 (image + mask, first fetch)", session["get_slice_p50_ms"]),
        ("gRPC OpenSession (no prediction up front)", session["open_ms"]),
        ("predictor call with a correcting click (main process)", plain_click),
        (f"  the same with refinement (<= {args.refine_steps} steps, radius {args.refine_radius:g})", refined_click),
    ]
    if browser is not None:
        rows[3:3] = [
            ("browser click -> overlay painted p50 (chromium)", browser["painted_p50_ms"]),
            ("browser click -> overlay painted p95", browser["painted_p95_ms"]),
            ("  of which annotator server time p50", browser["server_p50_ms"]),
            ("  of which HTTP + gateway + gRPC p50", browser["http_p50_ms"]),
            ("  of which page: inflate, mask layer, paint p50", browser["page_p50_ms"]),
        ]
    for name, ms in rows:
        print(f"{name:52s} {ms:10.1f} {ms / bare:8.2f}")
    if browser is not None:
        print(
            f"browser: {browser['clicks']} clicks through the gateway, {browser['pause_s']:.1f} s apart; the page "
            f"opened the case (volume of {args.ct_shape[2]} slices + first mask) in {browser['open_s']:.1f} s, of "
            f"which loading the volume {browser['page_volume_s']:.1f} s (its download into the page alone "
            f"{browser['page_fetch_s']:.1f} s, the gateway's volume route alone {browser['volume_s']:.1f} s, "
            f"{browser['volume_mib']:.0f} MiB gzip on the wire), the mask layer "
            f"{browser['page_viewer_s']:.1f} s; "
            "software WebGL (SwiftShader) on the same 2 cores as the annotator"
        )
    if browser is not None:
        print(
            f"case open in the page ({args.ct_shape[2]} slices: volume + first mask), p50 over {browser['opens']} "
            f"opens: {browser['open_p50_s']:.1f} s ("
            + ", ".join(f"{k.removesuffix('_ms')} {v:.1f} s" for k, v in browser["open_parts_s"].items())
            + "; the rest is the page's own start)"
        )
    memory = gateway_memory(args.gateway_slices)
    print(
        f"gateway streaming a 512x512x{memory['slices']} int16 CT ({memory['raw_mib']:.0f} MiB raw, "
        f"{memory['gzip_mib']:.0f} MiB gzip on the wire) in {memory['seconds']:.1f} s: peak RSS "
        f"{memory['peak_mib']:.0f} MiB, {memory['above_idle_mib']:.0f} MiB above idle"
    )
    print(f"click adds {session['click_p50_ms'] - bare:+.1f} ms at p50 over the bare forward")
    print(
        f"Submit of {args.ct_shape[2]} slices after the background prefill, {session['sessions']} sessions: "
        f"p50 {session['submit_p50_s']:.2f} s, p95 {session['submit_p95_s']:.2f} s (the prefill was done "
        f"{session['prefill_p50_s']:.0f} s after OpenSession, p50)"
    )
    print(f"Submit right after the session's clicks (the prefill still running): {session['submit_s']:.1f} s")
    lm = session["largest_message"]
    print(
        f"largest gRPC message: {lm['name']}, {lm['bytes'] / 1024:.0f} KiB; "
        f"click reply {session['click_reply_bytes'] / 1024:.1f} KiB"
    )
    print(
        f"annotator process peak RSS {session['peak_rss_mib']:.0f} MiB (at start {session['rss_at_start_mib']:.0f} "
        "MiB, the CT in the in-memory store included)"
    )
    print(f"weights {params:.1f} MiB")
    print_profile(train, args.train_size)


if __name__ == "__main__":
    main()
