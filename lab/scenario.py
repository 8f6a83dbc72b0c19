"""The lab's EC2-role scenario against a running stack: seed the account, attack it,
deliver CloudTrail, and send GuardDuty's finding to the webhook.

Each stage is saved in the state directory when done, so running it again resumes at the
first stage not yet done and a finished scenario is never repeated.
"""

import time
from pathlib import Path

import httpx
from pydantic import BaseModel

from lab.attack import AttackReport, run_attack
from lab.guardduty import eventbridge_event
from lab.world import LabWorld, seed

WORLD_FILE = "lab-world.json"
ATTACK_FILE = "lab-attack.json"
CASE_FILE = "lab-case.json"


class LabCase(BaseModel):
    case_id: str
    world: LabWorld
    attack: AttackReport


class ScenarioError(RuntimeError):
    pass


def send_finding(
    webhook_url: str, token: str, token_header: str, event: dict[str, object], attempts: int = 10
) -> str:
    """POST the finding as EventBridge does, retrying as it does on 5xx; returns the case id."""
    last = ""
    for attempt in range(attempts):
        try:
            response = httpx.post(
                f"{webhook_url}/v1/events/eventbridge",
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


def run_scenario(
    aws_url: str, webhook_url: str, token: str, token_header: str, state_dir: Path
) -> LabCase:
    world_path, attack_path, case_path = (
        state_dir / WORLD_FILE,
        state_dir / ATTACK_FILE,
        state_dir / CASE_FILE,
    )
    if case_path.exists():
        return LabCase.model_validate_json(case_path.read_text())
    if world_path.exists():
        world = LabWorld.model_validate_json(world_path.read_text())
    else:
        world = seed(aws_url)
        world_path.write_text(world.model_dump_json(indent=2))
    if attack_path.exists():
        attack = AttackReport.model_validate_json(attack_path.read_text())
    else:
        attack = run_attack(aws_url, world)
        attack_path.write_text(attack.model_dump_json(indent=2))
    case_id = send_finding(webhook_url, token, token_header, eventbridge_event(attack.finding))
    case = LabCase(case_id=case_id, world=world, attack=attack)
    case_path.write_text(case.model_dump_json(indent=2))
    return case
