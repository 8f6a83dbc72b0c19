"""A false positive with every real piece: a user's key contained after approval, the case
marked a false positive with Quench's command line, and each release approved: the key is
active again and the token deny the case put is gone, in the lab's AWS."""

import asyncio
from datetime import UTC, datetime

import pytest

from config import names
from config.settings import LAB_WEBHOOK_TOKEN, Settings
from config.temporal import connect
from lab.guardduty import eventbridge_event, user_key_finding
from lab.scenario import WORLD_FILE, send_finding
from lab.world import ACCOUNT_ID, seed
from models.case import ActionKind, Phase
from tests.e2e.support import aws, run_starter, starter_approve, wait_for
from workflows.case import CaseWorkflow

pytestmark = pytest.mark.e2e
USER = "fp-contractor"


def _user_with_a_key(stack) -> str:
    """A user of the security account with a key, the lab's world seeded first."""
    if not (stack.state_dir / WORLD_FILE).exists():
        (stack.state_dir / WORLD_FILE).write_text(seed(stack.aws_url).model_dump_json())
    iam = aws(stack, "iam")
    iam.create_user(UserName=USER)
    return str(iam.create_access_key(UserName=USER)["AccessKey"]["AccessKeyId"])


def _state(stack, key: str) -> tuple[str, list[str]]:
    iam = aws(stack, "iam")
    keys = iam.list_access_keys(UserName=USER)["AccessKeyMetadata"]
    status = next(k["Status"] for k in keys if k["AccessKeyId"] == key)
    return status, iam.list_user_policies(UserName=USER)["PolicyNames"]


async def test_a_false_positive_gives_back_the_key_and_removes_the_deny(lab_stack):
    stack = lab_stack
    key = await asyncio.to_thread(_user_with_a_key, stack)
    now = datetime.now(UTC)
    finding = user_key_finding(
        account_id=ACCOUNT_ID,
        region="us-east-1",
        access_key_id=key,
        principal_id="AIDAFALSEPOSITIVE001",
        user_name=USER,
        remote_ip="198.51.100.77",
        api="ListBuckets",
        service_name="s3.amazonaws.com",
        user_agent="aws-cli/2",
        first_seen=now,
        last_seen=now,
        count=1,
    )
    header = Settings(lab=True).webhook_token_header
    case_id = await asyncio.to_thread(
        send_finding, stack.webhook_url, LAB_WEBHOOK_TOKEN, header, eventbridge_event(finding)
    )
    client = await connect(Settings(lab=True, temporal_address=stack.temporal_address))
    handle = client.get_workflow_handle_for(CaseWorkflow.run, case_id)
    status = await wait_for(handle, lambda s: bool(s.pending_actions()))
    (contain,) = status.pending_actions()
    assert contain.kind is ActionKind.CONTAIN_USER_KEY
    await starter_approve(stack, case_id, contain.id)
    await wait_for(handle, lambda s: s.phase is Phase.WATCHING)
    assert await asyncio.to_thread(_state, stack, key) == (
        "Inactive",
        [names.REVOKE_USER_TOKENS_POLICY_NAME],
    )

    out = await run_starter(
        stack, "false-positive", case_id, "--by", "e2e@example.com", "--reason", "a red team"
    )
    assert f"{case_id} marked a false positive" in out
    marked = await handle.query(CaseWorkflow.status)
    releases = [a for a in marked.pending_actions() if a.kind is ActionKind.RELEASE]
    assert len(releases) == 2
    for release in releases:
        await starter_approve(stack, case_id, release.id)
    result = await wait_for(handle, lambda s: s.phase is Phase.CLOSED)

    assert await asyncio.to_thread(_state, stack, key) == ("Active", [])
    assert result.outcome == "false positive, marked by e2e@example.com: a red team"
    assert all(change.released_by for change in result.made)
