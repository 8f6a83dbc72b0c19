"""The fault matrix, one row: the script run as a person runs it, on one call and one fault,
reports that the case ended honestly and names the call it could not make."""

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.fault_matrix import HEADER

pytestmark = pytest.mark.e2e

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_one_call_denied_gives_one_honest_row_naming_the_call(tmp_path: Path) -> None:
    output = tmp_path / "fault-matrix.md"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.fault_matrix",
            "--scenario",
            "ec2-role",
            "--operations",
            "iam:DeleteUser",
            "--faults",
            "access_denied",
            "--no-baseline",
            # Seen unchanged for 8 s, not the benchmark's 20, counts as ended: a case that
            # goes on after that still fails the row (its outcome and what it names).
            "--settle-seconds",
            "8",
            "--output",
            str(output),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    table = output.read_text()
    assert "Machine: " in table and HEADER in table
    (row,) = [line for line in table.splitlines() if "| iam:DeleteUser |" in line]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    scenario, operation, fault, outcome, named, compared, duplicates, seconds = cells
    assert (scenario, operation, fault) == ("ec2-role", "iam:DeleteUser", "access_denied")
    # The backdoor user's deletion is denied for good: the case waits on its retry (or
    # closed with it open), and either way names the call.
    assert outcome.startswith(("waiting on retry-", "closed, partly contained")), outcome
    assert named == "yes"
    assert (compared, duplicates) == ("not compared", "none")
    assert float(seconds) > 0
    assert "Every run ended honestly." in table
