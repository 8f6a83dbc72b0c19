"""The lab's scenarios against a running stack: seed the account, attack it, deliver
CloudTrail, and send GuardDuty's finding to the webhook.

Each stage is saved in the state directory when done, so running it again resumes at the
first stage not yet done and a finished scenario is never repeated. The world is seeded
once and shared; each scenario keeps its own attack and case files, so both can run in
one stack, one after the other.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar, get_args, overload

import httpx
from pydantic import BaseModel

from lab.attack import AttackReport, ReturnReport, attacker_returns, run_attack
from lab.calls import ScenarioReport
from lab.guardduty import eventbridge_event
from lab.organization import (
    CrossAccountAttackReport,
    MemberReturnReport,
    attacker_returns_to_member,
    run_cross_account_attack,
)
from lab.user_key_attack import UserKeyAttackReport, run_user_key_attack
from lab.world import LabWorld, ensure_notifications, provision_build_bot, seed

Scenario = Literal["ec2-role", "user-key", "cross-account"]
SCENARIOS: tuple[Scenario, ...] = get_args(Scenario)
TITLES: dict[Scenario, str] = {
    "ec2-role": "EC2 role credentials stolen and abused",
    "user-key": "A CI user's long-term access key leaked and used from Tor",
    "cross-account": "A member account's instance role stolen: the case acts in that account",
}

WORLD_FILE = "lab-world.json"
# The EC2-role scenario keeps the names it had before there were two, so that a state
# directory from then resumes.
ATTACK_FILE = "lab-attack.json"
CASE_FILE = "lab-case.json"
USER_KEY_ATTACK_FILE = "lab-user-key-attack.json"
USER_KEY_CASE_FILE = "lab-user-key-case.json"
CROSS_ACCOUNT_ATTACK_FILE = "lab-cross-account-attack.json"
CROSS_ACCOUNT_CASE_FILE = "lab-cross-account-case.json"

ReportT = TypeVar("ReportT", bound=ScenarioReport)


class LabCase(BaseModel, Generic[ReportT]):
    case_id: str
    world: LabWorld
    attack: ReportT


class ScenarioError(RuntimeError):
    pass


def send_finding(
    webhook_url: str,
    token: str,
    token_header: str,
    event: dict[str, object],
    attempts: int = 10,
    dry_run: bool = False,
) -> str:
    """POST the finding as EventBridge does, retrying as it does on 5xx; returns the case id.
    With `dry_run`, to the webhook's dry-run route: a new case changes nothing."""
    last = ""
    route = "/v1/events/eventbridge" + ("?dry_run=true" if dry_run else "")
    for attempt in range(attempts):
        try:
            response = httpx.post(
                f"{webhook_url}{route}",
                json=event,
                headers={token_header: token},
                timeout=30,
            )
        except httpx.HTTPError as exc:
            last = str(exc)
        else:
            if response.status_code < 300:
                return str(response.json()["case_id"])
            if response.status_code < 500:
                raise ScenarioError(f"webhook refused the finding: {response.text}")
            last = f"{response.status_code} {response.text}"
        time.sleep(min(2**attempt, 10))
    raise ScenarioError(f"webhook did not take the finding: {last}")


@dataclass(frozen=True)
class _Stages(Generic[ReportT]):
    """One scenario's files and steps around the shared world."""

    attack_file: str
    case_file: str
    report: type[ReportT]
    case: type[LabCase[ReportT]]
    attack: Callable[[str, LabWorld], ReportT]
    # The world as the attack needs it, and as the attack left it.
    before: Callable[[str, LabWorld], LabWorld]
    after: Callable[[LabWorld, ReportT], LabWorld]


def _unchanged_before(aws_url: str, world: LabWorld) -> LabWorld:
    return world


def _unchanged_after(world: LabWorld, attack: ScenarioReport) -> LabWorld:
    return world


def _with_leaked_key(world: LabWorld, attack: UserKeyAttackReport) -> LabWorld:
    return world.model_copy(update={"build_bot_key_id": attack.leaked_access_key_id})


_EC2_ROLE = _Stages(
    attack_file=ATTACK_FILE,
    case_file=CASE_FILE,
    report=AttackReport,
    case=LabCase[AttackReport],
    attack=run_attack,
    before=_unchanged_before,
    after=_unchanged_after,
)
_USER_KEY = _Stages(
    attack_file=USER_KEY_ATTACK_FILE,
    case_file=USER_KEY_CASE_FILE,
    report=UserKeyAttackReport,
    case=LabCase[UserKeyAttackReport],
    attack=run_user_key_attack,
    before=provision_build_bot,
    after=_with_leaked_key,
)

_CROSS_ACCOUNT = _Stages(
    attack_file=CROSS_ACCOUNT_ATTACK_FILE,
    case_file=CROSS_ACCOUNT_CASE_FILE,
    report=CrossAccountAttackReport,
    case=LabCase[CrossAccountAttackReport],
    attack=run_cross_account_attack,
    before=_unchanged_before,
    after=_unchanged_after,
)
_STAGES: dict[Scenario, "_Stages[Any]"] = {
    "ec2-role": _EC2_ROLE,
    "user-key": _USER_KEY,
    "cross-account": _CROSS_ACCOUNT,
}
AnyLabCase = (
    LabCase[AttackReport] | LabCase[UserKeyAttackReport] | LabCase[CrossAccountAttackReport]
)


@overload
def run_scenario(
    aws_url: str,
    webhook_url: str,
    token: str,
    token_header: str,
    state_dir: Path,
    scenario: Literal["ec2-role"] = ...,
    dry_run: bool = ...,
) -> LabCase[AttackReport]: ...
@overload
def run_scenario(
    aws_url: str,
    webhook_url: str,
    token: str,
    token_header: str,
    state_dir: Path,
    scenario: Literal["user-key"],
    dry_run: bool = ...,
) -> LabCase[UserKeyAttackReport]: ...
@overload
def run_scenario(
    aws_url: str,
    webhook_url: str,
    token: str,
    token_header: str,
    state_dir: Path,
    scenario: Literal["cross-account"],
    dry_run: bool = ...,
) -> LabCase[CrossAccountAttackReport]: ...
@overload
def run_scenario(
    aws_url: str,
    webhook_url: str,
    token: str,
    token_header: str,
    state_dir: Path,
    scenario: Scenario,
    dry_run: bool = ...,
) -> AnyLabCase: ...
def run_scenario(
    aws_url: str,
    webhook_url: str,
    token: str,
    token_header: str,
    state_dir: Path,
    scenario: Scenario = "ec2-role",
    dry_run: bool = False,
) -> AnyLabCase:
    """Run one scenario to its case, resuming whatever an earlier run finished; with
    `dry_run`, its case is a dry run."""
    if scenario not in _STAGES:
        raise ScenarioError(f"no lab scenario {scenario!r}; there are {', '.join(SCENARIOS)}")
    case: AnyLabCase = _run(
        _STAGES[scenario], aws_url, webhook_url, token, token_header, state_dir, dry_run
    )
    return case


def _run(
    stages: _Stages[ReportT],
    aws_url: str,
    webhook_url: str,
    token: str,
    token_header: str,
    state_dir: Path,
    dry_run: bool = False,
) -> LabCase[ReportT]:
    world_path = state_dir / WORLD_FILE
    attack_path, case_path = state_dir / stages.attack_file, state_dir / stages.case_file
    if case_path.exists():
        return stages.case.model_validate_json(case_path.read_text())

    def save(world: LabWorld) -> LabWorld:
        world_path.write_text(world.model_dump_json(indent=2))
        return world

    if world_path.exists():
        world = LabWorld.model_validate_json(world_path.read_text())
    else:
        world = save(seed(aws_url))
    if (ready := stages.before(aws_url, world)) != world:
        world = save(ready)
    if attack_path.exists():
        attack = stages.report.model_validate_json(attack_path.read_text())
    else:
        attack = stages.attack(aws_url, world)
        attack_path.write_text(attack.model_dump_json(indent=2))
    if (after := stages.after(world, attack)) != world:
        world = save(after)
    ensure_notifications(aws_url)
    event = eventbridge_event(attack.finding)
    case_id = send_finding(webhook_url, token, token_header, event, dry_run=dry_run)
    case = stages.case(case_id=case_id, world=world, attack=attack)
    case_path.write_text(case.model_dump_json(indent=2))
    return case


def has_run(state_dir: Path, scenario: Scenario) -> bool:
    """Whether the scenario has run to its case on this state directory."""
    return (state_dir / _STAGES[scenario].case_file).exists()


def cases_run(state_dir: Path) -> list[AnyLabCase]:
    """The lab case of each scenario that has run on this state directory."""
    cases: list[AnyLabCase] = []
    for stages in _STAGES.values():
        path = state_dir / stages.case_file
        if path.exists():
            cases.append(stages.case.model_validate_json(path.read_text()))
    return cases


def summary(case: AnyLabCase) -> str:
    """One line on what the scenario's attacker did, for the operator."""
    world, attack = case.world, case.attack
    if isinstance(attack, CrossAccountAttackReport):
        return (
            f"stolen key {attack.stolen_access_key_id} of {attack.role_name} on "
            f"{attack.instance_id} in account {attack.account_id} ({attack.account_name}), "
            f"used from the threat list; backdoor user {attack.backdoor_user} there; "
            f"{attack.records_delivered} CloudTrail records delivered to the organisation trail"
        )
    if isinstance(attack, UserKeyAttackReport):
        return (
            f"leaked key {attack.leaked_access_key_id} of {attack.user_name}, used from Tor "
            f"exit {attack.tor_exit_ip}; attacker users {attack.second_generation_user} and "
            f"{attack.third_generation_user}; {attack.trust_changed_role} now trusts "
            f"{attack.outside_account}; {attack.records_delivered} CloudTrail records delivered"
        )
    return (
        f"stolen key {attack.stolen_access_key_id} of {world.role_name} on "
        f"{world.instance_id}, used from the threat list; backdoor user "
        f"{attack.backdoor_user}; {attack.records_delivered} CloudTrail records delivered"
    )


def attacker_returns_to_member_account(aws_url: str, state_dir: Path) -> MemberReturnReport:
    """The cross-account scenario's attacker comes back while the case watches: the
    backdoor user's key deletes the role's revocation policy, and the stolen session tries
    again. Run again once the case has quarantined the account, and the organisation
    denies what the account's own IAM no longer does."""
    case_path = state_dir / CROSS_ACCOUNT_CASE_FILE
    if not case_path.exists():
        raise ScenarioError(
            "the cross-account scenario has not run in this stack yet: run it first"
        )
    case = LabCase[CrossAccountAttackReport].model_validate_json(case_path.read_text())
    return attacker_returns_to_member(aws_url, case.attack)


def attacker_returns_to(aws_url: str, state_dir: Path) -> ReturnReport:
    """The ec2-role scenario's attacker tries the stolen key again: run it while the case
    watches, and the watch sees the attempts (denied once containment has cut the
    session off). It can be run again; each run is a new try."""
    case_path = state_dir / CASE_FILE
    if not case_path.exists():
        raise ScenarioError("the ec2-role scenario has not run in this stack yet: run it first")
    case = LabCase[AttackReport].model_validate_json(case_path.read_text())
    return attacker_returns(aws_url, case.world, case.attack)
