"""The subcommands that run the embedded stack on this machine or drive a running one: `saim up`, `saim demo`,
`saim drive`."""

from __future__ import annotations

import json
import signal
import tempfile
import threading
from pathlib import Path

from saim.stack.local import EMBEDDED_IMAGE_SIZE

IMAGE_SIZE_HELP = f"model input size of the embedded services (default {EMBEDDED_IMAGE_SIZE}, small for CPUs)"


def add_commands(sub) -> None:
    up = sub.add_parser(
        "up",
        help="start broker, S3 endpoint and the three services locally; Ctrl-C stops them",
        description="Embedded local stack on loopback with free ports: a Kafka-protocol broker (tansu), "
        "an S3 endpoint (moto) with the synthetic dataset imported, and the selector, annotator and "
        "trainer services as separate processes. Prints their addresses once all are SERVING.",
    )
    up.add_argument("--workdir", type=Path, default=None, help="logs and data (default: a temporary directory)")
    up.add_argument("--series", type=int, default=24, help="synthetic series to import")
    up.add_argument("--iterations", type=int, default=3)
    up.add_argument("--seed", type=int, default=0)
    up.add_argument("--tls", action="store_true", help="TLS on every gRPC server (self-signed certificate)")
    up.add_argument("--image-size", type=int, default=EMBEDDED_IMAGE_SIZE, help=IMAGE_SIZE_HELP)
    up.set_defaults(func=_cmd_up)

    demo = sub.add_parser(
        "demo",
        help="the distributed demo: `saim up` plus concurrent virtual annotators",
        description="Runs the embedded stack and N virtual annotators that drive the selector and "
        "annotator over gRPC with ground-truth clicks, for K iterations on synthetic phantoms.",
    )
    demo.add_argument("--annotators", type=int, default=3)
    demo.add_argument("--iterations", type=int, default=2)
    demo.add_argument("--series", type=int, default=24)
    demo.add_argument("--clicks", type=int, default=3)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--timeout", type=float, default=900, help="seconds before giving up")
    demo.add_argument("--workdir", type=Path, default=None)
    demo.add_argument("--report", type=Path, default=None)
    demo.add_argument("--image-size", type=int, default=EMBEDDED_IMAGE_SIZE, help=IMAGE_SIZE_HELP)
    demo.add_argument(
        "--export", type=Path, default=None, metavar="DIR", help="end with `saim export nnunet DIR` of the result"
    )
    demo.add_argument(
        "--next-batch",
        choices=("after_model", "immediate"),
        default="after_model",
        help="SAIM_NEXT_BATCH: batch k+1 opens with batch k's model (the paper) or as soon as batch k is complete",
    )
    demo.set_defaults(func=_cmd_demo)

    drv = sub.add_parser(
        "drive",
        help="run virtual annotators against a running stack (the e2e test of a deployment)",
        description="N virtual annotators take cases from the selector and click on the annotator "
        "with ground truth from --dataset until the loop is complete.",
    )
    drv.add_argument("--annotator", required=True, help="HOST:PORT of the annotator service")
    drv.add_argument("--selector", required=True, help="HOST:PORT of the selector service")
    drv.add_argument("--trainer", required=True, help="HOST:PORT of the trainer service")
    drv.add_argument(
        "--dataset",
        default="synthetic",
        help="ground truth: 'synthetic' (same --series/--seed as bootstrap) or an nnU-Net raw directory",
    )
    drv.add_argument("--series", type=int, default=24)
    drv.add_argument("--seed", type=int, default=0)
    drv.add_argument("--annotators", type=int, default=3)
    drv.add_argument("--clicks", type=int, default=3)
    drv.add_argument("--timeout", type=float, default=1800)
    drv.add_argument("--report", type=Path, default=None)
    drv.set_defaults(func=_cmd_drive)


def _cmd_drive(args) -> int:
    from saim.data.dataset import NnUNetDataset
    from saim.data.sources import dataset_dir
    from saim.settings import load_client_settings
    from saim.stack.demo import drive

    ds = NnUNetDataset(dataset_dir(args.dataset, args.series, args.seed))
    ground_truth = {case: ds.load_case(case)[1] for case in ds.cases}
    client = load_client_settings()  # the admin may act for the virtual annotators
    report = drive(
        args.annotator,
        args.selector,
        args.trainer,
        ground_truth,
        args.annotators,
        args.clicks,
        args.timeout,
        admin_token=client.token(),
        tls_ca=client.tls_ca(),
    )
    print(f"{len(report['model_versions'])} model versions; served model's test mIoU {report['final']['miou']:.3f}")
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def _workdir(path: Path | None) -> Path:
    return path if path is not None else Path(tempfile.mkdtemp(prefix="saim-"))


def _cmd_up(args) -> int:
    from saim.data import phantom
    from saim.stack.local import LocalStack, embedded_model_settings

    workdir = _workdir(args.workdir)
    dataset = phantom.generate(workdir / "dataset", num_series=args.series, seed=args.seed)
    stack = LocalStack(
        workdir / "stack",
        settings={
            "SAIM_MAX_ITERATIONS": str(args.iterations),
            "SAIM_SEED": str(args.seed),
            **embedded_model_settings(args.image_size),
        },
        threads={"trainer": 2, "selector": 1, "annotator": 1},
        tls=args.tls,
    )
    stop = threading.Event()

    def on_signals(handler) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, handler)

    def abort_start(*_) -> None:
        on_signals(lambda *_: stop.set())  # a second signal must not interrupt the clean-up
        raise KeyboardInterrupt  # `with stack` stops whatever has started

    # Handlers set explicitly: a shell starts background jobs with SIGINT ignored, and Python then never raises
    # KeyboardInterrupt, so Ctrl-C / kill -INT would be lost.
    on_signals(abort_start)
    try:
        with stack:
            stack.start_broker()
            stack.start_s3()
            stack.import_dataset(dataset, args.seed)
            stack.start_services()
            print(f"starting; logs in {stack.workdir} (the trainer pre-trains the first model before it is SERVING)")
            stack.wait_serving()
            stack.start_gateway()
            person = stack.write_secret("annotator-token", stack.issue_token("annotator-1"))
            admin = stack.write_secret("admin-token", stack.admin_token)
            for name, address in stack.addresses().items():
                print(f"{name:10s} {address}")
            env_file = stack.workdir / "client.env"
            env_file.touch(mode=0o600)
            env_file.write_text("".join(f"export {k}={v}\n" for k, v in stack.env().items()))
            print("environment for clients (secrets are in the file only):")
            for key, value in stack.env().items():
                print(f"  export {key}={'<secret>' if key.endswith(('_KEY', '_TOKEN')) else value}")
            print(f"  . {env_file}   # admin token, S3 keys; then e.g. saim admin tokens issue alice")
            print(f"annotate in a browser: {stack.url}/  (log in with the token in {person};")
            print(f"  more people: saim admin tokens issue NAME, after . {env_file})")
            print(f"operator dashboard:    {stack.url}/dashboard  (admin token in {admin})")
            print("all SERVING; Ctrl-C to stop")
            on_signals(lambda *_: stop.set())
            stop.wait()
            print("stopping ...")
    except KeyboardInterrupt:
        print("interrupted while starting; everything started is stopped")
        return 130
    return 0


def _cmd_demo(args) -> int:
    from saim.stack.demo import run_demo

    workdir = _workdir(args.workdir)
    report = run_demo(
        workdir,
        annotators=args.annotators,
        iterations=args.iterations,
        series=args.series,
        seed=args.seed,
        clicks=args.clicks,
        timeout_s=args.timeout,
        image_size=args.image_size,
        export_dir=args.export,
        settings={"SAIM_NEXT_BATCH": args.next_batch},
    )
    lat = report["click_latency_ms"]
    print(f"{len(report['model_versions'])} model versions: {', '.join(report['model_versions'])}")
    print(f"events: {report['events']}")
    print(
        f"click latency (virtual annotators, round trip): median {lat['median']:.1f} ms, p95 {lat['p95']:.1f} ms "
        f"over {lat['count']} clicks"
    )
    idle = report["annotator_idle_s"]
    print(
        f"annotators idle, waiting for a case (SAIM_NEXT_BATCH={args.next_batch}): {sum(idle.values()):.0f} s in all "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in sorted(idle.items()))})"
    )
    print(
        f"served model's test mIoU {report['final']['miou']:.3f}; wall {report['wall_seconds']:.0f} s; "
        f"logs in {workdir}"
    )
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2) + "\n")
        print(f"report: {args.report}")
    if args.export:
        print(f"nnU-Net dataset: {args.export} ({report['export']['annotated']} annotated cases)")
    return 0
