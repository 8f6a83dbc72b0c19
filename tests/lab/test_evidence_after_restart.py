"""Issue 14: a lab case's evidence after `quench up` resumes. The real stack runs the
ec2-role scenario to a closed case, then the user-key scenario to its first approval,
stops, and starts again on the same state directory, so the lab's AWS is rebuilt from the
checkpoint its stop wrote; then every evidence object must read back with the SHA-256 its
case recorded, the lab's AWS must hold the ids the scenarios saved (build-bot's key above
all), and no secret of the attacks may be on disk, in the recording or the checkpoint."""

import asyncio
import base64
import gzip
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_asyncio
from botocore.config import Config

from config.settings import Settings
from config.temporal import connect
from lab import checkpoint
from lab import world as lab_world
from lab.aws_server import RECORDING_NAME
from lab.checkpoint import CHECKPOINT_NAME
from lab.scenario import cases_run
from lab.user_key_attack import UserKeyAttackReport
from stack.embedded import LAB_READY_FILE, EmbeddedStack
from tests.e2e.support import approve_until_closed, lab_stack_config, open_lab_case, session
from tests.lab.story_secrets import capture_story_secrets
from workflows.case import CaseWorkflow

pytestmark = pytest.mark.e2e


def _s3(stack: EmbeddedStack) -> Any:
    # Bytes as stored, compared by hash here: botocore's own checksum check would raise on
    # a changed object before the test could say which objects changed.
    return session().client(
        "s3",
        endpoint_url=stack.aws_url,
        config=Config(response_checksum_validation="when_required"),
    )


def _evidence_bucket(stack: EmbeddedStack) -> dict[str, tuple[str, str]]:
    """Every object in the evidence bucket: the SHA-256 of its bytes as read now, and the
    one its writer put in its metadata."""
    s3 = _s3(stack)
    objects = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=lab_world.EVIDENCE_BUCKET):
        for listed in page.get("Contents", []):
            got = s3.get_object(Bucket=lab_world.EVIDENCE_BUCKET, Key=listed["Key"])
            objects[listed["Key"]] = (
                hashlib.sha256(got["Body"].read()).hexdigest(),
                got["Metadata"].get("sha256", ""),
            )
    return objects


@pytest_asyncio.fixture(scope="module")
async def resumed(tmp_path_factory):
    """A closed ec2-role case, an open user-key case, and the stack started again on their
    state directory: the stack, the ec2-role lab case, the evidence bucket before the
    restart, and the attacks' secrets."""
    config = lab_stack_config(tmp_path_factory.mktemp("quench-resume"))
    with pytest.MonkeyPatch.context() as monkeypatch:
        secrets = capture_story_secrets(monkeypatch)
        stack = EmbeddedStack(config)
        await asyncio.to_thread(stack.start)
        try:
            case, handle, _ = await open_lab_case(stack, "ec2-role")
            await approve_until_closed(
                stack, handle, case.case_id, ("contain-", "eradicate-", "recover-")
            )
            async with asyncio.timeout(120):
                await handle.result()
            before = await asyncio.to_thread(_evidence_bucket, stack)
            # The user-key scenario after a whole case: the worker's many calls (reads,
            # snapshots, stop and start, SSM commands, deletes) came before its ids.
            await open_lab_case(stack, "user-key")
        finally:
            await asyncio.to_thread(stack.stop)
    # `quench up` again: the same state directory, so the lab's AWS loads the checkpoint
    # its stop wrote, and replays what was recorded after it (nothing).
    stack = EmbeddedStack(config)
    await asyncio.to_thread(stack.start)
    try:
        yield stack, case, before, secrets
    finally:
        await asyncio.to_thread(stack.stop)


async def test_every_evidence_object_keeps_its_recorded_hash_after_the_lab_resumes(resumed):
    stack, case, before, _ = resumed
    assert (stack.state_dir / LAB_READY_FILE).read_text() == "replayed"
    lab_log = (stack.state_dir / "logs" / "lab-aws.log").read_text().split("starting lab-aws")[-1]
    assert "from the checkpoint, 0 requests replayed" in lab_log
    client = await connect(Settings(lab=True, temporal_address=stack.temporal_address))
    result = await client.get_workflow_handle_for(CaseWorkflow.run, case.case_id).result()
    assert result.report is not None
    records = [*result.evidence, result.report.json_report, result.report.markdown_report]
    s3 = _s3(stack)
    changed = [
        record.key
        for record in records
        if hashlib.sha256(
            s3.get_object(Bucket=record.bucket, Key=record.key)["Body"].read()
        ).hexdigest()
        != record.sha256
    ]
    assert changed == [], f"{len(changed)} of {len(records)} evidence objects changed"
    # Not only the case's own list: every object Quench wrote to the bucket (the
    # investigation's scopes and baselines too) reads back as it was, and as its metadata says.
    after = await asyncio.to_thread(_evidence_bucket, stack)
    assert len(before) > len(records)
    assert sorted(k for k in before if after.get(k) != before[k]) == []
    assert sorted(k for k, (read, written) in after.items() if read != written) == []


def test_the_lab_aws_has_the_ids_the_scenarios_saved_after_the_lab_resumes(resumed):
    stack, _, _, _ = resumed
    (ec2_role, user_key) = cases_run(stack.state_dir)
    assert isinstance(user_key.attack, UserKeyAttackReport)
    iam = session().client("iam", endpoint_url=stack.aws_url)
    attack = user_key.attack
    keys = {
        attack.user_name: attack.leaked_access_key_id,
        attack.second_generation_user: attack.second_generation_access_key_id,
        attack.third_generation_user: attack.third_generation_access_key_id,
    }
    held = {
        user: [k["AccessKeyId"] for k in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]]
        for user in keys
    }
    assert held == {user: [key] for user, key in keys.items()}
    assert iam.get_user(UserName=attack.user_name)["User"]["UserId"] == attack.user_id
    assert iam.get_role(RoleName=lab_world.APP_ROLE)["Role"]["RoleId"] == ec2_role.world.role_id
    ec2 = session().client("ec2", endpoint_url=stack.aws_url)
    instances = [
        i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
    ]
    assert ec2_role.world.instance_id in instances


def test_no_secret_of_the_attack_is_on_disk(resumed):
    stack, case, _, secrets = resumed
    # The attack stole a session (its secret key and token), gave its backdoor user a key
    # (its secret) and a console password.
    assert {"secretaccesskey", "token", "password"} <= set(secrets)
    known = {value.encode() for values in secrets.values() for value in values}
    assert len(known) >= 4
    recording = stack.state_dir / RECORDING_NAME
    # They reached the lab's AWS: the password as a parameter, the token with every call of
    # the stolen session (which the recording keeps, signed with its key id).
    entries = [json.loads(line) for line in recording.read_text().splitlines()]
    assert any(b"Action=CreateLoginProfile" in body for body in _bodies(entries))
    stolen_key = f"Credential={case.attack.stolen_access_key_id}/"
    assert any(stolen_key in entry["headers"].get("Authorization", "") for entry in entries)
    files = [p for p in stack.state_dir.rglob("*") if p.is_file()]
    holding = sorted(
        str(p.relative_to(stack.state_dir))
        for p in files
        if any(secret in p.read_bytes() for secret in known)
    )
    assert holding == []
    # Nor inside a recorded body, kept in base64, or in a gzip file written to S3.
    assert not any(secret in body for body in _bodies(entries) for secret in known)
    # Nor in moto's state as the checkpoint keeps it, compressed on disk.
    _, state = checkpoint.read(stack.state_dir / CHECKPOINT_NAME, recording)
    assert not any(secret in state for secret in known)


def _bodies(entries: list[dict[str, Any]]) -> Iterator[bytes]:
    """Each recorded request body as the server received it, gzip opened."""
    for entry in entries:
        body = entry.get("body") or ""
        raw = base64.b64decode(body) if entry.get("body_encoded") else body.encode()
        yield gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
