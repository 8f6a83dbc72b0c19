"""The case command line against the dev server and a case worker: starting cases from
finding files through the webhook's intake, what a bad file is told (and that it starts
nothing), showing a case with the commands to decide it, and deciding it."""

import asyncio
import contextlib
import json
import os
import shlex
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

import starter
from cli import commands, findings
from config import names
from lab.securityhub import asff_from_guardduty, securityhub_event
from models.case import ActionStatus, CaseStatus, Phase
from playbook import signing
from tests.cli.conftest import address_of, command_line, wait_for
from tests.playbook.test_signing import _keypair
from tests.support import ACCOUNT, PROJECT_ROOT, finding_detail, finding_event
from workflows.case import CaseWorkflow


def _key() -> str:
    return "ASIA" + uuid.uuid4().hex[:16].upper()


def _case_id(key: str) -> str:
    return f"case-{ACCOUNT}-{key}"


def _write(tmp_path: Path, document: Any, name: str = "finding.json") -> str:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return str(path)


async def _exists(client: Client, case_id: str) -> bool:
    try:
        await client.get_workflow_handle(case_id).describe()
    except RPCError as exc:
        assert exc.status is RPCStatusCode.NOT_FOUND, exc
        return False
    return True


async def test_start_takes_findings_as_the_webhook_does_from_each_kind_of_file(cli, tmp_path):
    client, run = cli
    key, other_key, stdin_key = _key(), _key(), _key()
    detail = finding_detail(access_key_id=key, finding_id="cli-first")
    detail_file = _write(tmp_path, detail, "detail.json")

    # A GuardDuty finding on its own (the event's detail) opens the case...
    ran = await run("start", detail_file, "--json")
    assert ran.code == 0, ran.err
    (answer,) = json.loads(ran.out)
    assert (answer["outcome"], answer["case_id"], answer["finding_id"]) == (
        "new_case",
        _case_id(key),
        "cli-first",
    )
    # ...and the same file again changes nothing.
    ran = await run("start", detail_file, "--json")
    assert [a["outcome"] for a in json.loads(ran.out)] == ["duplicate"], ran.err

    # A whole EventBridge event with another finding on the key joins the case.
    event_file = _write(tmp_path, finding_event(access_key_id=key, finding_id="cli-second"))
    ran = await run("start", event_file, "--json")
    assert [(a["outcome"], a["case_id"]) for a in json.loads(ran.out)] == [
        ("joined", _case_id(key))
    ]

    # A list: a Security Hub event (joins), a GuardDuty event of another key (a new
    # case), and the first finding again (duplicate), each answered in order.
    hub = securityhub_event(
        asff_from_guardduty(finding_detail(access_key_id=key, finding_id="cli-third"))
    )
    listed = [hub, finding_event(access_key_id=other_key, finding_id="cli-other"), detail]
    ran = await run("start", _write(tmp_path, listed, "list.json"), "--json")
    assert ran.code == 0, ran.err
    assert [(a["outcome"], a["case_id"]) for a in json.loads(ran.out)] == [
        ("joined", _case_id(key)),
        ("new_case", _case_id(other_key)),
        ("duplicate", _case_id(key)),
    ]

    # Standard input, and the table people read.
    piped = json.dumps(finding_event(access_key_id=stdin_key)).encode()
    ran = await run("start", "-", stdin=piped)
    assert ran.code == 0, ran.err
    header, row, *rest = ran.out.splitlines()
    assert header.split() == ["OUTCOME", "CASE", "FINDING", "REASON"]
    assert row.split() == ["new_case", _case_id(stdin_key), "lab-finding-0001", "-"]
    assert rest == [f"follow it: quench show {_case_id(stdin_key)}"]

    # The case holds what each answer said it took.
    status = await client.get_workflow_handle_for(CaseWorkflow.run, _case_id(key)).query(
        CaseWorkflow.status
    )
    assert [f.id for f in status.findings] == ["cli-first", "cli-second", "cli-third"]
    assert await _exists(client, _case_id(other_key))


def _without(document: dict[str, Any], *path: str) -> dict[str, Any]:
    copy = json.loads(json.dumps(document))
    inner = copy
    for part in path[:-1]:
        inner = inner[part]
    del inner[path[-1]]
    return copy


@pytest.mark.parametrize(
    ("make", "code", "message"),
    [
        (lambda key: "{not json", 2, "is not JSON"),
        (lambda key: "", 2, "is empty"),
        (lambda key: "42", 2, "the finding: expected a GuardDuty finding or an EventBridge"),
        (lambda key: [], 2, "the list holds no findings"),
        (
            lambda key: _without(finding_detail(access_key_id=key), "accountId"),
            2,
            "the finding: accountId: Field required",
        ),
        (
            lambda key: _without(finding_event(access_key_id=key), "detail", "service"),
            2,
            "the finding: detail.service: Field required",
        ),
        (
            lambda key: {**finding_event(access_key_id=key), "detail-type": "EC2 State Change"},
            2,
            "detail-type: expected 'GuardDuty Finding'",
        ),
        (
            # One bad entry, after a good one: the good one is not started either.
            lambda key: [finding_event(access_key_id=key), [1, 2]],
            2,
            "entry 2: expected a GuardDuty finding or an EventBridge event (a JSON object), "
            "found an array",
        ),
        (
            lambda key: asff_from_guardduty(finding_detail(access_key_id=key)),
            2,
            "a Security Hub finding on its own",
        ),
        (
            lambda key: finding_detail(
                access_key_id=key, finding_type="Recon:EC2/PortProbeUnprotectedPort"
            ),
            1,
            "nothing started: Quench does not act on these findings",
        ),
    ],
    ids=[
        "not-json",
        "empty",
        "a-number",
        "empty-list",
        "no-account",
        "event-without-service",
        "another-event",
        "one-bad-entry",
        "bare-asff",
        "not-a-credential-finding",
    ],
)
async def test_a_file_that_cannot_be_used_starts_nothing_and_says_why(
    cli, tmp_path, make, code, message
):
    client, run = cli
    key = _key()
    ran = await run("start", _write(tmp_path, make(key)))
    assert ran.code == code
    assert message in ran.err
    assert not await _exists(client, _case_id(key))


async def test_a_finding_quench_ignores_is_answered_with_the_reason(cli, tmp_path):
    client, run = cli
    key = _key()
    sample = finding_detail(access_key_id=key)
    sample["service"]["additionalInfo"]["sample"] = True
    ran = await run("start", _write(tmp_path, sample), "--json")
    assert ran.code == 1
    assert json.loads(ran.out) == [
        {
            "outcome": "ignored",
            "case_id": None,
            "run_id": None,
            "finding_id": "lab-finding-0001",
            "reason": "a GuardDuty sample finding",
        }
    ]
    assert not await _exists(client, _case_id(key))


async def test_a_finding_of_an_account_not_managed_starts_nothing(cli, tmp_path):
    client, run = cli
    key = _key()
    elsewhere = finding_detail(access_key_id=key, account_id="999999999999")
    ran = await run("start", _write(tmp_path, elsewhere), "--json")
    assert ran.code == 1
    (answer,) = json.loads(ran.out)
    assert answer["outcome"] == "ignored"
    assert answer["reason"] == (
        "account 999999999999 is not managed by this Quench (not in QUENCH_ACCOUNT_ID)"
    )
    assert not await _exists(client, names.case_workflow_id("999999999999", key))


async def test_missing_file_and_no_temporal_are_errors(cli, tmp_path, monkeypatch):
    _, run = cli
    ran = await run("start", str(tmp_path / "absent.json"))
    assert (ran.code, ran.out) == (2, "")
    assert "cannot read" in ran.err and "absent.json" in ran.err
    # Nothing listens on port 9 (discard) on loopback.
    monkeypatch.setenv("QUENCH_TEMPORAL_ADDRESS", "127.0.0.1:9")
    ran = await run("show", "case-anything")
    assert ran.code == 1
    assert ran.err.startswith("error: cannot connect to Temporal at 127.0.0.1:9: nothing listens ")
    assert "set QUENCH_TEMPORAL_ADDRESS" in ran.err and "tonic" not in ran.err


async def test_a_file_over_the_size_limit_is_refused(cli, tmp_path, monkeypatch):
    client, run = cli
    key = _key()
    document = json.dumps(finding_detail(access_key_id=key))
    monkeypatch.setattr(findings, "MAX_FILE_BYTES", len(document) - 1)
    ran = await run("start", _write(tmp_path, document))
    assert ran.code == 2
    assert f"is larger than {len(document) - 1} bytes; nothing was started" in ran.err
    assert not await _exists(client, _case_id(key))


def test_standard_input_is_read_no_further_than_the_size_limit_and_one_byte(monkeypatch):
    asked: list[int] = []

    class Endless:
        def read(self, size: int = -1) -> bytes:
            asked.append(size)
            assert size > 0, "standard input read to its end"
            return b" " * size

    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=Endless()))
    monkeypatch.setattr(findings, "MAX_FILE_BYTES", 1000)
    with pytest.raises(findings.FindingFileError, match="standard input is larger than 1000"):
        findings.read_document("-")
    assert asked == [1001]


async def test_temporal_failing_mid_file_keeps_what_it_took_and_says_where_it_stopped(
    cli, tmp_path, monkeypatch
):
    client, run = cli
    first, second = _key(), _key()
    path = _write(
        tmp_path,
        [
            finding_detail(access_key_id=first, finding_id="mid-file-1"),
            finding_detail(access_key_id=second, finding_id="mid-file-2"),
        ],
    )
    submit = commands.submit_finding

    async def failing_on_the_second(
        client: Client, settings: Any, finding: Any, dry_run: bool = False
    ) -> Any:
        if finding.id == "mid-file-2":
            raise RPCError("connection refused", RPCStatusCode.UNAVAILABLE, b"")
        return await submit(client, settings, finding, dry_run)

    monkeypatch.setattr(commands, "submit_finding", failing_on_the_second)
    ran = await run("start", path, "--json")
    assert ran.code == 1
    [taken] = json.loads(ran.out)
    assert (taken["outcome"], taken["case_id"]) == ("new_case", _case_id(first))
    assert ran.err.startswith(
        "error: entry 2: Temporal did not take finding mid-file-2: connection refused. "
        "Run `start` again once it answers"
    )
    assert await _exists(client, _case_id(first))
    assert not await _exists(client, _case_id(second))
    await client.get_workflow_handle(_case_id(first)).terminate("test over")


async def _started(cli: Any, tmp_path: Path) -> tuple[str, WorkflowHandle[Any, Any]]:
    """A severe finding started with `start`: its key and its case."""
    client, run = cli
    key = _key()
    ran = await run("start", _write(tmp_path, finding_event(access_key_id=key, severity=8.0)))
    assert ran.code == 0, ran.err
    return key, client.get_workflow_handle_for(CaseWorkflow.run, _case_id(key))


async def test_show_a_case_and_decide_it_with_the_commands_it_prints(cli, tmp_path):
    _, run = cli
    key, handle = await _started(cli, tmp_path)
    case_id = handle.id
    # Waiting, and the investigation (which runs beside the case) in, so the evidence
    # shown below does not grow between two reads.
    waiting = await wait_for(
        handle, lambda s: bool(s.pending_actions()) and s.investigation is not None
    )
    (action,) = waiting.pending_actions()

    ran = await run("show", case_id)
    assert ran.code == 0, ran.err
    text = ran.out
    assert text.startswith(f"Case {case_id}\n")
    assert "Phase       awaiting_approval (since " in text
    assert f"Credential  {key} (instance_role_session)" in text
    assert "Severity    8.0\n" in text
    assert "Waiting for approval (1)" in text
    assert f"{action.id}: {action.title}" in text
    for step in action.steps:
        assert f"  - {step}" in text
    # The exact commands to decide it: Quench's own, and the raw update.
    assert (
        f"  approve: quench approve {case_id} {action.id} "
        "--by you@example.com --reason 'confirmed malicious'\n" in text
    )
    assert f"update execute --workflow-id {case_id} --name approve_action --input" in text
    assert f'"action_id": "{action.id}"' in text
    for record in waiting.evidence:
        (line,) = [line for line in text.splitlines() if line.startswith(f"{record.name} ")]
        assert line.split() == [record.name, record.sha256, str(record.size_bytes), record.uri]

    # `status` is `show`; --json is the case's status as the query answers it.
    ran = await run("status", case_id, "--json")
    assert ran.code == 0, ran.err
    shown = CaseStatus.model_validate_json(ran.out)
    assert shown.phase is Phase.AWAITING_APPROVAL
    assert shown.pending_actions() == waiting.pending_actions()
    assert shown.evidence == waiting.evidence

    ran = await run("note", case_id, "--by", "carol", "--text", "paged the app team", "--json")
    assert (ran.code, json.loads(ran.out)) == (0, {"case_id": case_id, "notes": 1})

    # A refused decision: exit status 1 and the case's reason; nothing decided.
    ran = await run("approve", case_id, "contain-99", "--by", "alice", "--reason", "ok")
    assert ran.code == 1
    assert ran.err.startswith("refused: approve contain-99 by alice: no such action")
    assert ran.out == ""

    ran = await run("approve", case_id, action.id, "--by", "alice", "--reason", "ok", "--json")
    assert ran.code == 0, ran.err
    assert json.loads(ran.out) == {
        "case_id": case_id,
        "action_id": action.id,
        "status": ActionStatus.APPROVED.value,
        "approvals": 1,
        "needed": 1,
    }
    status = await wait_for(handle, lambda s: s.phase is Phase.WATCHING)
    contained = next(a for a in status.actions if a.id == action.id)
    ran = await run("show", case_id)
    assert "Waiting for approval" not in ran.out
    actions = ran.out.split("\nActions\n")[1].split("\n\n")[0].splitlines()
    assert actions[0].split() == ["ID", "STATUS", "DECIDED", "BY", "WHAT"]
    assert actions[1].split()[:3] == [action.id, contained.status.value, "alice"]
    assert "carol" in ran.out and "paged the app team" in ran.out

    ran = await run("reject", case_id, action.id, "--by", "bob", "--reason", "late")
    assert ran.code == 1 and "refused:" in ran.err
    await handle.terminate("test over")
    # An ended case says so when a decision comes.
    ran = await run("approve", case_id, action.id, "--by", "bob", "--reason", "again")
    assert ran.code == 1
    assert ran.err.startswith(f"refused: {case_id} has ended:")


async def test_the_approve_command_up_prints_approves_the_case(cli, tmp_path):
    """`up` prints a `temporal` update to paste: run as printed, it approves."""
    client, _ = cli
    _, handle = await _started(cli, tmp_path)
    case_id = handle.id
    (action,) = (await wait_for(handle, lambda s: bool(s.pending_actions()))).pending_actions()
    stack = SimpleNamespace(temporal_address=address_of(client))
    update, own = starter.approve_commands(stack, case_id, action.id)  # type: ignore[arg-type]
    assert own.endswith(
        f"quench approve {case_id} {action.id} --by you@example.com --reason 'confirmed malicious'"
    )
    pasted = await asyncio.create_subprocess_exec(
        *shlex.split(update), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, errors = await pasted.communicate()
    assert pasted.returncode == 0, errors.decode()
    status = await wait_for(handle, lambda s: s.phase is Phase.WATCHING)
    decided = next(a for a in status.actions if a.id == action.id)
    assert decided.approval is not None
    assert (decided.approval.approver, decided.approval.reason) == (
        "you@example.com",
        "confirmed malicious",
    )
    await handle.terminate("test over")


@pytest.mark.parametrize(
    "argv",
    [
        ["show", "case-000000000000-NOSUCHCASE"],
        ["status", "case-000000000000-NOSUCHCASE", "--json"],
        ["approve", "case-000000000000-NOSUCHCASE", "contain-1", "--by", "a", "--reason", "b"],
        ["reject", "case-000000000000-NOSUCHCASE", "contain-1", "--by", "a", "--reason", "b"],
        ["note", "case-000000000000-NOSUCHCASE", "--by", "a", "--text", "b"],
        ["report", "case-000000000000-NOSUCHCASE"],
    ],
    ids=lambda argv: argv[0],
)
async def test_an_unknown_case_is_no_such_case(cli, argv):
    _, run = cli
    ran = await run(*argv)
    assert (ran.code, ran.out) == (1, "")
    assert ran.err == "error: no such case: case-000000000000-NOSUCHCASE\n"


async def test_the_quench_console_script_runs_the_same_command_line(dev_server_env):
    """Installed by `make install` beside the interpreter, and run as a user runs it."""
    quench = Path(sys.executable).parent / "quench"
    assert quench.exists(), "the console script is missing: run make install"
    address = dev_server_env.client.service_client.config.target_host
    process = await asyncio.create_subprocess_exec(
        str(quench),
        "show",
        "case-000000000000-NOSUCHCASE",
        env={**os.environ, "QUENCH_TEMPORAL_ADDRESS": address},
        cwd=str(PROJECT_ROOT),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1
    assert (out, err) == (b"", b"error: no such case: case-000000000000-NOSUCHCASE\n")


async def test_show_says_who_approved_so_far_under_the_two_person_rule(cli, tmp_path, monkeypatch):
    client, run = cli
    # The case policy comes from the settings `start` reads, as the webhook's does.
    monkeypatch.setenv("QUENCH_TWO_PERSON_ACTIONS", '["contain"]')
    key = _key()
    case_id = _case_id(key)
    assert (await run("start", _write(tmp_path, finding_event(access_key_id=key)))).code == 0
    handle = client.get_workflow_handle_for(CaseWorkflow.run, case_id)
    (action,) = (await wait_for(handle, lambda s: bool(s.pending_actions()))).pending_actions()

    ran = await run("approve", case_id, action.id, "--by", "alice", "--reason", "seen it", "-v")
    assert ran.out == (
        f"approve sent for {action.id} on {case_id}: pending_approval (1 of 2 approvals)\n"
    )
    # -v: the same decision as a raw `temporal` command, on standard error.
    raw = shlex.split(ran.err)
    assert raw[1:8] == [
        "workflow",
        "update",
        "execute",
        "--workflow-id",
        case_id,
        "--name",
        "approve_action",
    ]
    assert json.loads(raw[raw.index("--input") + 1]) == {
        "action_id": action.id,
        "approver": "alice",
        "reason": "seen it",
    }
    ran = await run("report", case_id)
    assert (ran.code, ran.err) == (
        1,
        f"error: {case_id} has no report yet (phase {Phase.AWAITING_APPROVAL.value})\n",
    )
    ran = await run("show", case_id)
    assert "  needs 2 different approvers: 1 of 2 so far (alice)\n" in ran.out
    assert "  decide before " in ran.out
    ran = await run("approve", case_id, action.id, "--by", "alice", "--reason", "again")
    assert ran.code == 1
    assert "needs a second person" in ran.err
    await handle.terminate("test over")


async def test_without_a_worker_start_and_show_say_so_in_time(
    dev_server_env, tmp_path, monkeypatch, capsys
):
    """No worker polls the queue: nobody answers the finding or the status query."""
    client: Client = dev_server_env.client
    queue = f"nobody-{uuid.uuid4()}"
    run = command_line(client, queue, monkeypatch, capsys)
    monkeypatch.setattr(commands, "QUERY_TIMEOUT", timedelta(seconds=1))
    key = _key()
    case_id = _case_id(key)
    event = _write(tmp_path, finding_event(access_key_id=key))
    try:
        ran = await run("start", event, "--timeout", "1")
        assert ran.code == 1
        assert ran.err.startswith(
            "error: the finding: the case did not take finding lab-finding-0001 within 1s: "
            f"is a worker polling task queue {queue}?"
        )
        ran = await run("show", case_id)
        assert ran.code == 1
        assert ran.err == (
            f"error: no worker answered for {case_id} within 1s: is a worker polling task "
            f"queue {queue}?\n"
        )
    finally:
        with contextlib.suppress(RPCError):
            await client.get_workflow_handle(case_id).terminate("test over")


def test_the_attacker_returns_only_in_its_scenarios_and_only_to_a_running_lab(tmp_path, capsys):
    assert starter.main(["lab", "user-key", "--attacker-returns"]) == 2
    said = capsys.readouterr().out
    assert "--attacker-returns is the ec2-role and cross-account scenarios'" in said
    ports = ["--temporal-port", "9", "--lab-aws-port", "9", "--webhook-port", "9"]
    argv = ["lab", "ec2-role", "--attacker-returns", "--state-dir", str(tmp_path), *ports]
    assert starter.main(argv) == 1
    assert "error: no lab stack is up" in capsys.readouterr().out


async def test_a_policy_with_approver_keys_takes_only_decisions_signed_with_them(
    cli, tmp_path, monkeypatch
):
    """QUENCH_APPROVER_KEYS: `approve --key` signs with the approver's private key; an
    unsigned decision, or one signed with another's key, is refused and changes nothing."""
    client, run = cli
    alice, alice_public = _keypair()
    mallory, _ = _keypair()
    (tmp_path / "alice").write_bytes(alice)
    (tmp_path / "mallory").write_bytes(mallory)
    monkeypatch.setenv("QUENCH_APPROVER_KEYS", json.dumps({"alice": [alice_public]}))
    key = _key()
    case_id = _case_id(key)
    assert (await run("start", _write(tmp_path, finding_event(access_key_id=key)))).code == 0
    handle = client.get_workflow_handle_for(CaseWorkflow.run, case_id)
    (action,) = (await wait_for(handle, lambda s: bool(s.pending_actions()))).pending_actions()
    decide = ("approve", case_id, action.id, "--by", "alice", "--reason", "seen it")

    # `show` gives the commands to decide it signed, and no raw `temporal` one.
    shown = (await run("show", case_id)).out
    assert "--reason 'confirmed malicious' --key ~/.ssh/quench" in shown
    assert "temporal workflow update" not in shown
    unsigned = await run(*decide)
    assert unsigned.code == 1 and "unsigned: the approval policy asks for" in unsigned.err
    forged = await run(*decide, "--key", str(tmp_path / "mallory"))
    assert forged.code == 1
    assert "does not verify with a key the policy holds for alice" in forged.err
    assert (await handle.query(CaseWorkflow.status)).pending_actions()[0].id == action.id

    signed = await run(*decide, "--key", str(tmp_path / "alice"))
    assert signed.out == f"approve sent for {action.id} on {case_id}: approved (1 of 1 approvals)\n"
    status = await wait_for(handle, lambda s: s.actions[0].approval is not None)
    approval = status.actions[0].approval
    assert approval is not None and approval.signed_with == signing.fingerprint(alice_public)
    await handle.terminate("test over")
