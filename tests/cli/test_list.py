"""`list` on the dev server: each filter finds the cases it should and no other, through
the search attributes the cases set as they run; and what it prints."""

import asyncio
import json
import re
import shlex
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client

from config import names
from config.settings import Settings
from lab.guardduty import TOR_FINDING, user_key_finding
from models.case import ApprovalInput
from models.finding import finding_from_guardduty
from tests.cli.conftest import Run, case_worker, command_line, wait_for
from tests.support import PROJECT_ROOT, finding
from webhook.intake import submit_finding
from workflows.case import CaseWorkflow


@dataclass(frozen=True)
class Cases:
    """Three cases over two accounts of their own: `web` and `db` (instance roles, waiting
    for approval, severity 8 and 2) and `ci` (a user's key, rejected, so closed)."""

    accounts: tuple[str, str]
    ids: dict[str, str]  # label -> case id
    keys: dict[str, str]
    principals: dict[str, str]
    instances: dict[str, str]

    def scope(self) -> list[str]:
        """A raw query that keeps `list` to these cases (the dev server holds others)."""
        first, second = self.accounts
        return ["--query", f"QuenchAccountId IN ('{first}', '{second}')"]


def _account() -> str:
    return f"{uuid.uuid4().int % 10**12:012d}"


def _instance() -> str:
    return "i-" + uuid.uuid4().hex[:17]


@pytest_asyncio.fixture(scope="module")
async def cases(dev_server_env) -> Cases:
    client: Client = dev_server_env.client
    first, second = _account(), _account()
    web_key, db_key = ("ASIA" + uuid.uuid4().hex[:16].upper() for _ in range(2))
    ci_key = "AKIA" + uuid.uuid4().hex[:16].upper()
    web_instance, db_instance = _instance(), _instance()
    seen = datetime(2026, 11, 22, 7, 0, tzinfo=UTC)
    findings = {
        "web": finding(
            account_id=first, access_key_id=web_key, instance_id=web_instance, severity=8.0
        ),
        "db": finding(
            account_id=second, access_key_id=db_key, instance_id=db_instance, severity=2.0
        ),
        "ci": finding_from_guardduty(
            user_key_finding(
                account_id=first,
                region="us-east-1",
                access_key_id=ci_key,
                principal_id="AIDAEXAMPLEBUILDBOT1",
                user_name="build-bot",
                remote_ip="192.0.2.77",
                api="ListUsers",
                service_name="iam.amazonaws.com",
                user_agent="aws-cli/2.15.30",
                first_seen=seen,
                last_seen=seen + timedelta(minutes=5),
                count=3,
                severity=5.0,
                finding_id="ci-tor",
            )
        ),
    }
    async with case_worker(client) as queue:
        settings = Settings(task_queue=queue, scan_task_queue=queue)
        ids = {
            label: (await submit_finding(client, settings, found)).case_id
            for label, found in findings.items()
        }
        handles = {
            label: client.get_workflow_handle_for(CaseWorkflow.run, case_id)
            for label, case_id in ids.items()
            if case_id is not None
        }
        waiting = await asyncio.gather(
            *(wait_for(h, lambda s: bool(s.pending_actions())) for h in handles.values())
        )
        (ci_action,) = dict(zip(handles, waiting, strict=True))["ci"].pending_actions()
        await handles["ci"].execute_update(
            CaseWorkflow.reject_action,
            ApprovalInput(action_id=ci_action.id, approver="alice", reason="a known test"),
        )
        async with asyncio.timeout(60):
            await handles["ci"].result()
    result = Cases(
        accounts=(first, second),
        ids={label: case_id for label, case_id in ids.items() if case_id is not None},
        keys={"web": web_key, "db": db_key, "ci": ci_key},
        principals={
            "web": f"arn:aws:sts::{first}:assumed-role/web-app-role/{web_instance}",
            "db": f"arn:aws:sts::{second}:assumed-role/web-app-role/{db_instance}",
            "ci": f"arn:aws:iam::{first}:user/build-bot",
        },
        instances={"web": web_instance, "db": db_instance},
    )
    await _until_visible(client, result)
    return result


async def _until_visible(client: Client, cases: Cases) -> None:
    """Visibility follows the cases a moment later: wait until it shows each case's last
    phase and principal, read without `list`."""
    expected = {cases.ids["web"], cases.ids["db"], cases.ids["ci"]}
    query = " OR ".join(f"WorkflowId = '{case_id}'" for case_id in expected)
    async with asyncio.timeout(30):
        while True:
            seen = {
                w.id: (
                    w.typed_search_attributes.get(names.SA_PHASE),
                    w.typed_search_attributes.get(names.SA_PRINCIPAL_ARN),
                )
                async for w in client.list_workflows(query)
            }
            if seen == {
                cases.ids["web"]: ("awaiting_approval", cases.principals["web"]),
                cases.ids["db"]: ("awaiting_approval", cases.principals["db"]),
                cases.ids["ci"]: ("closed", cases.principals["ci"]),
            }:
                return
            await asyncio.sleep(0.1)


@pytest.fixture
def run(dev_server_env, monkeypatch, capsys) -> Run:
    # `list` needs no worker: it reads visibility.
    return command_line(dev_server_env.client, "no-worker", monkeypatch, capsys)


async def _listed(run: Run, cases: Cases, *argv: str) -> set[str]:
    """The labels of the cases `list --json` finds."""
    ran = await run("list", *argv, "--json")
    assert ran.code == 0, ran.err
    labels = {case_id: label for label, case_id in cases.ids.items()}
    found = [line["case_id"] for line in json.loads(ran.out)]
    assert len(found) == len(set(found)), "a case listed twice"
    return {labels.get(case_id, case_id) for case_id in found}


FILTERS = [
    pytest.param(lambda c: ["--account", c.accounts[0]], {"web", "ci"}, id="account"),
    pytest.param(lambda c: ["--account", c.accounts[1]], {"db"}, id="other-account"),
    pytest.param(lambda c: ["--phase", "awaiting_approval", *c.scope()], {"web", "db"}, id="phase"),
    pytest.param(
        lambda c: ["--phase", "closed", "--phase", "awaiting_approval", *c.scope()],
        {"web", "db", "ci"},
        id="two-phases",
    ),
    pytest.param(lambda c: ["--phase", "watching", *c.scope()], set(), id="phase-none"),
    pytest.param(lambda c: ["--min-severity", "5", *c.scope()], {"web", "ci"}, id="severity-5"),
    pytest.param(lambda c: ["--min-severity", "7.5", *c.scope()], {"web"}, id="severity-7.5"),
    pytest.param(lambda c: ["--awaiting", *c.scope()], {"web", "db"}, id="awaiting"),
    pytest.param(lambda c: ["--open", *c.scope()], {"web", "db"}, id="open"),
    pytest.param(
        lambda c: ["--awaiting", "--account", c.accounts[0]], {"web"}, id="awaiting-account"
    ),
    pytest.param(lambda c: ["--principal", c.principals["web"]], {"web"}, id="principal-role"),
    pytest.param(lambda c: ["--principal", c.principals["ci"]], {"ci"}, id="principal-user"),
    pytest.param(
        lambda c: ["--principal-type", "IAMUser", *c.scope()], {"ci"}, id="principal-type"
    ),
    pytest.param(lambda c: ["--key", c.keys["db"]], {"db"}, id="key"),
    pytest.param(lambda c: ["--finding-type", TOR_FINDING, *c.scope()], {"ci"}, id="finding-type"),
    pytest.param(lambda c: ["--instance", c.instances["db"]], {"db"}, id="instance"),
    pytest.param(
        lambda c: ["--open", "--instance", c.instances["web"], "--account", c.accounts[1]],
        set(),
        id="contradicting",
    ),
]


@pytest.mark.parametrize(("argv", "expected"), FILTERS)
async def test_each_filter_finds_its_cases_and_no_other(cases, run, argv, expected):
    assert await _listed(run, cases, *argv(cases)) == expected


async def test_json_lines_carry_the_search_attributes(cases, run):
    ran = await run("list", "--account", cases.accounts[0], "--json")
    lines = {line["case_id"]: line for line in json.loads(ran.out)}
    web, ci = lines[cases.ids["web"]], lines[cases.ids["ci"]]
    assert {k: v for k, v in web.items() if k not in {"run_id", "started_at"}} == {
        "case_id": cases.ids["web"],
        "status": "running",
        "phase": "awaiting_approval",
        "pending_approvals": 1,
        "escalations": None,
        "severity": 8.0,
        "account_id": cases.accounts[0],
        "access_key_id": cases.keys["web"],
        "principal_arn": cases.principals["web"],
        "principal_type": "AssumedRole",
        "finding_type": "UnauthorizedAccess:IAMUser/MaliciousIPCaller.Custom",
        "instance_id": cases.instances["web"],
        "closed_at": None,
        "outcome": None,
    }
    assert (ci["status"], ci["phase"], ci["pending_approvals"]) == ("completed", "closed", 0)
    # Rejected containment: the closed case says it is not contained.
    assert ci["outcome"] == "not contained"
    assert ci["closed_at"] is not None


async def test_limit_keeps_the_first_in_temporals_order(cases, run):
    ran = await run("list", "--account", cases.accounts[0], "--json")
    every = [line["case_id"] for line in json.loads(ran.out)]
    # Temporal lists running cases first.
    assert every == [cases.ids["web"], cases.ids["ci"]]
    ran = await run("list", "--account", cases.accounts[0], "--limit", "1", "--json")
    assert [line["case_id"] for line in json.loads(ran.out)] == every[:1]


async def test_the_table_and_the_query_it_ran(cases, run):
    ran = await run("list", "--account", cases.accounts[0], "--show-query")
    assert ran.code == 0, ran.err
    header, *rows = ran.out.splitlines()
    assert header.split() == [
        "CASE",
        "PHASE",
        "OUTCOME",
        "PENDING",
        "SEVERITY",
        "ACCOUNT",
        "PRINCIPAL",
        "FINDING",
        "TYPE",
        "STARTED",
    ]
    by_case = {row.split()[0]: row.split() for row in rows}
    assert by_case[cases.ids["web"]][1:7] == [
        "awaiting_approval",
        "-",
        "1",
        "8.0",
        cases.accounts[0],
        cases.principals["web"],
    ]
    assert by_case[cases.ids["ci"]][1:6] == ["closed", "not", "contained", "0", "5.0"]
    # The columns line up: each value starts where its header does.
    account = f"  {cases.accounts[0]}  "
    assert {row.index(account) + 2 for row in rows} == {header.index("ACCOUNT")}
    # The raw query, on standard error, as `temporal workflow list` takes it.
    (shown,) = ran.err.splitlines()
    assert (
        f"--query \"WorkflowType = 'CaseWorkflow' AND QuenchAccountId = '{account.strip()}'\""
        in shown
    )
    words = shlex.split(shown)
    assert Path(words[0]).name == "temporal"
    assert words[1:3] == ["workflow", "list"]
    assert words[words.index("--query") + 1] == (
        f"WorkflowType = 'CaseWorkflow' AND QuenchAccountId = '{cases.accounts[0]}'"
    )


async def test_a_list_with_nothing_in_it(run):
    ran = await run("list", "--account", "000000000000")
    assert (ran.code, ran.out.splitlines()[-1]) == (0, "(no cases)")
    ran = await run("list", "--account", "000000000000", "--json")
    assert json.loads(ran.out) == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--principal", "arn:aws:iam::123456789012:user/x' OR 'a' = 'a"], "quotes"),
        (["--finding-type", 'Recon"'], "quotes"),
        (["--instance", "i-1\\"], "backslashes"),
        (["--account", "12345"], "--account: an AWS account id is 12 digits"),
        (["--key", "not-a-key"], "--key: an access key id is AKIA... or ASIA..."),
        (["--principal", "build-bot"], "--principal: an ARN"),
        (["--query", "QuenchSeverity >>> 3"], "Temporal refused the query"),
    ],
)
async def test_values_that_cannot_go_in_a_query_are_refused(run, argv, message):
    ran = await run("list", *argv)
    assert ran.code == 2
    assert message in ran.err
    assert ran.out == ""


@pytest.mark.parametrize("argv", [["--min-severity", "11"], ["--limit", "0"], ["--phase", "x"]])
async def test_arguments_out_of_range_are_usage_errors(run, argv):
    ran = await run("list", *argv)
    assert ran.code == 2
    assert "error: argument" in ran.err


async def test_ids_prints_only_the_case_ids_for_a_script(cases, run):
    ran = await run("list", "--account", cases.accounts[0], "--ids")
    assert (ran.code, ran.out) == (0, f"{cases.ids['web']}\n{cases.ids['ci']}\n")
    ran = await run("list", "--account", cases.accounts[0], "--ids", "--limit", "1")
    assert ran.out == f"{cases.ids['web']}\n"
    ran = await run("list", "--account", "000000000000", "--ids")
    assert (ran.code, ran.out) == (0, "")
    ran = await run("list", "--ids", "--json")
    assert (ran.code, ran.out) == (2, "")
    assert "--json or --ids" in ran.err


README = PROJECT_ROOT / "README.md"
CASE_ID = re.compile(r"case-\d{12}-A[SK]IA[A-Z0-9]{16}")


def _readme_shell_lines() -> list[str]:
    """Every line of the README's ```bash blocks: what a reader pastes."""
    return [
        line
        for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.DOTALL)
        for line in block.splitlines()
    ]


def test_the_readme_pastes_no_case_id_of_another_clone():
    """The lab makes its keys anew on each clone, so a case id in a command to paste would
    be someone else's: the commands take the case from `$CASE`, which they look up."""
    lines = _readme_shell_lines()
    assert [line for line in lines if CASE_ID.search(line)] == []
    uses = [line for line in lines if '"$CASE"' in line]
    assert uses, "the README's case commands use $CASE"


async def test_the_readmes_case_lookups_find_the_lab_cases_kind(cases, run):
    """`CASE=$(.venv/bin/quench list ...)` as the README writes it, kept to this test's
    cases: one id, of the kind of case the line says."""
    lookups = {
        line.split("#")[0].strip()
        for line in _readme_shell_lines()
        if line.startswith("CASE=$(.venv/bin/quench list ")
    }
    assert lookups
    for lookup in lookups:
        argv = shlex.split(lookup.removeprefix("CASE=$(").removesuffix(")"))
        assert argv[0] == ".venv/bin/quench"
        ran = await run(*argv[1:], *cases.scope())
        assert ran.code == 0, ran.err
        kind = {"AssumedRole": {"web", "db"}, "IAMUser": {"ci"}}[
            argv[argv.index("--principal-type") + 1]
        ]
        (found,) = ran.out.splitlines()
        assert found in {cases.ids[label] for label in kind}


async def test_the_case_commands_run_in_a_shell_that_exported_the_labs_worker_settings(
    run, monkeypatch
):
    """QUENCH_LAB_FAULTS and QUENCH_LAB_LOG_CALLS are refused outside the lab for the
    worker's sake; the case commands do not use them, so they do not refuse to run."""
    monkeypatch.setenv("QUENCH_LAB_FAULTS", '{"iam:DeleteUser": "access_denied"}')
    monkeypatch.setenv("QUENCH_LAB_LOG_CALLS", "true")
    ran = await run("list", "--account", "000000000000", "--ids")
    assert (ran.code, ran.out, ran.err) == (0, "", "")
