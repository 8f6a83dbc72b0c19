"""The command line's tests: a case worker (the real CaseWorkflow, AWS faked, the principal
taken from the finding so cases differ by account, principal and instance), and the
command line run in-process against a dev server, as a user would run it."""

import asyncio
import io
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

import starter
from models.activities import ResolvePrincipalInput, ResolvePrincipalResult
from models.case import CaseStatus
from models.principal import Credential, CredentialKind, Principal, PrincipalType
from tests.support import ACCOUNT
from tests.workflows.test_case_workflow import FakeAws
from worker import WORKFLOWS
from workflows.case import CaseWorkflow


@activity.defn(name="resolve_principal")
async def resolve_principal(input: ResolvePrincipalInput) -> ResolvePrincipalResult:
    """The finding's own principal: the role on its instance, or the user of its key."""
    finding = input.finding
    key = finding.access_key
    account = finding.account_id
    if finding.instance_id:
        role = key.user_name or "role"
        kind = CredentialKind.INSTANCE_ROLE_SESSION
        principal = Principal(
            type=PrincipalType.ASSUMED_ROLE,
            account_id=account,
            arn=f"arn:aws:sts::{account}:assumed-role/{role}/{finding.instance_id}",
            role_name=role,
            instance_id=finding.instance_id,
        )
    else:
        user = key.user_name or "user"
        kind = CredentialKind.IAM_USER_KEY
        principal = Principal(
            type=PrincipalType.IAM_USER,
            account_id=account,
            arn=f"arn:aws:iam::{account}:user/{user}",
            user_name=user,
        )
    return ResolvePrincipalResult(
        credential=Credential(access_key_id=key.access_key_id, kind=kind, principal=principal)
    )


def case_activities() -> list[Callable[..., Any]]:
    """FakeAws's activities, with the principal resolved from the finding."""
    faked = [a for a in FakeAws().activities() if a.__name__ != "resolve_principal"]
    return [*faked, resolve_principal]


@asynccontextmanager
async def case_worker(client: Client) -> AsyncIterator[str]:
    """A worker for cases on a task queue of its own; the queue's name."""
    queue = f"cli-{uuid.uuid4()}"
    async with Worker(client, task_queue=queue, workflows=WORKFLOWS, activities=case_activities()):
        yield queue


async def wait_for(
    handle: WorkflowHandle, predicate: Callable[[CaseStatus], bool], seconds: float = 60
) -> CaseStatus:
    async with asyncio.timeout(seconds):
        while True:
            status = await handle.query(CaseWorkflow.status)
            if predicate(status):
                return status
            await asyncio.sleep(0.1)


def address_of(client: Client) -> str:
    return client.service_client.config.target_host


@dataclass
class Ran:
    code: int
    out: str
    err: str


Run = Callable[..., Awaitable[Ran]]


def command_line(
    client: Client, queue: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> Run:
    """`quench ...` in-process (in a thread: it runs its own event loop) against this
    Temporal and task queue, with its exit status and what it printed."""
    monkeypatch.setenv("QUENCH_TEMPORAL_ADDRESS", address_of(client))
    monkeypatch.setenv("QUENCH_TASK_QUEUE", queue)
    monkeypatch.setenv("QUENCH_SCAN_TASK_QUEUE", queue)
    monkeypatch.setenv("QUENCH_ACCOUNT_ID", ACCOUNT)
    # The dev server's client reads cases in clear (test_encrypted.py has them encrypted).
    monkeypatch.setenv("QUENCH_ENCRYPT_PAYLOADS", "false")

    async def run(*argv: str, stdin: bytes | None = None) -> Ran:
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        capsys.readouterr()
        try:
            code = await asyncio.to_thread(starter.main, list(argv), "quench")
        except SystemExit as exc:  # argparse refusing the arguments
            code = exc.code if isinstance(exc.code, int) else 2
        captured = capsys.readouterr()
        return Ran(code, captured.out, captured.err)

    return run


@pytest_asyncio.fixture
async def cli(dev_server_env, monkeypatch, capsys) -> AsyncIterator[tuple[Client, Run]]:
    """The dev server's client, and the command line with a case worker behind it."""
    client: Client = dev_server_env.client
    async with case_worker(client) as queue:
        yield client, command_line(client, queue, monkeypatch, capsys)
