"""The `saim` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path

import grpc

from saim.cli import admin, stack
from saim.cli.flags import add_fields, from_args
from saim.data.splits import SplitRule
from saim.errors import SaimError
from saim.model.config import ModelConfig
from saim.training.config import TrainConfig

EMULATION_SPLIT = {
    "pretrain_fraction": "auto"
}  # the paper's initial-set rule (saim.research.emulate.Emulation._initial_set)


def _add_emulate(sub) -> None:
    from saim.selection.strategies import STRATEGIES

    p = sub.add_parser(
        "emulate",
        help="run the emulated SAIM scenario with a virtual user (paper §4.2)",
        description="Pre-train on a small annotated set, then per iteration: select series, annotate "
        "them with the virtual user driving the current model, retrain, evaluate on a fixed test set.",
    )
    p.add_argument("--selection", choices=sorted(STRATEGIES), default="fg_random")
    p.add_argument(
        "--baseline",
        choices=["none", "classical"],
        default="none",
        help="'classical' also trains on the ground truth of the same series",
    )
    p.add_argument("--seed", type=int, default=0)
    _add_emulation_args(p)
    p.add_argument("--report", type=Path, default=None, help="write the JSON report here")
    p.add_argument("--plot", type=Path, default=None, help="write a PNG of mIoU per iteration here")
    p.set_defaults(func=_cmd_emulate)


def _add_experiment(sub) -> None:
    from saim.research.experiment import REFERENCE, STRATEGIES, TimeModel

    p = sub.add_parser(
        "experiment",
        help="SAIM with each selection strategy and the classical baseline over several seeds (mean ± sd, paired "
        "differences)",
        description="Per seed: one emulation per selection strategy from one pre-trained model (the first with the "
        "classical baseline); then per iteration mean and sample sd over seeds of test mIoU, the SAIM/classical "
        "ratio, NoC@85/90, Dice-AUC5, 3-click mIoU, click recall, precision and overshoot and an annotation-time "
        f"estimate, and with {REFERENCE} among the strategies each other's paired difference against it with a 95 %% "
        "interval (saim.research.experiment).",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument(
        "--strategies",
        type=lambda text: tuple(t.strip() for t in text.split(",") if t.strip()),
        default=STRATEGIES,
        help=f"comma-separated selection strategies, one arm each (default: {','.join(STRATEGIES)}; "
        f"e.g. {REFERENCE},entropy,clasp_pe,mc_dropout,random)",
    )
    p.add_argument("--jobs", type=int, default=1, help="emulations run at once, each in its own process (default: 1)")
    _add_emulation_args(p)
    times = p.add_argument_group("annotation-time model (an estimate; saim.research.experiment.TimeModel)")
    for f, default in asdict(TimeModel()).items():
        times.add_argument(f"--{f.replace('_', '-')}", type=float, default=default, help=f"(default: {default})")
    p.add_argument(
        "--report", type=Path, default=None, help="write the JSON report here (the contract: saim.research.experiment)"
    )
    p.add_argument("--plot", type=Path, default=None, help="write a PNG of mIoU with ± sd bands here")
    p.add_argument("--markdown", type=Path, default=None, help="write the tables in Markdown here")
    p.set_defaults(func=_cmd_experiment)


def _add_emulation_args(p) -> None:
    """What `saim emulate` and `saim experiment` share: the data, the loop, the model and the training run."""
    p.add_argument("--data", default="synthetic", help="'synthetic' (phantoms) or an nnU-Net raw dataset directory")
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument(
        "--batch-size", type=int, default=None, help="series selected per iteration (default: initial set size)"
    )
    p.add_argument("--clicks", type=int, default=3, help="virtual-user clicks per class per image")
    p.add_argument("--max-slices", type=int, default=8, help="slices kept per series (evenly spaced); 0 = all")
    split = p.add_argument_group("split (saim.data.splits.SplitRule)")
    add_fields(split, SplitRule, defaults=EMULATION_SPLIT)
    model = p.add_argument_group("model (saim.model.config.ModelConfig)")
    add_fields(model, ModelConfig)
    train = p.add_argument_group("training (saim.training.config.TrainConfig)")
    add_fields(train, TrainConfig, rename={"batch_size": "train_batch_size"})
    p.add_argument("--series", type=int, default=24, help="synthetic series to generate")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N] (default: auto)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--no-noc", action="store_true", help="skip NoC@85/90 and Dice-AUC (the costlier measures)")
    p.add_argument(
        "--noc-at",
        choices=["every", "ends"],
        default="every",
        help="measure NoC@85/90 and Dice-AUC at every iteration, or at the first and the last only (default: every)",
    )
    p.add_argument(
        "--protocol",
        choices=["saim", "cvpr"],
        default="saim",
        help="cvpr adds the CVPR 2025 interactive 3D challenge's measures on each test series as a volume: 5 clicks "
        "at the distance-transform peak of each class's largest 3D error component, DSC_AUC, NSD_AUC, final DSC "
        "and NSD (saim.training.evaluation.evaluate_cvpr)",
    )
    p.add_argument(
        "--no-gate",
        action="store_true",
        help="use every retrained version for the next round (the paper's raw curve); by default a version worse on "
        "validation than the current one by more than --promotion-tolerance is rejected, as the services do",
    )
    p.add_argument("--promotion-tolerance", type=float, default=0.02, help="(default: 0.02)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _emulation_config(args, **fixed):
    from saim.research.emulate import EmulationConfig

    return EmulationConfig(
        data=args.data,
        iterations=args.iterations,
        batch_size=args.batch_size,
        split=from_args(args, SplitRule, defaults=EMULATION_SPLIT),
        model=from_args(args, ModelConfig),
        train=from_args(args, TrainConfig),
        clicks=args.clicks,
        max_slices=args.max_slices or None,
        synthetic_series=args.series,
        device=args.device,
        threads=args.threads,
        noc=not args.no_noc,
        noc_at=args.noc_at,
        protocol=args.protocol,
        gate=not args.no_gate,
        promotion_tolerance=args.promotion_tolerance,
        **fixed,
    )


def _cmd_experiment(args) -> int:
    from saim.research.experiment import TimeModel, format_markdown, plot_experiment, run_experiment, verdict

    cfg = _emulation_config(args)
    time_model = TimeModel(**{f: getattr(args, f) for f in asdict(TimeModel())})
    report = run_experiment(
        cfg, args.seeds, time_model, show_progress=not args.quiet, jobs=args.jobs, strategies=args.strategies
    )
    table = format_markdown(report)
    print(table)
    if report["paired"]:
        print(verdict(report))
    print(f"seeds {report['seeds']}; wall {report['wall_seconds']:.0f} s")
    _write_outputs(args.report, report, args.plot, plot_experiment)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table + "\n")
        print(f"markdown: {args.markdown}")
    return 0


def _write_outputs(report_path: Path | None, report: dict, plot_path: Path | None, plot) -> None:
    """The JSON report and the plot of `saim emulate` / `saim experiment`, where asked for."""
    if report_path:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"report: {report_path}")
    if plot_path:
        plot_path.parent.mkdir(parents=True, exist_ok=True)
        plot(report, str(plot_path))
        print(f"plot: {plot_path}")


def _cmd_emulate(args) -> int:
    from saim.research.emulate import Emulation, format_table, plot_report

    cfg = _emulation_config(args, selection=args.selection, baseline=args.baseline, seed=args.seed)
    report = Emulation(cfg, show_progress=not args.quiet).run()
    print(format_table(report))
    final, first = report["final"], report["iterations"][0]
    print(
        f"final mIoU {final['miou']:.3f} (iteration 0: {first['miou']:.3f})"
        + (f", classical {final['miou_classical']:.3f}" if final["miou_classical"] is not None else "")
        + f"; wall {report['wall_seconds']:.0f} s"
    )
    if report["rejected_versions"]:
        print(f"rejected by the promotion gate (the previous model annotated on): {report['rejected_versions']}")
    _write_outputs(args.report, report, args.plot, plot_report)
    return 0


def _add_data(sub) -> None:
    p = sub.add_parser("data", help="create or check datasets in the nnU-Net raw layout")
    dsub = p.add_subparsers(dest="data_cmd", required=True, metavar="COMMAND")
    ph = dsub.add_parser("phantom", help="write synthetic abdomen-like MRI phantoms")
    ph.add_argument("out", type=Path)
    ph.add_argument("--series", type=int, default=24)
    ph.add_argument("--slices", type=int, default=12)
    ph.add_argument("--size", type=int, default=96)
    ph.add_argument("--seed", type=int, default=0)
    ph.add_argument(
        "--rarest-scale", type=float, default=1.0, help="shrink the left kidney in-plane (0.4: a small structure)"
    )
    ph.set_defaults(
        func=lambda a: _done(
            __import__("saim.data.phantom", fromlist=["generate"]).generate(
                a.out, a.series, a.slices, a.size, a.seed, a.rarest_scale
            )
        )
    )
    ts = dsub.add_parser("totalseg", help="build a small real CT/MR dataset from the TotalSegmentator sdist")
    ts.add_argument("out", type=Path)
    ts.add_argument(
        "--sdist", type=Path, default=None, help="path to totalsegmentator-2.18.0.tar.gz (default: pip download)"
    )
    ts.add_argument("--slab", type=int, default=5, help="slices per case")
    ts.add_argument("--cache-dir", type=Path, default=Path(".cache"))
    ts.set_defaults(
        func=lambda a: _done(
            __import__("saim.data.totalseg", fromlist=["build"]).build(a.out, a.sdist, a.slab, a.cache_dir)
        )
    )
    ck = dsub.add_parser("check", help="validate a dataset directory and print its summary")
    ck.add_argument("root", type=Path)
    ck.set_defaults(func=_cmd_check)


def _done(root: Path) -> int:
    return _cmd_check(argparse.Namespace(root=root))


def _cmd_check(args) -> int:
    import numpy as np

    from saim.data.dataset import NnUNetDataset

    ds = NnUNetDataset(args.root)
    counts = np.zeros(len(ds.info.classes) + 1, np.int64)
    for case in ds.cases:
        _, label, _ = ds.load_case(case)
        counts += np.bincount(label.ravel(), minlength=len(counts))
    for case in ds.unlabelled:
        ds.load_image(case)
    print(
        f"{args.root}: {ds.info.name}, {len(ds.cases)} labelled and {len(ds.unlabelled)} unlabelled cases, "
        f"classes {', '.join(ds.info.classes)}"
    )
    print(
        "voxels per class: "
        + ", ".join(f"{n}={c}" for n, c in zip(("background", *ds.info.classes), counts, strict=True))
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="saim",
        description="SAIM: one interactive model shared by data selection, interactive annotation and training.",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_emulate(sub)
    _add_experiment(sub)
    _add_data(sub)
    stack.add_commands(sub)
    admin.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except SaimError as exc:
        print(f"saim: error: {exc}", file=sys.stderr)
        return 2
    except grpc.RpcError as exc:  # a service refused or could not be reached: its status, not a traceback
        print(f"saim: error: {rpc_error_message(exc)}", file=sys.stderr)
        return 2


RPC_HINTS = {
    grpc.StatusCode.UNAVAILABLE: "is the service running at that address, with TLS set alike on both sides?",
    grpc.StatusCode.UNAUTHENTICATED: "set SAIM_ADMIN_TOKEN or SAIM_ADMIN_TOKEN_FILE to a valid token",
    grpc.StatusCode.DEADLINE_EXCEEDED: "the service did not answer in time",
}


def rpc_error_message(exc: grpc.RpcError) -> str:
    code = exc.code()
    hint = RPC_HINTS.get(code)
    return f"{code.name}: {exc.details() or 'no details'}" + (f" ({hint})" if hint else "")


if __name__ == "__main__":
    sys.exit(main())
