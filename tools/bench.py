"""make bench: click latency and training-step cost of saim against the bare model, at the same size.

Prints absolute medians and ratios to the bare smp Unet forward (batch 1). Never run by the tests; no thresholds.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import grpc
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "unit"))

from fakes import MemoryStore  # noqa: E402

from saim.config import ModelConfig, TrainConfig  # noqa: E402
from saim.data import phantom  # noqa: E402
from saim.data.dataset import NnUNetDataset  # noqa: E402
from saim.live_model import LiveModel  # noqa: E402
from saim.model.encoding import Click, encode  # noqa: E402
from saim.model.predictor import InteractivePredictor  # noqa: E402
from saim.model.training import train_step  # noqa: E402
from saim.pool import PoolStore, Splits, import_dataset  # noqa: E402
from saim.session import SessionStore  # noqa: E402
from saim.storage import ModelRegistry  # noqa: E402
from saim.v1 import annotator_pb2, annotator_pb2_grpc  # noqa: E402


def timed(fn, repeat: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1000


class _NoEvents:
    def publish(self, *a, **k):
        pass

    def close(self):
        pass


@contextlib.contextmanager
def annotator_stub(store, predictor: InteractivePredictor, size: int, max_slices: int | None):
    """A stub of a real annotator servicer over loopback gRPC, serving `predictor` from `store` (no Kafka, no
    selector: leases are not checked)."""
    from saim.rpc.peers import LeaseChecker
    from saim.rpc.server import Health, create_server
    from services.annotator.server import AnnotatorDeps, AnnotatorServicer

    registry = ModelRegistry(store)
    registry.publish(predictor, iteration=0)
    live = LiveModel(registry, str(predictor.device))
    live.load_current()
    deps = AnnotatorDeps(PoolStore(store, size, max_slices), live, SessionStore(3600), _NoEvents(), LeaseChecker(None))
    server, port = create_server(
        "annotator",
        "saim.v1.AnnotatorService",
        lambda srv: annotator_pb2_grpc.add_AnnotatorServiceServicer_to_server(AnnotatorServicer(deps), srv),
        Health("x"),
        SimpleNamespace(grpc_host="127.0.0.1", grpc_port=0, max_message_mb=64),
    )
    server.start()
    try:
        with grpc.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 64 * 2**20)]
        ) as channel:
            yield annotator_pb2_grpc.AnnotatorServiceStub(channel)
    finally:
        server.stop(0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--encoder", default="resnet34")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the annotator's default budget is 1)")
    ap.add_argument("--repeat", type=int, default=50)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    mc = ModelConfig(classes=phantom.CLASSES, image_size=args.size, encoder=args.encoder)
    predictor = InteractivePredictor(mc)
    net = predictor.network
    s, k = args.size, mc.num_classes
    x = torch.randn(1, mc.in_channels, s, s)
    with torch.no_grad():
        bare = timed(lambda: net(x), args.repeat)
    img = np.random.default_rng(0).random((1, s, s)).astype(np.float32)
    prev = np.zeros((1, s, s), np.uint8)
    clicks = [[Click(1, s // 2, s // 2, True), Click(2, s // 4, s // 4, False), Click(3, s // 3, s // 2, True)]]
    pred = timed(lambda: predictor.predict(img, clicks, prev), args.repeat)

    # in-process session and a real gRPC round trip to the annotator servicer (store in memory, no Kafka)
    store = MemoryStore()
    ds = NnUNetDataset(phantom.generate(Path("/tmp/saim-bench-ds"), num_series=4, depth=8, size=96, seed=0))
    import_dataset(store, ds, Splits((ds.cases[0],), (ds.cases[1],), (ds.cases[2],), (ds.cases[3],)))
    with annotator_stub(store, predictor, s, 8) as stub:
        opened = stub.OpenSession(annotator_pb2.OpenSessionRequest(case_id=ds.cases[3], annotator_id="bench"))
        req = annotator_pb2.AddClickRequest(
            session_id=opened.session_id, slice=0, class_index=1, y=s // 2, x=s // 2, positive=True
        )
        rpc = timed(lambda: stub.AddClick(req), args.repeat)
        open_ms = timed(
            lambda: stub.OpenSession(annotator_pb2.OpenSessionRequest(case_id=ds.cases[3], annotator_id="bench")), 5, 1
        )

    # training step: bare forward+backward vs saim's (train_step: augmentation, simulated click rounds, focal + Dice)
    b = 8
    images = torch.rand(b, 1, s, s)
    labels = torch.randint(0, k + 1, (b, s, s))
    tc = TrainConfig()
    weights = torch.ones(k + 1)
    gen = torch.Generator().manual_seed(0)
    net.train()
    opt = torch.optim.AdamW(net.parameters(), 1e-4)

    def bare_step():
        loss = torch.nn.functional.cross_entropy(net(encode(images, *(torch.zeros(b, k, s, s),) * 3)), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def saim_step():
        train_step(net, opt, images, labels, weights, mc, tc, gen, hflip=False)

    bare_train = timed(bare_step, 10, 2)
    saim_train = timed(saim_step, 10, 2)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    params = sum(p.numel() for p in net.parameters()) * 4 / 2**20
    print(f"saim bench: {args.encoder} Unet, {s}x{s}, {mc.in_channels} input channels, torch threads {args.threads}")
    print(f"{'measure':50s} {'median ms':>10s} {'x bare':>8s}")
    rows = [
        ("bare model forward (batch 1)", bare),
        ("InteractivePredictor.predict (3 clicks + memory)", pred),
        ("gRPC AddClick round trip (in-process server)", rpc),
    ]
    for name, ms in rows:
        print(f"{name:50s} {ms:10.1f} {ms / bare:8.2f}")
    print(f"{'gRPC OpenSession, 8 slices (auto prediction)':50s} {open_ms:10.1f} {open_ms / bare:8.2f}")
    print(f"{'bare train step (batch 8, CE)':50s} {bare_train:10.1f} {'1.00':>8s}")
    print(f"{'saim train step (train_step)':50s} {saim_train:10.1f} {saim_train / bare_train:8.2f}")
    print(f"weights {params:.1f} MiB; peak RSS of this process {rss:.0f} MiB")


if __name__ == "__main__":
    main()
