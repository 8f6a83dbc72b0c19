"""A lab case on an embedded stack, for the benchmarks that disturb one (the fault matrix,
the chaos run): the stack on free ports, the case driven as a person drives it (Quench's
command line approves), and AWS as an observer sees it at the end.
"""

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import boto3
from temporalio.service import RPCError

from config import names
from config.settings import LAB_WEBHOOK_TOKEN, Settings
from config.temporal import connect
from lab import world as lab_world
from lab.scenario import Scenario, run_scenario
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
STARTER = (sys.executable, "starter.py")


# -- the stack and the case -------------------------------------------------------------


def start_stack(
    env: dict[str, str],
    prefix: str,
    without: Sequence[str] = (),
    supervise: bool = True,
    lab_options: Sequence[str] = (),
) -> EmbeddedStack:
    """A fresh lab stack in a new state directory, with CASE_SETTINGS and `env` for the
    worker and webhook; the processes named in `without` are left for the caller to run,
    with `supervise` off nothing is restarted behind the caller's back, and `lab_options`
    go to the lab's AWS."""
    stack = EmbeddedStack(
        StackConfig(
            state_dir=Path(tempfile.mkdtemp(prefix=prefix)),
            temporal_port=free_port(),
            ui_port=free_port(),
            lab_aws_port=free_port(),
            webhook_port=free_port(),
            codec_port=free_port(),
            lab=True,
            extra_env={**CASE_SETTINGS, **env},
            supervise=supervise,
            lab_options=tuple(lab_options),
        )
    )
    stack.processes = [p for p in stack.processes if p.name not in without]
    stack.start()
    return stack


def approve(stack: EmbeddedStack, case_id: str, action_id: str, approver: str) -> None:
    """Approve as a person does: Quench's command line."""
    done = subprocess.run(
        [*STARTER, "approve", case_id, action_id, "--by", approver, "--reason", "benchmark"],
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
    stack: EmbeddedStack,
    scenario: Scenario,
    limit: float,
    approver: str,
    outages: bool = False,
    settle: float = SETTLE_SECONDS,
) -> tuple[str, CaseStatus | None, str, float]:
    """Run the scenario, approve as it asks, and wait until the case ends: its id, last
    status, how it ended (closed, waiting, wedged: unchanged for `settle` seconds, waiting
    only on a retry or a manual containment) and the seconds from the finding.

    With `outages`, a query or an approval that fails (no worker, no server for a moment)
    is tried again at the next look instead of ending the run."""
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
        try:
            status = await handle.query(CaseWorkflow.status)
        except RPCError:
            if not outages:
                raise
            await asyncio.sleep(0.5)
            continue
        now = time.monotonic()
        if status.phase is Phase.CLOSED:
            # The result, not this status: notifications still being delivered at close
            # are on the result's timeline.
            # A case closes once its investigation ends, which a chaos run can slow.
            async with asyncio.timeout(max(300.0, limit - (now - start))):
                status = await handle.result()
            return case.case_id, status, "closed", now - start
        pending = status.pending_actions()
        to_approve = [a for a in pending if a.kind not in WAITING_KINDS and a.id not in approved]
        if to_approve:
            approved.add(to_approve[0].id)
            try:
                await asyncio.to_thread(approve, stack, case.case_id, to_approve[0].id, approver)
            except (RuntimeError, subprocess.TimeoutExpired):
                if not outages:
                    raise
                # Sent again while the action is still pending at the next look.
                approved.discard(to_approve[0].id)
            settled = None
            continue
        if pending and all(a.kind in WAITING_KINDS for a in pending):
            mark = _fingerprint(status)
            if settled is None or settled[0] != mark:
                settled = (mark, now)
            elif now - settled[1] >= settle:
                return case.case_id, status, "waiting", settled[1] - start
        else:
            settled = None
        await asyncio.sleep(0.5)
    return case.case_id, status, "wedged", time.monotonic() - start


# -- AWS, as an observer sees it --------------------------------------------------------


def observer_client(stack: EmbeddedStack, service: str) -> Any:
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
    iam, ec2, trail = (observer_client(stack, s) for s in ("iam", "ec2", "cloudtrail"))
    state: dict[str, Any] = {}
    for function in observer_client(stack, "lambda").list_functions()["Functions"]:
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
    iam, ec2 = observer_client(stack, "iam"), observer_client(stack, "ec2")
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


# -- the command line -------------------------------------------------------------------


def comma_list(value: str) -> list[str]:
    return [item for item in value.split(",") if item]


def add_choices_option(
    parser: argparse.ArgumentParser, flag: str, allowed: Sequence[str], what: str
) -> None:
    """A comma-separated choice of `allowed` (all of them by default), each checked."""

    def parse(value: str) -> list[str]:
        chosen = comma_list(value)
        for item in chosen:
            if item not in allowed:
                raise argparse.ArgumentTypeError(
                    f"no {what} {item!r}; there are {', '.join(allowed)}"
                )
        return chosen

    parser.add_argument(
        flag,
        type=parse,
        default=list(allowed),
        help=f"comma-separated, of {', '.join(allowed)} (default: all)",
    )
