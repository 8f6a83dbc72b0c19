"""The CloudTrail scan benchmark: Quench's credential-scoped scan against decompression
alone and against the plain scan (json.loads of every record, then the predicate), on the
same realistic log files (benchmarks/trail_files.py), in one run.

    python -m benchmarks.cloudtrail_scan                 # 1,000,000 records, 3 rounds
    python -m benchmarks.cloudtrail_scan --quick         # 100,000 records, 1 round
    python -m benchmarks.cloudtrail_scan --dense         # the key in every main-region file
    python -m benchmarks.cloudtrail_scan --json out.json

The files are written to a temporary directory (local files, not S3: the scan is what is
measured). Every phase runs in a fresh process, reads each file and handles it, and is
timed by the CPU time of that process (one core): on a shared machine that is steadier
than the wall clock, which is reported too. The plain scan is what the S3 source did
before: gzip.decompress, json.loads, the predicate on every record. Decompression alone
inflates each file as Quench's scan does, in pieces, with the same inflater (zlib, and
ISA-L's when the isal package is installed). Peak memory is traced, untimed, while the
largest files are handled; the process's peak RSS is reported too. The scan's matches must
be exactly the plain scan's, for both predicates, in every round.
"""

import argparse
import hashlib
import importlib
import json
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from activities import trailscan
from benchmarks.trail_files import TARGET_KEY, generate

PREDICATES = {"by": trailscan.by_credential, "mentions": trailscan.mentions_credential}
PREDICATE_NAMES = {"by": "by the credential", "mentions": "mentions the credential"}
TARGETS = {"time_vs_decompress": 1.5, "speedup_vs_reference": 20.0}
LARGEST = 10  # files traced for peak memory


@dataclass(frozen=True)
class Phase:
    kind: str  # decompress, reference or quench
    paths: tuple[str, ...]
    largest: tuple[str, ...]  # the files whose handling peak memory is traced on
    inflater: str = "zlib"  # the module Quench inflates with: zlib or isal.isal_zlib
    predicate: str = ""  # by or mentions

    @property
    def name(self) -> str:
        if self.kind == "reference":
            return f"reference/{self.predicate}"
        label = _short(self.inflater)
        return f"{self.kind}/{label}" + (f"/{self.predicate}" if self.predicate else "")


def _short(inflater: str) -> str:
    return "isal" if inflater.startswith("isal") else "zlib"


def run_phase(phase: Phase) -> dict[str, Any]:
    """One phase over every file, in this process: its figures, and its matches' digest."""
    inflater = trailscan.INFLATER
    trailscan.INFLATER = importlib.import_module(phase.inflater)
    try:
        return _measure(phase)
    finally:
        trailscan.INFLATER = inflater


def _measure(phase: Phase) -> dict[str, Any]:
    keys = frozenset({TARGET_KEY})
    predicate = PREDICATES.get(phase.predicate)

    def keep(record: trailscan.Record) -> bool:
        assert predicate is not None
        return predicate(record, keys)

    def handle(paths: tuple[str, ...], stats: trailscan.ScanStats) -> list[trailscan.Record]:
        matches: list[trailscan.Record] = []
        for path in paths:
            with open(path, "rb") as file:
                body = file.read()
            if phase.kind == "decompress":
                for _ in trailscan.inflate(body):
                    pass
            elif phase.kind == "reference":
                records = trailscan.log_records(trailscan.read_log(body))
                matches.extend(r for r in records if keep(r))
            else:
                matches.extend(trailscan.scan_log(body, keys, keep, stats))
        return matches

    stats = trailscan.ScanStats()
    wall, cpu = time.perf_counter(), time.process_time()
    matches = handle(phase.paths, stats)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    # Memory, untimed (tracing slows every allocation): what handling the largest files
    # holds at its peak, decompressed text and parsed records included.
    tracemalloc.start()
    handle(phase.largest, trailscan.ScanStats())
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {
        "cpu_seconds": cpu,
        "wall_seconds": wall,
        "peak_traced_mib": traced_peak / 2**20,
        # ru_maxrss is in KiB on Linux: the whole process, interpreter and imports included.
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        # The records themselves, in order, as one digest: equal digests, equal answers.
        "matches": len(matches),
        "digest": hashlib.sha256(json.dumps(matches).encode()).hexdigest(),
        "stats": asdict(stats),
    }


def inflaters() -> list[str]:
    """zlib, and ISA-L's inflate when the isal package is installed."""
    found = ["zlib"]
    try:
        importlib.import_module("isal.isal_zlib")
    except ImportError:
        return found
    return [*found, "isal.isal_zlib"]


def run(
    records: int,
    rounds: int = 3,
    dense: bool = False,
    seed: int = 6,
    isolate: bool = True,
    log: Any = None,
) -> dict[str, Any]:
    """Generates the files, runs every phase `rounds` times, and returns the figures."""

    def say(text: str) -> None:
        if log is not None:
            print(text, file=log, flush=True)

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="quench-trail-") as directory:
        started = time.perf_counter()
        trail = generate(Path(directory), records, seed=seed, dense=dense)
        generated = time.perf_counter() - started
        say(
            f"generated {trail.records:,} records in {len(trail.keys):,} files in {generated:.0f} s"
        )
        paths = tuple(str(p) for p in trail.paths())
        largest = tuple(sorted(paths, key=lambda p: Path(p).stat().st_size)[-LARGEST:])
        phases = [Phase("reference", paths, largest, predicate=p) for p in PREDICATES]
        for inflater in inflaters():
            phases.append(Phase("decompress", paths, largest, inflater))
            phases.extend(Phase("quench", paths, largest, inflater, p) for p in PREDICATES)
        results: dict[str, list[dict[str, Any]]] = {p.name: [] for p in phases}
        context = multiprocessing.get_context("spawn")
        for round_ in range(rounds):
            for phase in phases:
                if isolate:
                    # A fresh process a phase: its memory and caches are its own.
                    with ProcessPoolExecutor(1, mp_context=context) as pool:
                        outcome = pool.submit(run_phase, phase).result()
                else:
                    outcome = run_phase(phase)
                results[phase.name].append(outcome)
                say(f"round {round_ + 1} {phase.name}: {outcome['cpu_seconds']:.2f} s CPU")
    return _figures(trail, generated, results, rounds, load_before, os.getloadavg(), dense)


def _figures(
    trail: Any,
    generated: float,
    results: dict[str, list[dict[str, Any]]],
    rounds: int,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
    dense: bool,
) -> dict[str, Any]:
    n = trail.records
    phases: dict[str, Any] = {}
    for name, outcomes in results.items():
        cpu = statistics.median(o["cpu_seconds"] for o in outcomes)
        phases[name] = {
            "cpu_seconds": cpu,
            "wall_seconds": statistics.median(o["wall_seconds"] for o in outcomes),
            "records_per_second_per_core": n / cpu,
            "peak_traced_mib": max(o["peak_traced_mib"] for o in outcomes),
            "peak_rss_mib": max(o["peak_rss_mib"] for o in outcomes),
        }
    ratios: dict[str, Any] = {}
    checks: dict[str, Any] = {}
    for predicate in PREDICATES:
        reference = results[f"reference/{predicate}"]
        expected = reference[0]["digest"]
        checks[predicate] = {
            "matches": reference[0]["matches"],
            "reference_stable": all(o["digest"] == expected for o in reference),
        }
        for inflater in inflaters():
            label = _short(inflater)
            quench = results[f"quench/{label}/{predicate}"]
            decompress = results[f"decompress/{label}"]
            checks[predicate][f"identical_{label}"] = all(o["digest"] == expected for o in quench)
            checks[predicate][f"files_{label}"] = quench[0]["stats"]
            ratios[f"{label}/{predicate}"] = {
                "time_vs_decompress": statistics.median(
                    q["cpu_seconds"] / d["cpu_seconds"]
                    for q, d in zip(quench, decompress, strict=True)
                ),
                "speedup_vs_reference": statistics.median(
                    r["cpu_seconds"] / q["cpu_seconds"]
                    for r, q in zip(reference, quench, strict=True)
                ),
            }
    checks["by"]["planted"] = trail.by_target
    checks["mentions"]["planted"] = trail.by_target + trail.naming_target
    return {
        "files": len(trail.keys),
        "records": n,
        "dense": dense,
        "json_bytes": trail.raw_bytes,
        "gzip_bytes": trail.compressed_bytes,
        "generated_seconds": generated,
        "rounds": rounds,
        "machine": machine(load_before, load_after),
        "phases": phases,
        "ratios": ratios,
        "checks": checks,
        "targets": TARGETS,
    }


def machine(
    load_before: tuple[float, float, float], load_after: tuple[float, float, float]
) -> dict[str, Any]:
    cpu_model = ""
    memory = ""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        cpu_model = next(
            (
                line.split(":", 1)[1].strip()
                for line in cpuinfo.splitlines()
                if "model name" in line
            ),
            "",
        )
        meminfo = Path("/proc/meminfo").read_text().split()
        memory = f"{int(meminfo[meminfo.index('MemTotal:') + 1]) / 2**20:.0f} GiB"
    except OSError:
        pass
    versions = {"zlib": zlib.ZLIB_RUNTIME_VERSION}
    try:
        versions["isal"] = importlib.import_module("isal").__version__
    except ImportError:
        pass
    return {
        "system": f"{platform.system()} {platform.machine()}",
        "cores": os.cpu_count(),
        "cpu": cpu_model,
        "memory": memory,
        "python": platform.python_version(),
        "libraries": versions,
        "load_average_before": load_before[0],
        "load_average_after": load_after[0],
    }


def report(figures: dict[str, Any]) -> str:
    m = figures["machine"]
    libraries = ", ".join(f"{k} {v}" for k, v in m["libraries"].items())
    lines = [
        f"CloudTrail scan: {figures['records']:,} records in {figures['files']:,} files, "
        f"{figures['json_bytes'] / 2**20:,.0f} MiB of JSON in {figures['gzip_bytes'] / 2**20:,.0f}"
        f" MiB of gzip{' (dense: the key in every main-region file)' if figures['dense'] else ''}",
        f"machine: {m['system']}, {m['cores']} cores ({m['cpu']}), {m['memory']}, "
        f"Python {m['python']}, {libraries}; load average {m['load_average_before']:.1f} "
        f"before, {m['load_average_after']:.1f} after",
        f"medians of {figures['rounds']} round(s); CPU time of one process, one core; peak "
        f"memory traced while handling the {LARGEST} largest files, and the process's peak RSS",
        "",
        f"{'phase':<26}{'records/s/core':>16}{'CPU s':>9}{'wall s':>9}"
        f"{'peak traced MiB':>17}{'peak RSS MiB':>14}",
    ]
    for name, p in figures["phases"].items():
        lines.append(
            f"{name:<26}{p['records_per_second_per_core']:>16,.0f}{p['cpu_seconds']:>9.2f}"
            f"{p['wall_seconds']:>9.2f}{p['peak_traced_mib']:>17.1f}{p['peak_rss_mib']:>14.0f}"
        )
    lines += ["", "ratios (median of the rounds' ratios):"]
    for name, r in figures["ratios"].items():
        lines.append(
            f"  {name:<16} Quench/decompress time {r['time_vs_decompress']:.2f} "
            f"(target <= {TARGETS['time_vs_decompress']}), speed-up over the reference "
            f"{r['speedup_vs_reference']:.1f}x (target >= {TARGETS['speedup_vs_reference']:.0f}x)"
        )
    lines += ["", "matches:"]
    for predicate, c in figures["checks"].items():
        same = all(v for k, v in c.items() if k.startswith("identical_"))
        files = next(v for k, v in c.items() if k.startswith("files_"))
        lines.append(
            f"  {PREDICATE_NAMES[predicate]}: {c['matches']:,} (planted {c['planted']:,}); "
            f"Quench's are the reference's in every round: {'yes' if same else 'NO'}; "
            f"files skipped {files['skipped']:,}, read around hits {files['by_hits']:,}, "
            f"parsed whole {files['parsed']:,}"
        )
    return "\n".join(lines)


def consistent(figures: dict[str, Any]) -> bool:
    """The scan agreed with the plain scan, which found what was planted."""
    return all(
        c["reference_stable"]
        and c["matches"] == c["planted"]
        and all(v for k, v in c.items() if k.startswith("identical_"))
        for c in figures["checks"].values()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="100,000 records, one round")
    parser.add_argument("--dense", action="store_true", help="the key in every main-region file")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    records, rounds = (100_000, 1) if args.quick else (args.records, args.rounds)
    figures = run(records, rounds, args.dense, args.seed, log=sys.stderr)
    print(report(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    if not consistent(figures):
        sys.exit("the scan's matches differ from the plain scan's, or from what was planted")


if __name__ == "__main__":
    main()
