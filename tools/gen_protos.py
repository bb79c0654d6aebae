"""Generate Python code for proto/saim/v1/*.proto into src/saim/v1 (the one place it is imported from).

Usage: python tools/gen_protos.py [OUT_DIR]   (default: src). tests/unit/test_protos.py fails when the checked-in
code is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"


def generate(out_dir: Path) -> list[Path]:
    protos = sorted(PROTO_DIR.glob("saim/v1/*.proto"))
    (out_dir / "saim" / "v1").mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *[str(p.relative_to(PROTO_DIR)) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    init = out_dir / "saim" / "v1" / "__init__.py"
    init.write_text('"""Generated from proto/saim/v1 by tools/gen_protos.py. Do not edit."""\n')
    return sorted((out_dir / "saim" / "v1").iterdir())


if __name__ == "__main__":
    for path in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "src"):
        print(path)
