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
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from activities.faults import FAULTS, SETTING, parse_fault_plan
from benchmarks.finding_storm import machine
from config import names
from config.settings import LAB_WEBHOOK_TOKEN, Settings
from config.temporal import connect
from lab import world as lab_world
from lab.scenario import SCENARIOS, Scenario, run_scenario
from models.case import ActionKind, CaseStatus, Phase
from stack.embedded import EmbeddedStack, StackConfig
from stack.processes import free_port
from workflows.case import CaseWorkflow

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CALL_LINE = re.compile(r"aws call (\w[\w-]*:\w+)")
# A short containment watch, as the end-to-end tests use, so a case ends in about a minute.
CASE_SETTINGS = {
    "QUENCH_WATCH_SECONDS": "12",
    "QUENCH_CHECK_EVERY_SECONDS": "3",
    "QUENCH_DELIVERY_LAG_SECONDS": "0",
    "QUENCH_LAB_LOG_CALLS": "true",
}
# Decisions a person makes to let the case go on. A retry of a call that always fails, or
# a manual containment, is the decision the case ends waiting on.
WAITING_KINDS = {ActionKind.RETRY, ActionKind.MANUAL_CONTAINMENT}
# How long a case must stay unchanged, waiting only on such a decision, to count as ended.
SETTLE_SECONDS = 20.0
APPROVER = "fault-matrix@example.com"
STARTER = (sys.executable, "starter.py")


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


# -- the stack and the case -------------------------------------------------------------


def start_stack(faults: dict[str, str] | None) -> EmbeddedStack:
    state_dir = Path(tempfile.mkdtemp(prefix="quench-fault-matrix-"))
    env = dict(CASE_SETTINGS)
    if faults:
        env[SETTING] = json.dumps(faults)
    stack = EmbeddedStack(
        StackConfig(
            state_dir=state_dir,
            temporal_port=free_port(),
            ui_port=free_port(),
            lab_aws_port=free_port(),
            webhook_port=free_port(),
            lab=True,
            extra_env=env,
        )
    )
    stack.start()
    return stack


def approve(stack: EmbeddedStack, case_id: str, action_id: str) -> None:
    """Approve as a person does: Quench's command line."""
    done = subprocess.run(
        [*STARTER, "approve", case_id, action_id, "--by", APPROVER, "--reason", "fault matrix"],
        cwd=PROJECT_ROOT,
        env={**os.environ, "QUENCH_TEMPORAL_ADDRESS": stack.temporal_address},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"approve {action_id}: {done.stdout}{done.stderr}")


def _fingerprint(status: CaseStatus) -> str:
    return json.dumps(
        [status.phase, [(a.id, a.status, a.outcome) for a in status.actions], len(status.timeline)],
        default=str,
    )


async def drive_case(
    stack: EmbeddedStack, scenario: Scenario, limit: float
) -> tuple[str, CaseStatus | None, str, float]:
    """Run the scenario, approve as it asks, and wait until the case ends: its id, last
    status, how it ended (closed, waiting, wedged) and the seconds from the finding."""
    settings = Settings(lab=True)
    case = await asyncio.to_thread(
        run_scenario,
        stack.aws_url,
        stack.webhook_url,
        LAB_WEBHOOK_TOKEN,
        settings.webhook_token_header,
        stack.state_dir,
        scenario,
    )
    start = time.monotonic()
    client = await connect(Settings(lab=True, temporal_address=stack.temporal_address))
    handle = client.get_workflow_handle_for(CaseWorkflow.run, case.case_id)
    approved: set[str] = set()
    status: CaseStatus | None = None
    settled: tuple[str, float] | None = None
    while time.monotonic() - start < limit:
        status = await handle.query(CaseWorkflow.status)
        now = time.monotonic()
        if status.phase is Phase.CLOSED:
            # The result, not this status: notifications still being delivered at close
            # are on the result's timeline.
            async with asyncio.timeout(300):
                status = await handle.result()
            return case.case_id, status, "closed", now - start
        pending = status.pending_actions()
        to_approve = [a for a in pending if a.kind not in WAITING_KINDS and a.id not in approved]
        if to_approve:
            approved.add(to_approve[0].id)
            await asyncio.to_thread(approve, stack, case.case_id, to_approve[0].id)
            settled = None
            continue
        if pending and all(a.kind in WAITING_KINDS for a in pending):
            mark = _fingerprint(status)
            if settled is None or settled[0] != mark:
                settled = (mark, now)
            elif now - settled[1] >= SETTLE_SECONDS:
                return case.case_id, status, "waiting", settled[1] - start
        else:
            settled = None
        await asyncio.sleep(0.5)
    return case.case_id, status, "wedged", time.monotonic() - start


# -- AWS, as an observer sees it --------------------------------------------------------


def _client(stack: EmbeddedStack, service: str) -> Any:
    session = boto3.Session(
        aws_access_key_id="AKIATESTOBSERVER0001",
        aws_secret_access_key="observer",  # noqa: S106 - the lab's observer, no secret
        region_name=lab_world.REGION,
    )
    return session.client(service, endpoint_url=stack.aws_url)  # type: ignore[call-overload]


def aws_state(stack: EmbeddedStack) -> dict[str, Any]:
    """What a case changes, keyed by names (ids differ between stacks): users with their
    keys' statuses, policies and console access; roles' policies; Lambda functions;
    instances' states by name; snapshots; trails' logging."""
    iam, ec2, trail = (_client(stack, s) for s in ("iam", "ec2", "cloudtrail"))
    state: dict[str, Any] = {}
    for function in _client(stack, "lambda").list_functions()["Functions"]:
        state[f"function {function['FunctionName']}"] = True
    for user in iam.list_users()["Users"]:
        name = user["UserName"]
        keys = iam.list_access_keys(UserName=name)["AccessKeyMetadata"]
        try:
            iam.get_login_profile(UserName=name)
            console = True
        except iam.exceptions.NoSuchEntityException:
            console = False
        attached = iam.list_attached_user_policies(UserName=name)["AttachedPolicies"]
        state[f"user {name}"] = {
            "keys": sorted(k["Status"] for k in keys),
            "policies": sorted(iam.list_user_policies(UserName=name)["PolicyNames"]),
            "attached": sorted(p["PolicyName"] for p in attached),
            "console": console,
        }
    for role in iam.list_roles()["Roles"]:
        name = role["RoleName"]
        attached = iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]
        state[f"role {name}"] = {
            "policies": sorted(iam.list_role_policies(RoleName=name)["PolicyNames"]),
            "attached": sorted(p["PolicyName"] for p in attached),
            "trust": json.dumps(role["AssumeRolePolicyDocument"], sort_keys=True),
        }
    instances: Counter[str] = Counter()
    for reservation in ec2.describe_instances()["Reservations"]:
        for instance in reservation["Instances"]:
            tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
            profile = instance.get("IamInstanceProfile", {}).get("Arn", "").split("/")[-1]
            label = tags.get("Name") or profile or instance["ImageId"]
            state_name = instance["State"]["Name"]
            # A stop in progress and done are the same step taken.
            state_name = {"stopping": "stopped", "shutting-down": "terminated"}.get(
                state_name, state_name
            )
            instances[f"instance {label} {state_name}"] += 1
    state.update(instances)
    snapshots = ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
    state["snapshots"] = len(snapshots)
    for description in trail.describe_trails()["trailList"]:
        logging_on = trail.get_trail_status(Name=description["TrailARN"])["IsLogging"]
        state[f"trail {description['Name']}"] = logging_on
    return state


def duplicates(stack: EmbeddedStack) -> list[str]:
    """What a case must do once and AWS holds twice: a revocation policy on one principal,
    or two snapshots of one volume."""
    iam, ec2 = _client(stack, "iam"), _client(stack, "ec2")
    found = []
    revocations = (names.REVOKE_SESSIONS_POLICY_NAME, names.REVOKE_USER_TOKENS_POLICY_NAME)
    for role in iam.list_roles()["Roles"]:
        policies = iam.list_role_policies(RoleName=role["RoleName"])["PolicyNames"]
        attached = iam.list_attached_role_policies(RoleName=role["RoleName"])["AttachedPolicies"]
        named = [p for p in policies if p.startswith(revocations)]
        named += [p["PolicyName"] for p in attached if p["PolicyName"].startswith(revocations)]
        if len(named) > 1:
            found.append(f"role {role['RoleName']} has {len(named)} revocation policies")
    for user in iam.list_users()["Users"]:
        policies = iam.list_user_policies(UserName=user["UserName"])["PolicyNames"]
        named = [p for p in policies if p.startswith(revocations)]
        if len(named) > 1:
            found.append(f"user {user['UserName']} has {len(named)} revocation policies")
    volumes = Counter(s["VolumeId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"])
    found += [f"volume {v} has {n} snapshots" for v, n in sorted(volumes.items()) if n > 1]
    return found


def differences(baseline: dict[str, Any], state: dict[str, Any]) -> list[str]:
    diffs = []
    for key in sorted(set(baseline) | set(state)):
        if baseline.get(key) != state.get(key):
            diffs.append(
                f"{key}: {state.get(key, 'absent')} (undisturbed: {baseline.get(key, 'absent')})"
            )
    return diffs


def calls_made(stack: EmbeddedStack) -> Counter[str]:
    """The AWS calls the worker made, counted from its QUENCH_LAB_LOG_CALLS lines."""
    log = (stack.state_dir / "logs" / "worker.log").read_text(errors="replace")
    return Counter(CALL_LINE.findall(log))


# -- one run ----------------------------------------------------------------------------


async def run_case(
    scenario: Scenario, operation: str | None, fault: str | None, limit: float
) -> tuple[Run, dict[str, Any], Counter[str]]:
    """One case on a fresh stack; with no operation, the undisturbed run."""
    run = Run(scenario, operation or "(none)", fault or "(none)")
    faults = {operation: fault} if operation and fault else None
    stack = start_stack(faults)
    state: dict[str, Any] = {}
    calls: Counter[str] = Counter()
    try:
        try:
            run.case_id, status, run.ended, run.seconds = await drive_case(stack, scenario, limit)
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
            baseline, base_state, calls = await run_case(scenario, None, None, args.timeout)
            runs.append(baseline)
            operations[scenario] = sorted(calls)
            print(row(baseline), flush=True)
            print(f"  calls: {dict(sorted(calls.items()))}", flush=True)
        chosen = args.operations or sorted(calls)
        for operation in chosen:
            for fault in args.faults:
                run, state, _ = await run_case(scenario, operation, fault, args.timeout)
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
    parser.add_argument(
        "--scenario",
        type=lambda v: [s for s in v.split(",") if s],
        default=list(SCENARIOS),
        help=f"comma-separated scenarios (default: {','.join(SCENARIOS)})",
    )
    parser.add_argument(
        "--operations",
        type=lambda v: [s for s in v.split(",") if s],
        default=None,
        help="comma-separated service:Operation (default: every call the undisturbed run made)",
    )
    parser.add_argument(
        "--faults",
        type=lambda v: [s for s in v.split(",") if s],
        default=list(FAULTS),
        help=f"comma-separated faults (default: {','.join(FAULTS)})",
    )
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
    parser.add_argument("--output", type=Path, default=Path("fault-matrix.md"))
    args = parser.parse_args(argv)
    for scenario in args.scenario:
        if scenario not in SCENARIOS:
            parser.error(f"no scenario {scenario!r}; there are {', '.join(SCENARIOS)}")
    for fault in args.faults:
        if fault not in FAULTS:
            parser.error(f"no fault {fault!r}; there are {', '.join(FAULTS)}")
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
