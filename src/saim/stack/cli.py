"""The subcommands that run or talk to the distributed stack: `saim up`, `saim demo`, `saim bootstrap`,
`saim drive`, `saim admin ...` and `saim export ...`."""

from __future__ import annotations

import json
import signal
import tempfile
import threading
from pathlib import Path

from saim.argfields import add_fields, from_args
from saim.config import SplitRule
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

    boot = sub.add_parser(
        "bootstrap",
        help="prepare a deployment: bucket (versioned), topics, dataset import",
        description="Uses the SAIM_* environment (as the services do). Idempotent: an already "
        "imported dataset is kept unless --force.",
    )
    boot.add_argument("--dataset", default="synthetic", help="'synthetic' or an nnU-Net raw directory")
    boot.add_argument("--series", type=int, default=24, help="synthetic series")
    boot.add_argument("--seed", type=int, default=0, help="phantom seed and split seed")
    boot.add_argument("--no-topics", action="store_true", help="topics are managed elsewhere (e.g. Strimzi)")
    boot.add_argument("--force", action="store_true", help="re-import even if a dataset is present")
    boot.add_argument(
        "--splits",
        type=Path,
        default=None,
        help="a JSON file fixing the split: {initial, val, test, pool} lists of case names (default: the split "
        "rule below; unlabelled cases go to the pool)",
    )
    add_fields(boot.add_argument_group("split (saim.config.SplitRule)"), SplitRule)
    boot.set_defaults(func=_cmd_bootstrap)

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

    adm = sub.add_parser(
        "admin",
        help="model registry and access administration",
        description="models/rollback call the trainer's gRPC API with the admin token from SAIM_ADMIN_TOKEN "
        "(or the file in SAIM_ADMIN_TOKEN_FILE), over TLS when SAIM_TLS_CA_FILE is set. tokens reads and "
        "writes the token table in object storage with the SAIM_S3_* settings the services use.",
    )
    asub = adm.add_subparsers(dest="admin_cmd", required=True, metavar="COMMAND")
    tok = asub.add_parser("tokens", help="issue, revoke and list bearer tokens (stored hashed in the bucket)")
    tsub = tok.add_subparsers(dest="tokens_cmd", required=True, metavar="ACTION")
    ti = tsub.add_parser("issue", help="issue a token for NAME; printed once, never stored")
    ti.add_argument("name", help="the annotator id (or admin name) the token stands for")
    ti.add_argument("--role", choices=("annotator", "admin"), default="annotator")
    ti.add_argument("--out", type=Path, default=None, help="write the token to this file (0600) instead of stdout")
    ti.set_defaults(func=_cmd_tokens_issue)
    tr = tsub.add_parser("revoke", help="revoke a token by id, or every token of a name")
    tr.add_argument("what", help="token id or principal name")
    tr.set_defaults(func=_cmd_tokens_revoke)
    tl = tsub.add_parser("list", help="list tokens (ids, names, roles, issue/revoke times; never hashes)")
    tl.set_defaults(func=_cmd_tokens_list)
    lm = asub.add_parser("models", help="list model versions with their status and metrics")
    lm.add_argument("--trainer", required=True, help="HOST:PORT of the trainer service")
    lm.set_defaults(func=_cmd_models)
    rb = asub.add_parser("rollback", help="make VERSION current again; annotators and selector follow")
    rb.add_argument("version")
    rb.add_argument("--trainer", required=True, help="HOST:PORT of the trainer service")
    rb.set_defaults(func=_cmd_rollback)
    imp = asub.add_parser(
        "import",
        help="add series to a running deployment's pool",
        description="DIR is an nnU-Net raw directory (imagesTr/ and imagesTs/ entries {case}_0000.nii.gz) or a "
        "folder of {case}.nii.gz files. Each image is validated, uploaded unchanged, and added to the pool in "
        "dataset/splits.json; the selector scores the new series at its next reconcile (SAIM_RECONCILE_S).",
    )
    imp.add_argument("dir", type=Path)
    imp.set_defaults(func=_cmd_import)

    exp = sub.add_parser(
        "export",
        help="write the campaign's result as a dataset for another tool",
        description="Reads the bucket with the SAIM_S3_* settings only (no broker needed).",
    )
    esub = exp.add_subparsers(dest="export_cmd", required=True, metavar="FORMAT")
    nn = esub.add_parser(
        "nnunet",
        help="an nnU-Net v2 raw dataset: images unchanged, labels in the scans' geometry, provenance.csv",
    )
    nn.add_argument("out_dir", type=Path, help="a new or empty directory")
    nn.add_argument("--rater", default=None, help="with overlap > 1: export this rater's copies")
    nn.set_defaults(func=_cmd_export_nnunet)


def _trainer(target: str):
    from saim.rpc.channel import channel
    from saim.settings import load_client_settings
    from saim.v1 import trainer_pb2_grpc

    client = load_client_settings()
    return trainer_pb2_grpc.TrainerServiceStub(channel(target, client.token(), client.tls_ca(), client.tls_server_name))


def _registry():
    from saim.settings import load_storage_settings
    from saim.storage import ObjectStore
    from saim.tokens import TokenRegistry

    return TokenRegistry(ObjectStore.connect(load_storage_settings().s3()))


def _cmd_tokens_issue(args) -> int:
    token_id, token = _registry().issue(args.name, args.role)
    if args.out:
        args.out.touch(mode=0o600)
        args.out.write_text(token + "\n")
        print(f"token {token_id} for {args.role} {args.name!r} written to {args.out}")
    else:
        print(f"token {token_id} for {args.role} {args.name!r} (shown once; only its hash is stored):")
        print(token)
    return 0


def _cmd_tokens_revoke(args) -> int:
    ids = _registry().revoke(args.what)
    print(f"revoked {', '.join(ids)} (services stop accepting within their refresh interval)")
    return 0


def _cmd_tokens_list(args) -> int:
    for t in _registry().list():
        state = f"revoked {t['revoked']}" if t["revoked"] else "live"
        print(f"{t['id']}  {t['role']:9s} {t['name']:20s} issued {t['issued']}  {state}")
    return 0


def _cmd_models(args) -> int:
    from saim.v1 import trainer_pb2

    for mv in _trainer(args.trainer).ListModels(trainer_pb2.ListModelsRequest(), timeout=30).models:
        mark = "*" if mv.current else " "
        val, test = mv.metrics.get("val_miou", float("nan")), mv.metrics.get("test_miou", float("nan"))
        print(
            f"{mark} {mv.version}  iteration {mv.iteration}  {mv.status:9s} val mIoU {val:.3f}  test mIoU {test:.3f}  "
            f"{mv.training_series} series  parent {mv.parent_version or '-'}"
        )
    return 0


def _cmd_rollback(args) -> int:
    from saim.v1 import trainer_pb2

    reply = _trainer(args.trainer).Rollback(trainer_pb2.RollbackRequest(version=args.version), timeout=30)
    print(f"current model: {reply.current_version} (was {reply.previous_version or 'none'})")
    return 0


def _images_to_add(directory: Path) -> dict[str, Path]:
    """{case: image} of an nnU-Net raw directory's images, or of a folder of NIfTI files."""
    from saim.errors import InvalidInput

    if not directory.is_dir():
        raise InvalidInput(f"{directory}: not a directory")
    found: dict[str, Path] = {}
    for sub in ("imagesTr", "imagesTs"):
        for path in sorted((directory / sub).glob("*_0000.nii*")):
            found[path.name.split("_0000.nii")[0]] = path
    if not found:
        for path in sorted(directory.glob("*.nii*")):
            found[path.name.split(".nii")[0]] = path
    if not found:
        raise InvalidInput(f"{directory}: no NIfTI images (imagesTr/*_0000.nii.gz, imagesTs/ or *.nii.gz)")
    return found


def _cmd_import(args) -> int:
    from saim.pool import add_to_pool
    from saim.settings import load_storage_settings
    from saim.storage import ObjectStore

    images = _images_to_add(args.dir)  # a bad directory is named before any connection
    added = add_to_pool(ObjectStore.connect(load_storage_settings().s3()), images)
    print(f"added {len(added)} series to the pool: {', '.join(added)}")
    return 0


def _cmd_export_nnunet(args) -> int:
    from saim.config import ModelConfig
    from saim.export import export_nnunet
    from saim.pool import PoolStore
    from saim.settings import load_storage_settings
    from saim.storage import ObjectStore

    store = ObjectStore.connect(load_storage_settings().s3())
    pool = PoolStore(store, ModelConfig().image_size, cache_mb=0)  # the export reads source volumes, no model grid
    summary = export_nnunet(pool, args.out_dir, args.rater)
    print(
        f"exported to {summary.out_dir}: {summary.initial} ground-truth and {summary.annotated} annotated cases "
        f"(labelsTr in each scan's geometry), dataset.json, provenance.csv"
    )
    for line in summary.skipped:
        print(f"skipped {line}")
    return 0


def _dataset_dir(spec: str, series: int, seed: int) -> Path:
    from saim.data import phantom

    if spec != "synthetic":
        return Path(spec)
    return phantom.generate(Path(tempfile.mkdtemp(prefix="saim-phantom-")), num_series=series, seed=seed)


def _cmd_bootstrap(args) -> int:
    from saim.data.dataset import NnUNetDataset
    from saim.errors import InvalidInput
    from saim.events import ensure_topics
    from saim.pool import DATASET_JSON, import_dataset, make_splits, read_splits
    from saim.settings import load_settings
    from saim.storage import ObjectStore

    rule = from_args(args, SplitRule)
    if rule.pretrain_fraction == "auto":
        raise InvalidInput(
            "--pretrain-fraction auto is the emulation's rule (it pre-trains to choose); "
            "the services' import takes a fraction (default 0.1) or --splits FILE"
        )
    settings = load_settings()
    store = ObjectStore.connect(settings.s3())
    store.ensure_bucket(versioning=True)
    print(f"bucket {settings.s3_bucket}: ready, versioning enabled")
    if not args.no_topics:
        ensure_topics(settings.kafka_bootstrap)
        print(f"topics on {settings.kafka_bootstrap}: ready")
    if store.exists(DATASET_JSON) and not args.force:
        print("dataset already imported; kept (use --force to re-import)")
        return 0
    ds = NnUNetDataset(_dataset_dir(args.dataset, args.series, args.seed))
    if args.splits is not None:
        splits = read_splits(args.splits, ds)
    else:
        splits = make_splits(ds.cases, args.seed, rule, ds.unlabelled)
    intensity = import_dataset(store, ds, splits)
    print(
        f"imported {len(ds.cases) + len(ds.unlabelled)} cases ({len(ds.unlabelled)} unlabelled): "
        f"{len(splits.initial)} initial, {len(splits.val)} val, {len(splits.test)} test, {len(splits.pool)} pool; "
        f"intensity preprocessing {intensity.scheme}"
    )
    return 0


def _cmd_drive(args) -> int:
    from saim.data.dataset import NnUNetDataset
    from saim.settings import load_client_settings
    from saim.stack.demo import drive

    ds = NnUNetDataset(_dataset_dir(args.dataset, args.series, args.seed))
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
