"""`quench report` where the AWS holding the report cannot be read: the error says what is
missing and how to give it (`--lab` for a case the lab ran), not botocore's bare words."""

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import pytest_asyncio
from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker

from lab import world as lab_world
from models.activities import WriteReportInput, WriteReportResult
from models.case import EvidenceRecord, Phase
from tests.cli.conftest import Run, case_activities, command_line, wait_for
from tests.support import ACCOUNT, finding_event
from worker import WORKFLOWS
from workflows.case import CaseWorkflow

# Every place boto3 looks for credentials, emptied: what a fresh shell on a laptop has.
CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "QUENCH_AWS_ENDPOINT_URL",
    "QUENCH_LAB",
)


def _report_in(bucket: str) -> WriteReportResult:
    def record(suffix: str) -> EvidenceRecord:
        return EvidenceRecord(
            name="post-incident-report",
            bucket=bucket,
            key=f"cases/c/evidence/post-incident-report.{suffix}",
            sha256="0" * 64,
            size_bytes=2,
            captured_at=datetime(2026, 11, 22, tzinfo=UTC),
        )

    return WriteReportResult(json_report=record("json"), markdown_report=record("md"))


@pytest_asyncio.fixture
async def closed_case(
    request, dev_server_env, monkeypatch, capsys, tmp_path
) -> AsyncIterator[tuple[Run, str]]:
    """A case closed (its containment rejected) whose report the worker wrote to the
    bucket the test names; the command line, with no AWS credentials anywhere."""
    bucket: str = request.param

    @activity.defn(name="write_report")
    async def write_report(input: WriteReportInput) -> WriteReportResult:
        return _report_in(bucket)

    client: Client = dev_server_env.client
    queue = f"cli-report-{uuid.uuid4()}"
    activities = [a for a in case_activities() if a.__name__ != "write_report"]
    async with Worker(
        client, task_queue=queue, workflows=WORKFLOWS, activities=[*activities, write_report]
    ):
        run = command_line(client, queue, monkeypatch, capsys)
        for name in CREDENTIAL_VARIABLES:
            monkeypatch.delenv(name, raising=False)
        nowhere = tmp_path / "no-aws-files"
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(nowhere))
        monkeypatch.setenv("AWS_CONFIG_FILE", str(nowhere))
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        monkeypatch.chdir(tmp_path)  # no .env of the checkout's

        key = "ASIA" + uuid.uuid4().hex[:16].upper()
        finding = tmp_path / "finding.json"
        finding.write_text(json.dumps(finding_event(access_key_id=key)))
        ran = await run("start", str(finding))
        assert ran.code == 0, ran.err
        case_id = f"case-{ACCOUNT}-{key}"
        handle = client.get_workflow_handle_for(CaseWorkflow.run, case_id)
        (action,) = (await wait_for(handle, lambda s: bool(s.pending_actions()))).pending_actions()
        ran = await run("reject", case_id, action.id, "--by", "bob", "--reason", "drill")
        assert ran.code == 0, ran.err
        status = await handle.result()
        assert status.phase is Phase.CLOSED and status.report is not None
        yield run, case_id


@pytest.mark.parametrize("closed_case", [lab_world.EVIDENCE_BUCKET], indirect=True)
async def test_a_lab_case_read_without_credentials_is_told_to_add_lab(closed_case):
    run, case_id = closed_case

    ran = await run("report", case_id)

    assert ran.code == 1
    assert ran.out == ""
    (line,) = ran.err.splitlines()
    where = f"s3://{lab_world.EVIDENCE_BUCKET}/cases/c/evidence/post-incident-report.md"
    assert line.startswith(f"error: no AWS credentials to read the report from {where}; ")
    assert "this case ran in the lab" in line
    assert f"`quench report {case_id} --lab`" in line
    assert "Unable to locate credentials" not in line


@pytest.mark.parametrize("closed_case", ["acme-incident-evidence"], indirect=True)
async def test_a_case_read_without_credentials_is_told_how_to_give_them(closed_case):
    run, case_id = closed_case

    ran = await run("report", case_id, "--json")

    assert ran.code == 1
    (line,) = ran.err.splitlines()
    where = "s3://acme-incident-evidence/cases/c/evidence/post-incident-report.json"
    assert line.startswith(f"error: no AWS credentials to read the report from {where}: ")
    assert "AWS_PROFILE" in line and "AWS_ACCESS_KEY_ID" in line
    assert "s3:GetObject in acme-incident-evidence" in line
    assert "--lab" not in line
