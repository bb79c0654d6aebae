import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from saim.cli.main import build_parser, main
from saim.data.dataset import DatasetInfo, write_dataset

SUBCOMMANDS = [
    ["emulate"],
    ["data"],
    ["data", "phantom"],
    ["data", "totalseg"],
    ["data", "check"],
    ["up"],
    ["demo"],
    ["bootstrap"],
    ["drive"],
    ["admin"],
    ["admin", "tokens"],
    ["admin", "tokens", "issue"],
    ["admin", "models"],
    ["admin", "rollback"],
]


@pytest.mark.parametrize("words", SUBCOMMANDS, ids=" ".join)
def test_every_subcommand_has_help(words, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*words, "--help"])
    assert exc.value.code == 0
    assert "usage: saim " + " ".join(words) in capsys.readouterr().out


def test_console_entry_point_runs():
    out = subprocess.run(
        [sys.executable, "-m", "saim.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "emulate" in out and "demo" in out


def test_malformed_dataset_is_a_clear_cli_error(tmp_path, capsys):
    info = DatasetInfo(name="T", classes=("organ",), label_values=(1,))
    vol = np.zeros((8, 8, 2), np.float32)
    root = write_dataset(tmp_path / "ds", info, {"c1": (vol, vol.astype(np.uint8), np.eye(4))})
    (root / "imagesTr" / "c1_0000.nii.gz").rename(root / "imagesTr" / "c2_0000.nii.gz")
    assert main(["data", "check", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("saim: error: ") and "labels without an image in imagesTr/: ['c1.nii.gz']" in err


def test_data_phantom_then_check(tmp_path, capsys):
    assert main(["data", "phantom", str(tmp_path / "ph"), "--series", "2", "--slices", "3", "--size", "32"]) == 0
    out = capsys.readouterr().out
    assert "2 labelled and 0 unlabelled cases, classes liver, spleen, kidney_right, kidney_left" in out


def test_admin_tokens_issue_list_revoke(monkeypatch, capsys, tmp_path):
    from saim.cli import admin as stack_cli
    from saim.rpc import tokens as auth
    from tests.unit.fakes import MemoryStore

    store = MemoryStore()
    monkeypatch.setattr(stack_cli, "_registry", lambda: auth.TokenRegistry(store))
    assert main(["admin", "tokens", "issue", "alice"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert auth.TokenRegistry(store).verify(token) == auth.Principal("alice", "annotator")
    out = tmp_path / "bob.token"
    assert main(["admin", "tokens", "issue", "bob", "--role", "admin", "--out", str(out)]) == 0
    assert out.stat().st_mode & 0o077 == 0 and out.read_text().strip() not in capsys.readouterr().out
    assert main(["admin", "tokens", "list"]) == 0
    listed = capsys.readouterr().out
    assert "alice" in listed and "admin" in listed and token not in listed and auth.token_hash(token) not in listed
    assert main(["admin", "tokens", "revoke", "alice"]) == 0
    assert auth.TokenRegistry(store).verify(token) is None
    assert main(["admin", "tokens", "revoke", "nobody"]) == 2
    assert "no live token" in capsys.readouterr().err


def test_emulate_flags_are_derived_from_the_config_fields():
    from saim.cli.flags import from_args
    from saim.data.splits import SplitRule
    from saim.model.config import ModelConfig
    from saim.training.config import TrainConfig

    args = build_parser().parse_args(
        ["emulate", "--epochs", "3", "--train-batch-size", "4", "--mode", "retrain", "--no-spatial-augment"]
        + ["--image-size", "32", "--pretrain-fraction", "0.2"]
    )
    train = from_args(args, TrainConfig)
    assert (train.epochs, train.batch_size, train.mode, train.spatial_augment) == (3, 4, "retrain", False)
    assert train.lr == TrainConfig().lr and train.augment is True  # flags not given keep the dataclass default
    assert from_args(args, ModelConfig).image_size == 32
    assert from_args(args, SplitRule) == SplitRule(pretrain_fraction=0.2)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["emulate", "--mode", "sometimes"])


def test_pretrain_fraction_is_auto_in_the_emulation_and_a_fraction_for_the_services(capsys):
    from saim.cli.flags import from_args
    from saim.cli.main import EMULATION_SPLIT, main
    from saim.data.splits import SplitRule

    args = build_parser().parse_args(["emulate"])
    assert from_args(args, SplitRule, defaults=EMULATION_SPLIT).pretrain_fraction == "auto"
    args = build_parser().parse_args(["emulate", "--pretrain-fraction", "auto"])
    assert from_args(args, SplitRule).pretrain_fraction == "auto"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["emulate", "--pretrain-fraction", "most"])
    assert "invalid auto or float value" in capsys.readouterr().err
    assert main(["bootstrap", "--pretrain-fraction", "auto", "--no-topics"]) == 2  # refused before any connection
    assert "emulation's rule" in capsys.readouterr().err


def test_a_grpc_error_is_a_one_line_message_not_a_traceback(capsys):
    import socket

    with socket.socket() as s:  # a free port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["admin", "models", "--trainer", f"127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("saim: error: UNAVAILABLE: ") and "is the service running" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_bucket_only_commands_need_only_the_storage_settings(monkeypatch, capsys, tmp_path):
    """`saim export` and `saim admin import` touch only the bucket: no Kafka setting is asked for; a bad directory
    is named before any connection; an unreachable endpoint is named as such."""
    for name in [k for k in os.environ if k.startswith("SAIM_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("SAIM_S3_ENDPOINT", f"127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("SAIM_S3_ACCESS_KEY", "k")
    monkeypatch.setenv("SAIM_S3_SECRET_KEY", "s")
    assert main(["admin", "import", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert main(["export", "nnunet", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "object storage unreachable" in err and "KAFKA" not in err


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_saim_up_gives_the_services_the_embedded_model_settings(tmp_path, monkeypatch):
    """`saim up --image-size` reaches the services (it was once parsed and dropped, so they ran at 256 px)."""
    seen: dict[str, str] = {}

    class StackThatStopsAtStart:
        def __init__(self, workdir, settings, **kwargs):
            seen.update(settings)

        def __enter__(self):
            raise KeyboardInterrupt

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr("saim.stack.local.LocalStack", StackThatStopsAtStart)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        assert main(["up", "--workdir", str(tmp_path), "--series", "4", "--image-size", "48"]) == 130
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert seen["SAIM_MODEL__IMAGE_SIZE"] == "48" and seen["SAIM_MODEL__REFINE_STEPS"] == "0"
