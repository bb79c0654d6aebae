"""`saim up`, `saim demo` and `saim serve` subcommands."""

from __future__ import annotations

import json
import signal
import tempfile
import threading
from pathlib import Path


def add_commands(sub) -> None:
    up = sub.add_parser("up", help="start broker, S3 endpoint and the three services locally; Ctrl-C stops them",
                        description="Embedded local stack on loopback with free ports: a Kafka-protocol broker (tansu), "
                        "an S3 endpoint (moto) with the synthetic dataset imported, and the selector, annotator and "
                        "trainer services as separate processes. Prints their addresses once all are SERVING.")
    up.add_argument("--workdir", type=Path, default=None, help="logs and data (default: a temporary directory)")
    up.add_argument("--series", type=int, default=24, help="synthetic series to import")
    up.add_argument("--iterations", type=int, default=3)
    up.add_argument("--seed", type=int, default=0)
    up.set_defaults(func=_cmd_up)

    demo = sub.add_parser("demo", help="the distributed demo: `saim up` plus concurrent virtual annotators",
                          description="Runs the embedded stack and N virtual annotators that drive the selector and "
                          "annotator over gRPC with ground-truth clicks, for K iterations on synthetic phantoms.")
    demo.add_argument("--annotators", type=int, default=3)
    demo.add_argument("--iterations", type=int, default=2)
    demo.add_argument("--series", type=int, default=24)
    demo.add_argument("--clicks", type=int, default=3)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--timeout", type=float, default=900, help="seconds before giving up")
    demo.add_argument("--workdir", type=Path, default=None)
    demo.add_argument("--report", type=Path, default=None)
    demo.set_defaults(func=_cmd_demo)


def _workdir(path: Path | None) -> Path:
    return path if path is not None else Path(tempfile.mkdtemp(prefix="saim-"))


def _cmd_up(args) -> int:
    from saim.data import phantom
    from saim.stack.local import LocalStack

    workdir = _workdir(args.workdir)
    dataset = phantom.generate(workdir / "dataset", num_series=args.series, seed=args.seed)
    stack = LocalStack(workdir / "stack", settings={"SAIM_MAX_ITERATIONS": str(args.iterations), "SAIM_SEED": str(args.seed)},
                       threads={"trainer": 2, "selector": 1, "annotator": 1})
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with stack:
        stack.start_broker()
        stack.start_s3()
        stack.import_dataset(dataset, args.seed)
        stack.start_services()
        print(f"starting; logs in {stack.workdir} (the trainer pre-trains the first model before it is SERVING)")
        stack.wait_serving()
        for name, address in stack.addresses().items():
            print(f"{name:10s} {address}")
        print("environment for clients:")
        for key, value in stack.env().items():
            print(f"  export {key}={value}")
        print("all SERVING; Ctrl-C to stop")
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
        print("stopping ...")
    return 0


def _cmd_demo(args) -> int:
    from saim.stack.demo import run_demo

    workdir = _workdir(args.workdir)
    report = run_demo(workdir, annotators=args.annotators, iterations=args.iterations, series=args.series,
                      seed=args.seed, clicks=args.clicks, timeout_s=args.timeout)
    lat = report["click_latency_ms"]
    print(f"{len(report['model_versions'])} model versions: {', '.join(report['model_versions'])}")
    print(f"events: {report['events']}")
    print(f"click latency (virtual annotators, round trip): median {lat['median']:.1f} ms, p95 {lat['p95']:.1f} ms "
          f"over {lat['count']} clicks")
    print(f"final test mIoU {report['final']['miou']:.3f}; wall {report['wall_seconds']:.0f} s; logs in {workdir}")
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2) + "\n")
        print(f"report: {args.report}")
    return 0
