"""The committed gRPC stubs match what `make proto` generates from protos/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_stubs_match_protos(tmp_path):
    protos = sorted((ROOT / "protos/prim/pb").glob("*.proto"))
    subprocess.run(
        [
            sys.executable, "-m", "grpc_tools.protoc",
            f"-I{ROOT / 'protos'}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            *map(str, protos),
        ],
        check=True,
    )
    generated = sorted(p.relative_to(tmp_path) for p in (tmp_path / "prim/pb").iterdir())
    committed = sorted(
        p.relative_to(ROOT) for p in (ROOT / "prim/pb").iterdir() if p.name != "__init__.py" and p.is_file()
    )
    assert generated == committed, "run `make proto`: the set of stub files differs"
    for relative in generated:
        fresh = (tmp_path / relative).read_bytes()
        assert fresh == (ROOT / relative).read_bytes(), f"{relative} is out of date: run `make proto`"
