"""The README documents every setting, and every service's --help lists its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from prim.auth.settings import SETTINGS as AUTH
from prim.edge.settings import SETTINGS as EDGE
from prim.presence.settings import SETTINGS as PRESENCE
from prim.router.settings import SETTINGS as ROUTER

ROOT = Path(__file__).resolve().parent.parent
SERVICES = {"auth": AUTH, "presence": PRESENCE, "router": ROUTER, "edge": EDGE}


@pytest.mark.parametrize("service", SERVICES)
def test_readme_lists_settings(service):
    readme = (ROOT / "README.md").read_text()
    missing = [spec.env for spec in SERVICES[service] if f"`{spec.env}`" not in readme]
    assert not missing, f"README lacks {missing}: paste `python scripts/settings_table.py`"


def test_readme_settings_table_current():
    readme = (ROOT / "README.md").read_text().splitlines()
    script = ROOT / "scripts" / "settings_table.py"
    output = subprocess.run([sys.executable, script], capture_output=True, text=True, check=True)
    table = output.stdout.splitlines()
    start = readme.index(table[0])
    assert readme[start : start + len(table)] == table, "paste `python scripts/settings_table.py`"
    assert not readme[start + len(table)].startswith("|"), "README lists a setting no service has"


@pytest.mark.parametrize("service", SERVICES)
def test_help_lists_settings(service):
    script = Path(sys.executable).parent / f"prim-{service}"
    output = subprocess.run([script, "--help"], capture_output=True, text=True, check=True).stdout
    for spec in SERVICES[service]:
        assert spec.env in output
