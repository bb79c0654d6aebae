"""The subcommands that prepare and administer a deployment: `saim bootstrap`, `saim admin ...` (tokens, the
model registry, pool import) and `saim export ...`. They read the SAIM_* environment the services use."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from saim.cli.flags import add_fields, from_args
from saim.data.splits import SplitRule

if TYPE_CHECKING:
    from saim.data.dicom import DicomSeries


def add_commands(sub) -> None:
    boot = sub.add_parser(
        "bootstrap",
        help="prepare a deployment: bucket (versioned), topics, dataset import",
        description="Uses the SAIM_* environment (as the services do). Idempotent: an already "
        "imported dataset is kept unless --force.",
    )
    boot.add_argument(
        "--dataset",
        default="synthetic",
        help="'synthetic' or an nnU-Net raw directory; an image entry may be a folder {case}_0000/ holding one "
        "DICOM series (stored as NIfTI; its label in labelsTr/ is NIfTI in the series' geometry)",
    )
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
    add_fields(boot.add_argument_group("split (saim.data.splits.SplitRule)"), SplitRule)
    boot.set_defaults(func=_cmd_bootstrap)

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
        description="DIR is an nnU-Net raw directory (imagesTr/ and imagesTs/ entries {case}_0000.nii.gz), a "
        "folder of {case}.nii.gz files, or a folder of DICOM series (searched recursively; each series is named "
        "after its folder, with its series number where a folder holds several, and stored as NIfTI). Each image "
        "is validated, uploaded, and added to the pool in dataset/splits.json; the selector scores the new series "
        "at its next reconcile (SAIM_RECONCILE_S).",
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
    from saim.rpc.tokens import TokenRegistry
    from saim.settings import load_storage_settings
    from saim.storage.objects import ObjectStore

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


def _images_to_add(directory: Path) -> Mapping[str, Path | DicomSeries]:
    """{case: image} of an nnU-Net raw directory's images, of a folder of NIfTI files, or of the DICOM series found
    under a folder (each named after its folder, saim.data.dicom.case_names)."""
    from saim.data.dicom import case_names, find_series
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
        series = case_names(find_series(directory))
        if series:
            return series
        raise InvalidInput(
            f"{directory}: no NIfTI images (imagesTr/*_0000.nii.gz, imagesTs/ or *.nii.gz) and no DICOM series"
        )
    return found


def _cmd_import(args) -> int:
    from saim.settings import load_settings
    from saim.storage.objects import ObjectStore
    from saim.storage.pool import add_to_pool

    images = _images_to_add(args.dir)  # a bad directory is named before any connection
    settings = load_settings()  # the services' model size: the series' preprocessed slices are written at import
    added = add_to_pool(ObjectStore.connect(settings.s3()), images, settings.model.image_size)
    print(f"added {len(added)} series to the pool: {', '.join(added)}")
    return 0


def _cmd_export_nnunet(args) -> int:
    from saim.model.config import ModelConfig
    from saim.settings import load_storage_settings
    from saim.storage.export import export_nnunet
    from saim.storage.objects import ObjectStore
    from saim.storage.pool import PoolStore

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


def _cmd_bootstrap(args) -> int:
    from saim.data.dataset import NnUNetDataset
    from saim.data.sources import dataset_dir
    from saim.data.splits import make_splits, read_splits
    from saim.errors import InvalidInput
    from saim.events import ensure_topics
    from saim.settings import load_settings
    from saim.storage.objects import ObjectStore
    from saim.storage.pool import DATASET_JSON, import_dataset

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
        ensure_topics(settings.kafka_bootstrap, settings.kafka_replication_factor)
        print(f"topics on {settings.kafka_bootstrap}: ready")
    if store.exists(DATASET_JSON) and not args.force:
        print("dataset already imported; kept (use --force to re-import)")
        return 0
    ds = NnUNetDataset(dataset_dir(args.dataset, args.series, args.seed))
    if args.splits is not None:
        splits = read_splits(args.splits, ds)
    else:
        splits = make_splits(ds.cases, args.seed, rule, ds.unlabelled)
    intensity = import_dataset(store, ds, splits, settings.model.image_size)
    print(
        f"imported {len(ds.cases) + len(ds.unlabelled)} cases ({len(ds.unlabelled)} unlabelled): "
        f"{len(splits.initial)} initial, {len(splits.val)} val, {len(splits.test)} test, {len(splits.pool)} pool; "
        f"intensity preprocessing {intensity.scheme}"
    )
    return 0
