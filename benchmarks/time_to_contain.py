"""Time to contain: how long a stolen credential keeps working after GuardDuty's finding
reaches Quench.

The embedded stack with the lab (the Temporal dev server, the lab's AWS, the worker and
the webhook, each its own process) and a policy that contains without waiting for a
person (`QUENCH_NO_APPROVAL_ACTIONS='["contain","contain-key"]'`). For each round, N
lab-shaped cases at once, each on a credential of its own:

- an EC2 instance role (`--path role`): a role with an instance profile and a running
  instance, the key read from the instance's metadata over SSM as the lab's attacker does.
  Timed from the webhook's 202 to the role's `AWSRevokeOlderSessions` policy being readable
  in AWS, to the instance running again after its stop, and to the rotation verified (the
  case's phase "contained", when it read the new key over SSM);
- an IAM user's access key (`--path user-key`): timed from the 202 to the key read as
  Inactive and the user's token-deny policy readable.

Each milestone is the completion of the activity that made it, as the server's history
records it: the activity returns only once AWS answered (the policy written, the key's
status changed, the instance running, the new key read over SSM), so the change was
readable by then; after each round AWS is read once to check that it shows what the
histories say. The floor is measured the same way on the same server: a workflow started
and one activity making the same PutRolePolicy (benchmarks/contain_floor.py), timed from
the start call's answer. The lab's AWS writes its checkpoint only when idle here: a
checkpoint holds every request for a second or more, a cost of the lab, not of Quench.

    python -m benchmarks.time_to_contain                  # 1, 10 and 20 cases, both paths
    python -m benchmarks.time_to_contain --cases 20 --path role --json out.json
"""

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.worker import Worker

from benchmarks.contain_floor import (
    FLOOR_TASK_QUEUE,
    ContainFloorWorkflow,
    FloorActivities,
    FloorInput,
)
from benchmarks.finding_storm import machine
from benchmarks.lab_case import observer_client, start_stack
from config import names
from config.settings import LAB_WEBHOOK_TOKEN, Settings
from config.temporal import connect
from lab import world as lab_world
from lab.attack import steal_instance_credentials
from lab.guardduty import eventbridge_event, instance_role_finding, user_key_finding
from models.case import CaseStatus, Phase
from stack.embedded import EmbeddedStack
from worker import WORKFLOW_RUNNER
from workflows.case import CaseWorkflow

Path_ = Literal["role", "user-key", "floor"]
PATHS: tuple[Path_, ...] = ("role", "user-key")
# Cases contain on their own, then sit in a long watch: nothing they do after containment
# runs while a later round is measured.
CONTAIN_ENV = {
    "QUENCH_NO_APPROVAL_ACTIONS": json.dumps(["contain", "contain-key"]),
    "QUENCH_WATCH_SECONDS": "7200",
    "QUENCH_CHECK_EVERY_SECONDS": "3600",
    "QUENCH_LAB_LOG_CALLS": "false",
}
# The lab's checkpoint only when idle: one holds every request for a second or more.
LAB_OPTIONS = ("--checkpoint-every", "0")
THREAT_IP = "198.51.100.77"
AGENT = "aws-cli/2.15.0 benchmark"
# How long one round may take before its missing figures are reported as missing.
ROUND_LIMIT_SECONDS = 120.0


@dataclass
class Target:
    """One stolen credential, its case, and when each milestone was reached."""

    path: Path_
    name: str  # the role or the user
    access_key_id: str
    event: dict[str, Any]
    instance_id: str = ""
    accepted_wall: datetime | None = None  # when the webhook answered 202
    workflow_id: str = ""
    seen: dict[str, float] = field(default_factory=dict)  # milestone -> seconds after 202


# -- the credentials ---------------------------------------------------------------------


def role_targets(
    stack: EmbeddedStack, world: lab_world.LabWorld, prefix: str, count: int
) -> list[Target]:
    """`count` instance roles, each with its profile and a running instance, and the key
    each instance's metadata serves, as the lab's attacker reads it."""
    iam, ec2, ssm = (observer_client(stack, s) for s in ("iam", "ec2", "ssm"))
    image_id = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    now = datetime.now(UTC)
    targets = []
    for i in range(count):
        name = f"{prefix}-app-{i}"
        role = iam.create_role(
            RoleName=name, AssumeRolePolicyDocument=json.dumps(lab_world.EC2_TRUST_POLICY)
        )["Role"]
        iam.put_role_policy(
            RoleName=name,
            PolicyName="app",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}],
                }
            ),
        )
        profile = iam.create_instance_profile(InstanceProfileName=name)["InstanceProfile"]
        iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
        instance = ec2.run_instances(
            ImageId=image_id,
            InstanceType="t3.micro",
            MinCount=1,
            MaxCount=1,
            IamInstanceProfile={"Name": name},
            BlockDeviceMappings=[
                {"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 8, "VolumeType": "gp3"}}
            ],
        )["Instances"][0]
        instance_id = instance["InstanceId"]
        shaped = world.model_copy(update={"instance_id": instance_id, "role_name": name})
        stolen = steal_instance_credentials(stack.aws_url, shaped, ssm)["AccessKeyId"]
        detail = instance_role_finding(
            account_id=world.account_id,
            region=world.region,
            access_key_id=stolen,
            principal_id=f"{role['RoleId']}:{instance_id}",
            role_name=name,
            instance_id=instance_id,
            instance_profile_arn=profile["Arn"],
            instance_profile_id=profile["InstanceProfileId"],
            remote_ip=THREAT_IP,
            api="GetCallerIdentity",
            service_name="sts.amazonaws.com",
            user_agent=AGENT,
            first_seen=now,
            last_seen=now,
            count=1,
        )
        targets.append(Target("role", name, stolen, eventbridge_event(detail), instance_id))
    return targets


def user_targets(
    stack: EmbeddedStack, world: lab_world.LabWorld, prefix: str, count: int
) -> list[Target]:
    """`count` IAM users, each with a policy and the access key that leaked."""
    iam = observer_client(stack, "iam")
    now = datetime.now(UTC)
    targets = []
    for i in range(count):
        name = f"{prefix}-bot-{i}"
        user = iam.create_user(UserName=name)["User"]
        iam.attach_user_policy(
            UserName=name, PolicyArn="arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess"
        )
        key = iam.create_access_key(UserName=name)["AccessKey"]["AccessKeyId"]
        detail = user_key_finding(
            account_id=world.account_id,
            region=world.region,
            access_key_id=key,
            principal_id=user["UserId"],
            user_name=name,
            remote_ip=THREAT_IP,
            api="GetCallerIdentity",
            service_name="sts.amazonaws.com",
            user_agent=AGENT,
            first_seen=now,
            last_seen=now,
            count=1,
        )
        targets.append(Target("user-key", name, key, eventbridge_event(detail)))
    return targets


# -- when each milestone was reached ------------------------------------------------------

# The activity whose completion marks each milestone: it returns only once AWS answered
# (the policy written, the key's status changed, the instance running, the new key read
# over SSM), so its completion, as the server records it, is when the change was readable.
MILESTONE_ACTIVITIES: dict[Path_, dict[str, str]] = {
    "role": {
        "policy": "revoke_role_sessions",
        "running": "start_instance",
        "verified": "probe_instance_credentials",
    },
    "user-key": {"policy": "deny_user_tokens_before", "inactive": "deactivate_access_key"},
    "floor": {"policy": "ContainFloor.put_revocation"},
}


async def _history(client: Client, target: Target) -> AsyncIterator[tuple[Any, float, str]]:
    """The case's history events, each with its seconds after the 202 and, for an
    activity's events, the activity's name."""
    assert target.accepted_wall is not None
    scheduled: dict[int, str] = {}
    async for event in client.get_workflow_handle(target.workflow_id).fetch_history_events():
        name = ""
        if event.HasField("activity_task_scheduled_event_attributes"):
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            scheduled[event.event_id] = name
        for field_name in (
            "activity_task_started_event_attributes",
            "activity_task_completed_event_attributes",
        ):
            if event.HasField(field_name):
                name = scheduled.get(getattr(event, field_name).scheduled_event_id, "")
        at = event.event_time.ToDatetime(tzinfo=UTC)
        yield event, (at - target.accepted_wall).total_seconds(), name


async def _milestones_from_history(client: Client, target: Target) -> None:
    """Each milestone's time after the 202, from the first completion of its activity."""
    wanted = MILESTONE_ACTIVITIES[target.path]
    async for event, after, name in _history(client, target):
        if event.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            continue
        for milestone, activity_name in wanted.items():
            if name == activity_name:
                target.seen.setdefault(milestone, after)


def _check_in_aws(stack: EmbeddedStack, targets: Sequence[Target]) -> list[str]:
    """What AWS does not show of what the histories say was done: nothing, or a lie."""
    iam, ec2 = observer_client(stack, "iam"), observer_client(stack, "ec2")
    wrong = []
    for target in targets:
        if target.path in ("role", "floor") and "policy" in target.seen:
            policies = iam.list_role_policies(RoleName=target.name)["PolicyNames"]
            if names.REVOKE_SESSIONS_POLICY_NAME not in policies:
                wrong.append(f"role {target.name} has no {names.REVOKE_SESSIONS_POLICY_NAME}")
        if target.path == "role" and "running" in target.seen:
            described = ec2.describe_instances(InstanceIds=[target.instance_id])
            state = described["Reservations"][0]["Instances"][0]["State"]["Name"]
            if state != "running":
                wrong.append(f"instance {target.instance_id} is {state}")
        if target.path == "user-key":
            if "policy" in target.seen:
                policies = iam.list_user_policies(UserName=target.name)["PolicyNames"]
                if names.REVOKE_USER_TOKENS_POLICY_NAME not in policies:
                    wrong.append(f"user {target.name} has no token deny")
            if "inactive" in target.seen:
                keys = iam.list_access_keys(UserName=target.name)["AccessKeyMetadata"]
                status = {k["AccessKeyId"]: k["Status"] for k in keys}
                if status.get(target.access_key_id) != "Inactive":
                    wrong.append(f"key {target.access_key_id} is not inactive")
    return wrong


# -- one round ---------------------------------------------------------------------------


def post(stack: EmbeddedStack, target: Target) -> None:
    settings = Settings(lab=True)
    response = httpx.post(
        f"{stack.webhook_url}/v1/events/eventbridge",
        json=target.event,
        headers={settings.webhook_token_header: LAB_WEBHOOK_TOKEN},
        timeout=60,
    )
    target.accepted_wall = datetime.now(UTC)
    if response.status_code != 202:
        raise RuntimeError(f"the webhook answered {response.status_code}: {response.text}")
    target.workflow_id = str(response.json()["case_id"])


async def case_round(stack: EmbeddedStack, client: Client, targets: list[Target]) -> dict[str, Any]:
    """Every target's finding posted at once; each case's milestones from its history once
    it is in its watch, checked against AWS."""
    with ThreadPoolExecutor(max_workers=len(targets)) as pool:
        list(pool.map(lambda t: post(stack, t), targets))
    statuses = await _settled(client, targets)
    for target in targets:
        await _milestones_from_history(client, target)
    figures: dict[str, Any] = {"cases": len(targets)}
    for milestone in MILESTONE_ACTIVITIES[targets[0].path]:
        figures[milestone] = _spread([t.seen.get(milestone) for t in targets])
    if targets[0].path == "user-key":
        figures["both"] = _spread(
            [
                None if p is None or k is None else max(p, k)
                for p, k in ((t.seen.get("policy"), t.seen.get("inactive")) for t in targets)
            ]
        )
    figures["not_in_aws"] = await asyncio.to_thread(_check_in_aws, stack, targets)
    figures["evidence_order"] = _order(statuses[0])
    figures["first_case_history"] = await _history_timeline(client, targets[0])
    return figures


async def _history_timeline(client: Client, target: Target) -> list[str]:
    """The first case's history up to its containment, as milliseconds after the 202:
    where the time goes."""
    lines = []
    async for event, after, name in _history(client, target):
        kind = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_").lower()
        lines.append(f"{round(after * 1000):>6} ms {kind} {name}".rstrip())
        if after > ROUND_LIMIT_SECONDS or len(lines) > 200:
            break
    return lines


def _order(status: CaseStatus | None) -> list[str]:
    """The case's evidence and its cut-off, in the order they were made."""
    if status is None:
        return []
    rows = [(e.captured_at, f"evidence {e.name}") for e in status.evidence]
    if status.cut_off_at is not None:
        rows.append((status.cut_off_at, "cut-off"))
    return [what for _, what in sorted(rows)]


async def _settled(client: Client, targets: list[Target]) -> list[CaseStatus | None]:
    """Each case's status once it is in its watch with its investigation done, so the next
    round runs on an idle worker (or as it is at the round's limit)."""
    statuses: list[CaseStatus | None] = [None] * len(targets)
    limit = time.monotonic() + ROUND_LIMIT_SECONDS
    while time.monotonic() < limit:
        for i, target in enumerate(targets):
            handle = client.get_workflow_handle(target.workflow_id)
            statuses[i] = await handle.query(CaseWorkflow.status)
        if all(
            s is not None and s.phase is Phase.WATCHING and s.investigation is not None
            for s in statuses
        ):
            break
        await asyncio.sleep(0.5)
    return statuses


async def floor_round(stack: EmbeddedStack, client: Client, roles: list[str]) -> dict[str, Any]:
    """The same PutRolePolicy from a workflow and one activity, on `roles` at once."""
    targets = [Target("floor", name, "", {}) for name in roles]

    async def start(target: Target) -> None:
        handle = await client.start_workflow(
            ContainFloorWorkflow.run,
            FloorInput(role_name=target.name),
            id=f"floor-{target.name}",
            task_queue=FLOOR_TASK_QUEUE,
        )
        target.accepted_wall = datetime.now(UTC)
        target.workflow_id = handle.id

    await asyncio.gather(*(start(t) for t in targets))
    async with asyncio.timeout(ROUND_LIMIT_SECONDS):
        await asyncio.gather(*(client.get_workflow_handle(t.workflow_id).result() for t in targets))
    for target in targets:
        await _milestones_from_history(client, target)
    return {
        "cases": len(targets),
        "policy": _spread([t.seen.get("policy") for t in targets]),
        "not_in_aws": await asyncio.to_thread(_check_in_aws, stack, targets),
    }


def floor_roles(stack: EmbeddedStack, prefix: str, count: int) -> list[str]:
    iam = observer_client(stack, "iam")
    names_made = [f"{prefix}-floor-{i}" for i in range(count)]
    for name in names_made:
        iam.create_role(
            RoleName=name, AssumeRolePolicyDocument=json.dumps(lab_world.EC2_TRUST_POLICY)
        )
    return names_made


def _spread(seconds: Sequence[float | None]) -> dict[str, Any]:
    """Median and 99th percentile in milliseconds, and how many never got there."""
    got = sorted(s for s in seconds if s is not None)
    if not got:
        return {"p50_ms": None, "p99_ms": None, "missing": len(seconds)}
    return {
        "p50_ms": round(statistics.median(got) * 1000),
        "p99_ms": round(_percentile(got, 0.99) * 1000),
        "max_ms": round(got[-1] * 1000),
        "missing": len(seconds) - len(got),
    }


def _percentile(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank percentile: with 20 samples, p99 is the slowest."""
    rank = max(1, -(-len(ordered) * q // 1))
    return ordered[int(rank) - 1]


# -- the run -----------------------------------------------------------------------------


async def run(
    counts: Sequence[int],
    paths: Sequence[Path_],
    repeat: int = 1,
    warm_up: bool = True,
) -> dict[str, Any]:
    stack = start_stack(CONTAIN_ENV, "quench-time-to-contain-", lab_options=LAB_OPTIONS)
    try:
        world = lab_world.seed(stack.aws_url)
        lab_world.ensure_notifications(stack.aws_url)
        client = await connect(Settings(lab=True, temporal_address=stack.temporal_address))
        activities = FloorActivities(stack.aws_url, world.region)
        figures: dict[str, Any] = {"machine": machine(), "rounds": []}
        with ThreadPoolExecutor(max_workers=64) as executor:
            async with Worker(
                client,
                task_queue=FLOOR_TASK_QUEUE,
                workflows=[ContainFloorWorkflow],
                activities=[activities.put_revocation],
                activity_executor=executor,
                # The sandbox as Quench's own worker runs it.
                workflow_runner=WORKFLOW_RUNNER,
            ):
                if warm_up:
                    # A first case and floor warm the worker (its workflow sandbox, its
                    # clients): a worker that has run a case before is the one measured.
                    figures["warm_up"] = await _rounds(stack, client, world, "warm", [1], paths)
                for r in range(repeat):
                    figures["rounds"].extend(
                        await _rounds(stack, client, world, f"r{r}", counts, paths)
                    )
        return figures
    finally:
        stack.stop()


async def _rounds(
    stack: EmbeddedStack,
    client: Client,
    world: lab_world.LabWorld,
    tag: str,
    counts: Sequence[int],
    paths: Sequence[Path_],
) -> list[dict[str, Any]]:
    made: dict[Path_, Callable[..., list[Target]]] = {
        "role": role_targets,
        "user-key": user_targets,
    }
    rounds = []
    for count in counts:
        roles = await asyncio.to_thread(floor_roles, stack, f"{tag}-{count}", count)
        rounds.append({"path": "floor", **await floor_round(stack, client, roles)})
        for path in paths:
            targets = await asyncio.to_thread(made[path], stack, world, f"{tag}-{count}", count)
            rounds.append({"path": path, **await case_round(stack, client, targets)})
    return rounds


def report(figures: dict[str, Any]) -> str:
    lines = [f"time to contain on {figures['machine']}, milliseconds after the webhook's 202"]
    for row in figures["rounds"]:
        parts = [f"{row['path']:>8} x{row['cases']:<3}"]
        for milestone in ("policy", "inactive", "both", "running", "verified"):
            if milestone in row:
                spread = row[milestone]
                parts.append(
                    f"{milestone} p50 {spread['p50_ms']} ms p99 {spread['p99_ms']} ms"
                    + (f" ({spread['missing']} missing)" if spread["missing"] else "")
                )
        lines.append("  ".join(parts))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, nargs="+", default=[1, 10, 20])
    parser.add_argument("--path", choices=[*PATHS, "both"], default="both")
    parser.add_argument("--repeat", type=int, default=1, help="rounds at each count")
    parser.add_argument(
        "--no-warm-up", action="store_true", help="measure from the worker's first case on"
    )
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    paths = PATHS if args.path == "both" else (args.path,)
    figures = asyncio.run(run(args.cases, paths, args.repeat, warm_up=not args.no_warm_up))
    print(report(figures))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=2, default=str)


if __name__ == "__main__":
    main()
