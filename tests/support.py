"""Shared test material: findings in GuardDuty's shape, and Temporal environments."""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType, IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client, WorkflowHandle

from config.names import SEARCH_ATTRIBUTES
from lab.guardduty import eventbridge_event, instance_role_finding, user_key_finding
from models.finding import Finding, finding_from_guardduty

ACCOUNT = "123456789012"
REGION = "us-east-1"
ROLE = "web-app-role"
INSTANCE = "i-0a1b2c3d4e5f60718"
STOLEN_KEY = "ASIAXCSEC6TNGZ6EZUUO"


def finding_detail(**overrides: Any) -> dict[str, Any]:
    first_seen = overrides.pop("first_seen", datetime(2026, 11, 22, 7, 0, tzinfo=UTC))
    values: dict[str, Any] = {
        "account_id": ACCOUNT,
        "region": REGION,
        "access_key_id": STOLEN_KEY,
        "principal_id": f"AROAEXAMPLEROLEID0001:{INSTANCE}",
        "role_name": ROLE,
        "instance_id": INSTANCE,
        "instance_profile_arn": f"arn:aws:iam::{ACCOUNT}:instance-profile/web-app-profile",
        "instance_profile_id": "AIPAEXAMPLEPROFILE01",
        "remote_ip": "198.51.100.23",
        "api": "ListUsers",
        "service_name": "iam.amazonaws.com",
        "user_agent": "aws-cli/2.15.30 Python/3.11.8 Linux/6.1",
        "first_seen": first_seen,
        "last_seen": first_seen + timedelta(minutes=12),
        "count": 7,
        "finding_id": "lab-finding-0001",
    }
    values.update(overrides)
    return instance_role_finding(**values)


def finding(**overrides: Any) -> Finding:
    return finding_from_guardduty(finding_detail(**overrides))


def finding_event(**overrides: Any) -> dict[str, Any]:
    return eventbridge_event(finding_detail(**overrides))


PROJECT_ROOT = Path(__file__).resolve().parents[1]


def history_for_the_repo(history_json: str) -> str:
    """A recorded history fit to commit: activity-failure stack traces name files relative
    to the checkout, not where this machine keeps it. Replay never reads them."""
    return history_json.replace(f"{PROJECT_ROOT}/", "")


async def register_search_attributes(client: Client, namespace: str = "default") -> None:
    """Register Quench's search attributes (the time-skipping server starts without them)."""
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=namespace,
            search_attributes={
                key.name: IndexedValueType.ValueType(key.indexed_value_type)
                for key in SEARCH_ATTRIBUTES
            },
        )
    )


# The events a delivery (a finding, a decision) could add to a case's history.
_DELIVERY_EVENTS = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_REJECTED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ADMITTED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED,
}


async def deliveries_recorded(handle: WorkflowHandle) -> int:
    """How many updates and signals the case's history holds. Workflow-task events are
    left out: under load a task can time out and be retried, which says nothing of what
    was delivered."""
    history = await handle.fetch_history()
    return sum(1 for event in history.events if event.event_type in _DELIVERY_EVENTS)


def user_key_event(
    access_key_id: str, user_name: str, principal_id: str, remote_ip: str, account_id: str = ACCOUNT
) -> dict[str, Any]:
    """GuardDuty's event for an IAM user's key used just now from `remote_ip` (a Tor exit),
    as EventBridge delivers it."""
    now = datetime.now(UTC).replace(microsecond=0)
    return eventbridge_event(
        user_key_finding(
            account_id=account_id,
            region=REGION,
            access_key_id=access_key_id,
            principal_id=principal_id,
            user_name=user_name,
            remote_ip=remote_ip,
            api="ListBuckets",
            service_name="s3.amazonaws.com",
            user_agent="aws-cli/2.15.0",
            first_seen=now - timedelta(minutes=5),
            last_seen=now,
            count=1,
        )
    )
