"""The fault matrix (issue 14): every AWS call a lab case makes, failed with each of the
lab's faults in turn, and whether the case still ends honestly.

The calls are the real ones: an undisturbed run of each scenario with QUENCH_LAB_LOG_CALLS
logs one line per call the worker makes, and that run's AWS end state is the baseline.
Then each (call, fault) runs the scenario on a fresh stack with QUENCH_LAB_FAULTS naming
that call, approves every action as a person would (Quench's command line), and waits,
bounded, until the case closes or waits only on a named human decision (a retry or a
manual containment). A fresh stack per run costs its start (about 15 s) but shares no
state between runs, so no run can hide or cause another's result.

Run as `python -m benchmarks.fault_matrix` (or `make fault-matrix ARGS=...`); see --help.
"""

import argparse
import asyncio
import json
import shutil
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from activities.faults import FAULTS, SETTING, parse_fault_plan
from benchmarks.finding_storm import machine
from benchmarks.lab_case import (
    SETTLE_SECONDS,
    WAITING_KINDS,
    add_choices_option,
    aws_state,
    calls_made,
    comma_list,
    differences,
    drive_case,
    duplicates,
    start_stack,
)
from lab.scenario import SCENARIOS, Scenario

APPROVER = "fault-matrix@example.com"


@dataclass
class Run:
    """One case of the matrix and what it showed."""

    scenario: str
    operation: str
    fault: str
    case_id: str = ""
    ended: str = "wedged"  # closed, waiting or wedged
    outcome: str = ""
    waiting_on: list[str] = field(default_factory=list)
    open_items: list[str] = field(default_factory=list)
    names_call: bool = False
    # A step the case goes on without (a notification) is named on the timeline only.
    timeline_names_call: bool = False
    # What the open items and the pending decisions say, for a finding to quote.
    said: list[str] = field(default_factory=list)
    calls_made: int = 0
    differences: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""
    compared: bool = False

    @property
    def findings(self) -> list[str]:
        """Why the case did not end honestly; empty when it did."""
        found = []
        if self.error:
            found.append(f"the run failed: {self.error}")
        if self.ended == "wedged":
            found.append("wedged: neither closed nor waiting on a named decision")
        if self.duplicates:
            found.append("duplicates in AWS: " + "; ".join(self.duplicates))
        asks = self.open_items or self.waiting_on
        if self.operation != "(none)" and asks and not self.names_call:
            found.append(
                f"what the case asks of a person does not name {self.operation}: "
                + " / ".join(self.said)
            )
        if self.ended == "closed" and not self.open_items and self.differences:
            found.append(
                "closed with no open item while AWS differs from the undisturbed run: "
                + "; ".join(self.differences)
            )
        return found

    @property
    def summary(self) -> str:
        if self.ended == "closed":
            return f"closed, {self.outcome}"
        if self.ended == "waiting":
            return "waiting on " + ", ".join(self.waiting_on)
        return self.ended


# -- one run ----------------------------------------------------------------------------


async def run_case(
    scenario: Scenario,
    operation: str | None,
    fault: str | None,
    limit: float,
    settle: float = SETTLE_SECONDS,
) -> tuple[Run, dict[str, Any], Counter[str]]:
    """One case on a fresh stack; with no operation, the undisturbed run."""
    run = Run(scenario, operation or "(none)", fault or "(none)")
    env = {SETTING: json.dumps({operation: fault})} if operation and fault else {}
    stack = start_stack(env, "quench-fault-matrix-")
    state: dict[str, Any] = {}
    calls: Counter[str] = Counter()
    try:
        try:
            run.case_id, status, run.ended, run.seconds = await drive_case(
                stack, scenario, limit, APPROVER, settle=settle
            )
        except Exception as exc:  # a run that breaks is a row of the table, not a stop
            run.error = f"{type(exc).__name__}: {exc}"
            status = None
        if status is not None:
            run.outcome = status.outcome or ""
            run.open_items = list(status.open_items)
            pending = [a for a in status.pending_actions() if a.kind in WAITING_KINDS]
            run.waiting_on = [a.id for a in pending]
            if operation:
                texts = run.open_items + [
                    " ".join([a.title, *a.steps, a.outcome or ""]) for a in pending
                ]
                run.names_call = any(operation in text for text in texts)
                run.said = texts
                run.timeline_names_call = any(operation in e.what for e in status.timeline)
        state = await asyncio.to_thread(aws_state, stack)
        run.duplicates = await asyncio.to_thread(duplicates, stack)
        calls = calls_made(stack)
        if operation:
            run.calls_made = calls.get(operation, 0)
    finally:
        stack.stop()
        if not run.findings:
            shutil.rmtree(stack.state_dir, ignore_errors=True)
        else:
            print(f"  kept the state directory of this run: {stack.state_dir}", flush=True)
    return run, state, calls


# -- the table --------------------------------------------------------------------------

HEADER = (
    "| scenario | operation | fault | outcome | open items naming the call | "
    "AWS vs undisturbed | duplicates | seconds to end |"
)


def row(run: Run) -> str:
    named = "yes" if run.names_call else "timeline only" if run.timeline_names_call else "no"
    if run.operation == "(none)":
        named = "-"
    diffs = "same" if not run.differences else f"{len(run.differences)} differ"
    if run.operation != "(none)" and not run.compared:
        diffs = "not compared"
    dupes = "none" if not run.duplicates else "; ".join(run.duplicates)
    return (
        f"| {run.scenario} | {run.operation} | {run.fault} | {run.summary} | {named} | "
        f"{diffs} | {dupes} | {run.seconds:.0f} |"
    )


def markdown(runs: Sequence[Run], operations: dict[str, list[str]]) -> str:
    lines = [
        "# The fault matrix",
        "",
        f"Machine: {machine()}.",
        "",
        HEADER,
        "|---|---|---|---|---|---|---|---:|",
        *(row(run) for run in runs),
        "",
    ]
    for scenario, ops in operations.items():
        lines.append(f"Calls of an undisturbed {scenario} case: {', '.join(ops)}.")
    findings = [(run, found) for run in runs for found in run.findings]
    lines += ["", "## Findings", ""]
    if not findings:
        lines.append("Every run ended honestly.")
    for run, found in findings:
        lines.append(
            f"- {run.scenario} {run.operation} {run.fault} (case {run.case_id or '-'}): {found}"
        )
    differing = [run for run in runs if run.differences]
    if differing:
        lines += ["", "## AWS against the undisturbed run", ""]
        for run in differing:
            lines.append(f"- {run.scenario} {run.operation} {run.fault}:")
            lines += [f"  - {d}" for d in run.differences]
    return "\n".join(lines) + "\n"


async def matrix(args: argparse.Namespace) -> list[Run]:
    runs: list[Run] = []
    operations: dict[str, list[str]] = {}
    output: Path = args.output
    for scenario in args.scenario:
        base_state: dict[str, Any] | None = None
        calls: Counter[str] = Counter()
        if not args.no_baseline:
            print(f"{scenario}: the undisturbed run", flush=True)
            baseline, base_state, calls = await run_case(
                scenario, None, None, args.timeout, args.settle_seconds
            )
            runs.append(baseline)
            operations[scenario] = sorted(calls)
            print(row(baseline), flush=True)
            print(f"  calls: {dict(sorted(calls.items()))}", flush=True)
        chosen = args.operations or sorted(calls)
        for operation in chosen:
            for fault in args.faults:
                run, state, _ = await run_case(
                    scenario, operation, fault, args.timeout, args.settle_seconds
                )
                if base_state is not None:
                    run.differences = differences(base_state, state)
                    run.compared = True
                runs.append(run)
                print(row(run), flush=True)
                for found in run.findings:
                    print(f"  FINDING: {found}", flush=True)
                await asyncio.to_thread(output.write_text, markdown(runs, operations))
    await asyncio.to_thread(output.write_text, markdown(runs, operations))
    return runs


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_choices_option(parser, "--scenario", SCENARIOS, "scenario")
    parser.add_argument(
        "--operations",
        type=comma_list,
        default=None,
        help="comma-separated service:Operation (default: every call the undisturbed run made)",
    )
    add_choices_option(parser, "--faults", list(FAULTS), "fault")
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the undisturbed run (needs --operations; AWS is then not compared)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=600,
        help="seconds a case may take (a throttled step retries for about 5 minutes)",
    )
    parser.add_argument(
        "--settle-seconds",
        type=float,
        default=SETTLE_SECONDS,
        help="seconds a case must stay unchanged, waiting only on a retry, to count as ended",
    )
    parser.add_argument("--output", type=Path, default=Path("fault-matrix.md"))
    args = parser.parse_args(argv)
    if args.no_baseline and not args.operations:
        parser.error("--no-baseline needs --operations: the calls come from the undisturbed run")
    try:
        parse_fault_plan({op: "access_denied" for op in args.operations or []})
    except ValueError as exc:
        parser.error(str(exc))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    runs = asyncio.run(matrix(args))
    print(f"\nMachine: {machine()}\n{HEADER}")
    for run in runs:
        print(row(run))
    print(f"\nwritten to {args.output}")
    return 1 if any(run.findings for run in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
