"""The CloudTrail scan benchmark, tiny: Quench's scan finds exactly what the plain scan
finds, which is what the generator planted, and every figure is there. Speed is the
benchmark's to report, not a test's to assert."""

import gzip
import json
import subprocess
import sys
from pathlib import Path

from activities.trailscan import by_credential, log_records, mentions_credential
from benchmarks.cloudtrail_scan import consistent, report, run
from benchmarks.trail_files import TARGET_KEY, generate


def test_a_tiny_run_agrees_with_the_plain_scan_and_reports_every_figure() -> None:
    figures = run(records=3_000, rounds=2, isolate=False)
    assert consistent(figures), report(figures)
    assert figures["records"] >= 3_000
    assert figures["checks"]["by"]["matches"] > 0
    assert figures["checks"]["mentions"]["matches"] > figures["checks"]["by"]["matches"]
    for phase in figures["phases"].values():
        assert phase["cpu_seconds"] > 0
        assert phase["records_per_second_per_core"] > 0
        assert phase["peak_traced_mib"] > 0
    assert set(figures["ratios"]) >= {"zlib/by", "zlib/mentions"}
    for ratio in figures["ratios"].values():
        assert ratio["time_vs_decompress"] > 0
        assert ratio["speedup_vs_reference"] > 0
    text = report(figures)
    assert "Quench's are the reference's in every round: yes" in text
    assert figures["machine"]["cores"]


def test_the_command_runs_each_phase_in_its_own_process_and_writes_its_figures(
    tmp_path: Path,
) -> None:
    out = tmp_path / "figures.json"
    command = [sys.executable, "-m", "benchmarks.cloudtrail_scan", "--records", "1500"]
    done = subprocess.run(
        [*command, "--rounds", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text())
    assert consistent(figures)
    assert "records/s/core" in done.stdout


def test_the_generator_writes_cloudtrail_files_as_aws_does(tmp_path: Path) -> None:
    trail = generate(tmp_path, 2_000, seed=3)
    keys = frozenset({TARGET_KEY})
    by = mentions = 0
    for key, path in zip(trail.keys, trail.paths(), strict=True):
        parts = key.split("/")
        assert parts[:3] == ["AWSLogs", "111122223333", "CloudTrail"]
        assert parts[-1].startswith(f"111122223333_CloudTrail_{parts[3]}_")
        assert parts[-1].endswith(".json.gz")
        data = gzip.decompress(path.read_bytes())
        assert data.startswith(b'{"Records":[{"eventVersion":"1.')
        assert b": " not in data[:200]  # compact, as CloudTrail writes
        records = log_records(data)
        assert all(next(iter(r)) == "eventVersion" for r in records)
        by += sum(by_credential(r, keys) for r in records)
        mentions += sum(mentions_credential(r, keys) for r in records)
    assert (by, mentions) == (trail.by_target, trail.by_target + trail.naming_target)
    assert trail.naming_target == 5
    again = generate(tmp_path / "again", 2_000, seed=3)
    assert [p.read_bytes() for p in again.paths()] == [p.read_bytes() for p in trail.paths()]
