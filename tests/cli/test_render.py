"""What `show` prints for a pending action: the commands to decide it, with reasons that
fit its kind (a retry is not "confirmed malicious", nor declined as a "false positive")."""

import json
import shlex
from datetime import UTC, datetime, timedelta

from cli.render import render_case, update_command
from codec.aesgcm import generate_key_entry
from config.settings import Settings
from lab.world import EVIDENCE_BUCKET as LAB_EVIDENCE_BUCKET
from models.case import (
    Action,
    ActionKind,
    ActionStatus,
    CaseReportRef,
    CaseStatus,
    EvidenceRecord,
    Phase,
    PhaseChange,
    RejectedSignal,
    WatchStatus,
)
from tests.support import ACCOUNT, finding

AT = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def _waiting_on(*kinds: ActionKind) -> CaseStatus:
    return CaseStatus(
        case_id="case-1",
        phase=Phase.NEEDS_HUMAN,
        account_id=ACCOUNT,
        findings=[finding()],
        phases=[PhaseChange(phase=Phase.NEEDS_HUMAN, at=AT)],
        actions=[
            Action(
                id=f"{kind.value}-{n}",
                kind=kind,
                title=f"{kind.value} things",
                steps=["delete_user backup-svc: it failed: AccessDenied"],
                status=ActionStatus.PENDING_APPROVAL,
                requested_at=AT,
            )
            for n, kind in enumerate(kinds, 1)
        ],
        approvals=[],
        evidence=[],
    )


def _commands(text: str, action_id: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if f" {action_id} --by " in line]


def test_a_retry_is_decided_with_reasons_that_fit_a_retry():
    text = render_case(
        _waiting_on(ActionKind.CONTAIN_INSTANCE_ROLE, ActionKind.RETRY),
        "running",
        "quench",
        Settings(),
    )
    retry = _commands(text, "retry-2")
    assert retry == [
        "approve: quench approve case-1 retry-2 --by you@example.com --reason "
        "'the cause of the failure is fixed'",
        "reject:  quench reject case-1 retry-2 --by you@example.com --reason "
        "'it will be done by hand'",
    ]
    assert "malicious" not in text.partition("retry-2:")[2]
    assert "false positive" not in text.partition("retry-2:")[2]
    # Containment keeps the reasons that fit a containment.
    contain = _commands(text, "contain-1")
    assert contain[0].endswith("--reason 'confirmed malicious'")
    assert contain[1].endswith("--reason 'false positive'")


def _reported(bucket: str) -> CaseStatus:
    status = _waiting_on()
    record = EvidenceRecord(
        name="report",
        bucket=bucket,
        key="cases/case-1/report.md",
        sha256="0" * 64,
        size_bytes=2,
        captured_at=AT,
    )
    status.report = CaseReportRef(json_report=record, markdown_report=record)
    return status


def test_the_report_hint_says_lab_for_a_lab_case_only():
    lab = render_case(_reported(LAB_EVIDENCE_BUCKET), "completed", "quench", Settings())
    real = render_case(_reported("acme-evidence"), "completed", "quench", Settings())
    assert "read it: quench report case-1 --lab (with up's --state-dir" in lab
    assert "read it: quench report case-1\n" in real + "\n" and "--lab" not in real


def test_a_refused_decision_shows_what_was_sent_cut_short():
    status = _waiting_on()
    status.refused = [
        RejectedSignal(
            at=AT,
            signal="approve",
            action_id=None,
            by="unknown sender",
            reason="malformed input: expected one ApprovalInput input, got 2",
            sent='[{"action_id": "contain-1"},\n "' + "x" * 200 + '"]',
        )
    ]
    text = render_case(status, "running", "quench", Settings())
    (row,) = [line for line in text.splitlines() if "malformed input" in line]
    assert '[{"action_id": "contain-1"}, "xxx' in row and row.endswith("…")
    assert "x" * 100 not in row


def test_a_temporal_command_for_encrypted_cases_goes_through_the_codec_server():
    key_id, key = generate_key_entry("k1")
    token = "t" * 40
    settings = Settings(
        lab=True,
        payload_keys=json.dumps({key_id: key}),
        codec_token=token,
        codec_port=18089,
    )
    command = update_command(settings, "case-1", "approve_action", '{"action_id": "x"}')
    words = shlex.split(command.replace("$QUENCH_CODEC_TOKEN", "TOKEN-FROM-THE-SHELL"))
    assert words[words.index("--codec-endpoint") + 1] == "http://127.0.0.1:18089"
    assert words[words.index("--codec-auth") + 1] == "Bearer TOKEN-FROM-THE-SHELL"
    # The token itself is never printed.
    assert token not in command and key not in command
    # In clear, no codec.
    assert "--codec" not in update_command(Settings(lab=True), "case-1", "approve_action", "{}")


def test_show_during_the_watch_says_when_it_can_end_clean():
    status = _waiting_on()
    status.phase = Phase.WATCHING
    status.watch = WatchStatus(
        access_key_ids=["ASIAEXAMPLE"],
        start=AT,
        clean_at=AT + timedelta(minutes=45),
        checks=1,
        last_checked_at=AT + timedelta(minutes=5),
    )
    shown = render_case(status, "running", "quench", Settings(lab=True))
    assert "ends clean no earlier than 2026-11-22 08:45:00Z (1 check, the last at " in shown
    # Once it has a verdict, the field goes.
    status.watch.verdict = "clean"
    assert "ends clean" not in render_case(status, "running", "quench", Settings(lab=True))
