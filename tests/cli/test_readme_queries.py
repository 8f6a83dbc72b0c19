"""The README's ready-made list queries, read from the README itself and run both ways, with
`temporal workflow list --query` and with their `quench list` line, on a dev server of
their own holding cases made to tell them apart: each query finds the cases it names and
no other.

A query added to the README without its expected cases here fails, as does one removed.
"""

import asyncio
import json
import shlex
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from config import names
from config.settings import Settings
from lab.guardduty import user_key_finding
from models.case import ApprovalInput
from models.finding import Finding, finding_from_guardduty
from stack.binaries import temporal_cli
from tests.cli.conftest import address_of, case_worker, command_line, wait_for
from tests.support import ACCOUNT, INSTANCE, PROJECT_ROOT, STOLEN_KEY, finding
from webhook.intake import submit_finding
from workflows.case import CaseWorkflow

README = PROJECT_ROOT / "README.md"
SECTION = "### Ready-made list queries"

OTHER_ACCOUNT = "210987654321"
OTHER_INSTANCE = "i-0fedcba9876543210"
BUILD_BOT_KEY = "AKIAEXAMPLEBUILDBOT1"

# Each README query (by its comment) and the cases it must find, of those made below.
EXPECTED = {
    "Every case awaiting approval in one account": {"web"},
    "Every running case with a decision pending, whatever its phase": {"web", "other", "deploy"},
    "Open cases of one principal": {"web"},
    "High and critical severity open cases (GuardDuty's high starts at 7.0)": {"web"},
    "Every case on one instance, open or closed": {"web", "web-before"},
    "Every case of one access key": {"build"},
    "Closed cases of IAM users' keys used from Tor": {"build"},
}


@dataclass(frozen=True)
class ReadmeQuery:
    title: str
    temporal: list[str]  # the `temporal workflow list --query ...` line, split as a shell would
    quench: list[str]  # its `quench list ...` line


def readme_queries() -> list[ReadmeQuery]:
    """The block under the README's ready-made queries heading: a comment, the temporal
    command and the quench command, for each query."""
    text = README.read_text()
    assert SECTION in text, f"the README has no '{SECTION}' section"
    block = text.split(SECTION, 1)[1].split("```bash\n", 1)[1].split("\n```", 1)[0]
    queries = []
    for chunk in block.strip().split("\n\n"):
        comment, *lines = chunk.splitlines()
        assert comment.startswith("# "), f"each query starts with a comment: {chunk!r}"
        commands = {Path(words[0]).name: words for words in map(shlex.split, lines)}
        assert set(commands) == {"temporal", "quench"}, f"{comment}: one of each: {lines}"
        queries.append(ReadmeQuery(comment[2:], commands["temporal"], commands["quench"]))
    return queries


QUERIES = readme_queries()


def test_every_readme_query_has_its_expected_cases_here():
    assert {q.title for q in QUERIES} == set(EXPECTED)


def _user_key_finding(account: str, key: str, user: str, finding_id: str) -> Finding:
    seen = datetime(2026, 11, 22, 7, 0, tzinfo=UTC)
    return finding_from_guardduty(
        user_key_finding(
            account_id=account,
            region="us-east-1",
            access_key_id=key,
            principal_id=f"AIDA{user.upper().replace('-', '')}0001",
            user_name=user,
            remote_ip="192.0.2.77",
            api="ListUsers",
            service_name="iam.amazonaws.com",
            user_agent="aws-cli/2.15.30",
            first_seen=seen,
            last_seen=seen + timedelta(minutes=5),
            count=3,
            finding_id=finding_id,
        )
    )


# The cases: label -> (finding, closed by a rejection). The README's example values are
# the cases' own (account, instance, principal, key).
FINDINGS: dict[str, tuple[Finding, bool]] = {
    # The lab's story: a web instance's role session, high severity, waiting.
    "web": (finding(severity=8.0), False),
    # An earlier key of the same instance and role: high severity, closed.
    "web-before": (finding(access_key_id="ASIAEARLIERKEY000001", severity=8.0), True),
    # Another account's instance: waiting.
    "other": (
        finding(
            account_id=OTHER_ACCOUNT,
            access_key_id="ASIAOTHERACCOUNT0001",
            instance_id=OTHER_INSTANCE,
            severity=5.0,
        ),
        False,
    ),
    # A CI user's key used from Tor, closed; and another one in another account, waiting.
    "build": (_user_key_finding(ACCOUNT, BUILD_BOT_KEY, "build-bot", "tor-build"), True),
    "deploy": (
        _user_key_finding(OTHER_ACCOUNT, "AKIAEXAMPLEDEPLOYBOT", "deploy-bot", "tor-deploy"),
        False,
    ),
}


@dataclass(frozen=True)
class ReadmeCases:
    client: Client
    ids: dict[str, str]  # case id -> label


@pytest_asyncio.fixture(scope="module")
async def readme_cases() -> AsyncIterator[ReadmeCases]:
    """The cases, each in the phase its query looks for, on a dev server where nothing else
    runs (the README's example values are those of other tests' cases too)."""
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(temporal_cli()),
        dev_server_extra_args=["--log-level", "error"],
        search_attributes=names.SEARCH_ATTRIBUTES,
    )
    try:
        client = env.client
        assert FINDINGS["web"][0].access_key.access_key_id == STOLEN_KEY
        assert FINDINGS["web"][0].instance_id == INSTANCE
        async with case_worker(client) as queue:
            settings = Settings(task_queue=queue, scan_task_queue=queue)
            ids: dict[str, str] = {}
            for label, (found, _) in FINDINGS.items():
                answer = await submit_finding(client, settings, found)
                assert answer.case_id is not None
                ids[answer.case_id] = label
            await asyncio.gather(*(_settle(client, case_id, ids[case_id]) for case_id in ids))
        await _until_visible(client, ids)
        yield ReadmeCases(client, ids)
    finally:
        await env.shutdown()


async def _settle(client: Client, case_id: str, label: str) -> None:
    """Wait for the case's approval; reject it if the case is to be closed."""
    handle = client.get_workflow_handle_for(CaseWorkflow.run, case_id)
    waiting = await wait_for(handle, lambda s: bool(s.pending_actions()))
    if FINDINGS[label][1]:
        (action,) = waiting.pending_actions()
        await handle.execute_update(
            CaseWorkflow.reject_action,
            ApprovalInput(action_id=action.id, approver="alice", reason="seen before"),
        )
        async with asyncio.timeout(60):
            await handle.result()


async def _until_visible(client: Client, ids: dict[str, str]) -> None:
    """Visibility follows the cases a moment later: wait until it shows every case in its
    last phase, with its principal."""
    wanted = {
        case_id: ("closed" if FINDINGS[label][1] else "awaiting_approval", True)
        for case_id, label in ids.items()
    }
    async with asyncio.timeout(30):
        while True:
            seen = {
                w.id: (
                    w.typed_search_attributes.get(names.SA_PHASE),
                    w.typed_search_attributes.get(names.SA_PRINCIPAL_ARN) is not None,
                )
                async for w in client.list_workflows("WorkflowType = 'CaseWorkflow'")
            }
            if seen == wanted:
                return
            await asyncio.sleep(0.1)


async def _temporal_list(address: str, words: list[str]) -> list[str]:
    assert words[1:4] == ["workflow", "list", "--query"], words
    process = await asyncio.create_subprocess_exec(
        str(temporal_cli()),
        *words[1:],
        "--address",
        address,
        "--output",
        "json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    return [execution["execution"]["workflowId"] for execution in json.loads(out)]


@pytest.mark.parametrize("query", QUERIES, ids=[q.title for q in QUERIES])
async def test_each_readme_query_finds_its_cases_and_no_other(
    readme_cases, query, monkeypatch, capsys
):
    client = readme_cases.client
    expected = EXPECTED[query.title]

    found = await _temporal_list(address_of(client), query.temporal)
    assert sorted(readme_cases.ids[case_id] for case_id in found) == sorted(expected)

    run = command_line(client, "no-worker", monkeypatch, capsys)
    ran = await run(*query.quench[1:], "--json")
    assert ran.code == 0, ran.err
    listed = [line["case_id"] for line in json.loads(ran.out)]
    assert sorted(readme_cases.ids[case_id] for case_id in listed) == sorted(expected)
