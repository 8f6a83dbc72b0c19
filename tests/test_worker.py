"""The worker serves everything the case workflow asks for."""

import re
from pathlib import Path

import boto3
from temporalio import activity

from activities.aws import AwsClients
from config.settings import Settings
from worker import build_activities

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"


def _registered(settings: Settings) -> set[str]:
    clients = AwsClients(boto3.Session(region_name="us-east-1"), "us-east-1")
    names = set()
    for fn in build_activities(settings, clients):
        definition = activity._Definition.from_callable(fn)
        assert definition is not None and definition.name is not None
        names.add(definition.name)
    return names


def test_every_activity_the_workflows_call_is_registered():
    called = set()
    for module in WORKFLOWS.rglob("*.py"):
        called |= set(re.findall(r"\w+Activities\.(\w+)", module.read_text()))
    assert called, "found no activity calls in workflows/"
    for source in ("s3", "lookup"):
        settings = Settings(
            evidence_bucket="evidence", cloudtrail_bucket="trail", cloudtrail_source=source
        )
        assert called <= _registered(settings), called - _registered(settings)
