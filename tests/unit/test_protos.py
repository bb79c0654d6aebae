import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_up_to_date(tmp_path):
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_protos.py"), str(tmp_path)], check=True, capture_output=True
    )
    generated = sorted(p.name for p in (tmp_path / "saim" / "v1").iterdir())
    checked_in = sorted(p.name for p in (ROOT / "src" / "saim" / "v1").iterdir() if p.is_file())
    assert generated == checked_in
    for name in generated:
        fresh = (tmp_path / "saim" / "v1" / name).read_text()
        assert fresh == (ROOT / "src" / "saim" / "v1" / name).read_text(), f"{name} is stale: run tools/gen_protos.py"


def test_protos_are_versioned_by_package_and_directory():
    for proto in (ROOT / "proto" / "saim" / "v1").glob("*.proto"):
        assert "package saim.v1;" in proto.read_text(), proto
    assert importlib.util.find_spec("saim.v1.annotator_pb2_grpc") is not None
