"""scripts/try.sh, the README's first set-up command, end to end in a new virtualenv."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from metering.ingest import ingest
from metering.sample import shipped_day
from metering.units import human
from tests.support import billed, migrated, run

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_try_script_installs_and_prints_the_usage_billed(tmp_path: Path) -> None:
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("METERING_", "VIRTUAL_ENV"))}
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "try.sh")],
        cwd=tmp_path,  # the script finds the repository by itself
        env={**env, "VENV": str(venv), "PYTHON": sys.executable, "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (venv / "bin" / "metering").is_file()
    out = done.stdout

    match = re.search(r"embedded SQLite database: (\S+)", out)
    assert match, out
    database = Path(match.group(1))
    assert database.parent.parent == tmp_path  # a new temporary directory per run

    # The printed totals are what billing the shipped day gives.
    reference = migrated(f"sqlite:///{tmp_path}/reference.db")
    ingest(reference, shipped_day().splitlines(keepends=True))
    run(reference, "2016-12-13T01:00:00Z", tmp_path)
    sums: dict[tuple[str, str], Decimal] = {}
    for key, quantity in billed(reference).items():
        sums[(key[1], key[4])] = sums.get((key[1], key[4]), Decimal(0)) + quantity
    assert billed(migrated(f"sqlite:///{database}")) == billed(reference)
    total = out[out.rindex("total per entity and unit:") :]
    assert len(sums) == 3  # vm and volume seconds, ip bytes: never added together
    for (entity, unit), quantity in sums.items():
        shown = rf"^  {entity}\s+{unit}\s+{re.escape(human(quantity, unit))}$"
        assert re.search(shown, total, re.M), (entity, unit, total)
    for account in ("geneva-jug", "acme-corp", "blue-lab", "north-shop"):
        assert account in out
