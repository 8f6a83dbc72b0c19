"""What `show` and `list` print: a case, and a line per case, for people to read."""

import json
import shlex
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel
from temporalio.client import WorkflowExecution, WorkflowExecutionStatus

from cli.tables import render_fields, render_table
from config import names
from config.settings import Settings
from lab.world import EVIDENCE_BUCKET as LAB_EVIDENCE_BUCKET
from models.case import Action, CaseStatus, WatchStatus
from playbook.words import counted
from stack.binaries import MissingBinaryError, temporal_cli
from workflows.case.details import suggested_reasons

# What a pending approval's commands are shown with: the person to replace (and reasons
# that fit the kind of action, from workflows/case/details.py).
APPROVER_PLACEHOLDER = "you@example.com"
SIGNING_KEY_PLACEHOLDER = "~/.ssh/quench"


class CaseLine(BaseModel):
    """One case as `list` shows it, from its search attributes (no worker needed)."""

    case_id: str
    run_id: str
    status: str  # Temporal's: running, completed, terminated, continued_as_new...
    phase: str | None
    pending_approvals: int | None
    escalations: int | None  # approvals that passed their deadline (unset before any did)
    outcome: str | None  # set when the case closes
    severity: float | None
    account_id: str | None
    access_key_id: str | None
    principal_arn: str | None
    principal_type: str | None
    finding_type: str | None
    instance_id: str | None
    started_at: datetime
    closed_at: datetime | None

    @classmethod
    def of(cls, execution: WorkflowExecution) -> "CaseLine":
        attributes = execution.typed_search_attributes
        return cls(
            case_id=execution.id,
            run_id=execution.run_id,
            status=_status_name(execution.status),
            phase=attributes.get(names.SA_PHASE),
            pending_approvals=attributes.get(names.SA_PENDING_APPROVALS),
            escalations=attributes.get(names.SA_ESCALATIONS),
            outcome=attributes.get(names.SA_OUTCOME),
            severity=attributes.get(names.SA_SEVERITY),
            account_id=attributes.get(names.SA_ACCOUNT_ID),
            access_key_id=attributes.get(names.SA_ACCESS_KEY_ID),
            principal_arn=attributes.get(names.SA_PRINCIPAL_ARN),
            principal_type=attributes.get(names.SA_PRINCIPAL_TYPE),
            finding_type=attributes.get(names.SA_FINDING_TYPE),
            instance_id=attributes.get(names.SA_INSTANCE_ID),
            started_at=execution.start_time,
            closed_at=execution.close_time,
        )


def render_case_lines(lines: list[CaseLine]) -> str:
    table = render_table(
        [
            "CASE",
            "PHASE",
            "OUTCOME",
            "PENDING",
            "SEVERITY",
            "ACCOUNT",
            "PRINCIPAL",
            "FINDING TYPE",
            "STARTED",
        ],
        [
            [
                line.case_id,
                _phase_and_status(line),
                line.outcome,
                line.pending_approvals,
                line.severity,
                line.account_id,
                line.principal_arn or line.principal_type,
                line.finding_type,
                when(line.started_at),
            ]
            for line in lines
        ],
        right=(3, 4),
    )
    return table if lines else f"{table}\n(no cases)"


def _phase_and_status(line: CaseLine) -> str:
    phase = line.phase or "-"
    # A case that ended without closing (terminated, failed) keeps its last phase.
    if line.status in {"running", "completed"}:
        return phase
    return f"{phase} ({line.status})"


def _status_name(status: WorkflowExecutionStatus | None) -> str:
    return status.name.lower() if status is not None else "unknown"


def when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def temporal_command(settings: Settings, *words: str) -> str:
    """A `temporal workflow ...` command line for this Temporal, ready to paste."""
    try:
        binary = program_path(temporal_cli())
    except MissingBinaryError:
        binary = "temporal"
    connection = ["--address", settings.temporal_address]
    if settings.temporal_namespace != "default":
        connection += ["--namespace", settings.temporal_namespace]
    command = " ".join(shell_word(w) for w in [binary, "workflow", *words, *connection])
    if settings.payload_keys is not None:
        # Payloads are encrypted: through the codec server, its token from the shell
        # (never printed).
        command += (
            f" --codec-endpoint {shell_word(settings.codec_endpoint)}"
            ' --codec-auth "Bearer $QUENCH_CODEC_TOKEN"'
        )
    return command


def update_command(settings: Settings, case_id: str, update: str, payload: str) -> str:
    """The `temporal workflow update execute` command that sends `update` to a case."""
    return temporal_command(
        settings, "update", "execute", "--workflow-id", case_id, "--name", update,
        "--input", payload,
    )  # fmt: skip


def program_path(found: Path) -> str:
    """A program's path to paste: .venv/bin/temporal when run from the checkout, as the
    README writes it."""
    cwd = Path.cwd()
    return str(found.relative_to(cwd)) if found.is_relative_to(cwd) else str(found)


def shell_word(word: str) -> str:
    """`word` quoted for a POSIX shell; a query's single quotes inside double quotes, which
    read as the query does, where nothing in it is special there."""
    if "'" in word and not any(c in word for c in '"\\$`!'):
        return f'"{word}"'
    return shlex.quote(word)


def decision_input(action_id: str, approver: str, reason: str) -> str:
    return json.dumps({"action_id": action_id, "approver": approver, "reason": reason})


def render_case(
    status: CaseStatus, temporal_status: str, invocation: str, settings: Settings
) -> str:
    """The case for a person: where it stands, what waits for whom and the commands to
    decide it, what was done, what is left, and the evidence with its hashes."""
    credential = status.credential
    principal = credential.principal if credential else None
    since = next((p.at for p in reversed(status.phases) if p.phase is status.phase), None)
    severities = [f.severity for f in status.findings]
    fields: list[tuple[str, object]] = [
        *(
            [("DRY RUN", f"nothing is changed in AWS; {len(status.would)} change(s) not made")]
            if status.dry_run
            else []
        ),
        ("Phase", f"{status.phase.value} (since {when(since)})"),
        ("Outcome", status.outcome),
        ("Temporal", temporal_status),
        ("Account", status.account_id),
        (
            "Credential",
            f"{credential.access_key_id} ({credential.kind.value})"
            if credential
            else status.findings[0].access_key.access_key_id,
        ),
        (
            "Principal",
            f"{principal.arn or principal.principal_id or '-'} ({principal.type.value})"
            if principal
            else "not resolved yet",
        ),
    ]
    instance = (principal.instance_id if principal else None) or status.findings[0].instance_id
    if instance:
        fields.append(("Instance", instance))
    fields += [
        (
            "Severity",
            f"{max(severities)}"
            + (f" (highest of {len(severities)} findings)" if len(severities) > 1 else ""),
        ),
        ("Opened", when(status.phases[0].at if status.phases else None)),
        ("Web UI", f"{settings.case_url_base}/{status.case_id}"),
    ]
    watch = status.watch
    if watch is not None and watch.verdict is None:
        fields.append(("Watch", _watching(watch)))
    parts = [f"Case {status.case_id}", render_fields(fields)]
    parts += _section(
        "Findings",
        render_table(
            ["ID", "TYPE", "SEVERITY", "COUNT", "FIRST SEEN", "LAST SEEN"],
            [
                [f.id, f.type, f.severity, f.count, when(f.first_seen), when(f.last_seen)]
                for f in status.findings
            ],
            right=(2, 3),
        ),
    )
    pending = status.pending_actions()
    if pending:
        parts += _section(
            f"Waiting for approval ({len(pending)})",
            "\n\n".join(_pending(status, a, invocation, settings) for a in pending),
        )
    if status.actions:
        parts += _section(
            "Actions",
            render_table(
                ["ID", "STATUS", "DECIDED BY", "WHAT"],
                [
                    [a.id, a.status.value, _decided_by(a), a.outcome or a.title]
                    for a in status.actions
                ],
            ),
        )
    if status.open_items:
        parts += _section("Open items", "\n".join(f"- {item}" for item in status.open_items))
    if status.refused:
        parts += _section(
            "Refused decisions",
            render_table(
                ["AT", "SIGNAL", "ACTION", "BY", "REASON", "SENT"],
                [
                    [when(r.at), r.signal, r.action_id, r.by, r.reason, _short(r.sent)]
                    for r in status.refused
                ],
            ),
        )
    if status.notes:
        parts += _section(
            "Notes",
            render_table(
                ["AT", "BY", "NOTE"], [[when(n.at), n.author, n.text] for n in status.notes]
            ),
        )
    parts += _section(
        f"Evidence ({len(status.evidence)})",
        render_table(
            ["NAME", "SHA256", "BYTES", "OBJECT"],
            [[e.name, e.sha256, e.size_bytes, e.uri] for e in status.evidence],
            right=(2,),
        )
        if status.evidence
        else "none yet",
    )
    if status.report:
        # A lab case's report is in the lab's bucket: read from the lab's AWS.
        lab = status.report.markdown_report.bucket == LAB_EVIDENCE_BUCKET
        parts += _section(
            "Post-incident report",
            f"{status.report.markdown_report.uri} (JSON: {status.report.json_report.uri})\n"
            f"read it: {invocation} report {shlex.quote(status.case_id)}"
            + (" --lab (with up's --state-dir, if it was given one)" if lab else ""),
        )
    return "\n".join(parts)


def _short(text: str | None, keep: int = 60) -> str:
    """What a refused sender sent, on one line and cut short (`--json` has it whole)."""
    if not text:
        return "-"
    flat = " ".join(text.split())
    return flat if len(flat) <= keep else flat[: keep - 1] + "…"


def _section(title: str, body: str) -> list[str]:
    return ["", title, body]


def _decided_by(action: Action) -> str | None:
    people = [e.approver for e in action.endorsements]
    if action.approval is not None:
        people.append(action.approval.approver)
    return ", ".join(people) or None


def _pending(status: CaseStatus, action: Action, invocation: str, settings: Settings) -> str:
    """A pending action: what it would do, who approved it so far, and how to decide it."""
    case_id = status.case_id
    lines = [f"{action.id}: {action.title}"]
    lines += [f"  - {step}" for step in action.steps]
    if action.approvals_needed > 1:
        given = ", ".join(e.approver for e in action.endorsements) or "nobody yet"
        lines.append(
            f"  needs {action.approvals_needed} different approvers: "
            f"{len(action.endorsements)} of {action.approvals_needed} so far ({given})"
        )
    if action.deadline is not None:
        escalated = f", escalated {action.escalations}x" if action.escalations else ""
        deadline = action.deadline.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        lines.append(f"  decide before {deadline}{escalated}")
    approve, reject = suggested_reasons(action.kind)
    # The key's path left for the shell to expand (~), so not quoted.
    signed = f" --key {SIGNING_KEY_PLACEHOLDER}" if status.signed_decisions else ""
    for verb, reason in (("approve", approve), ("reject", reject)):
        words = [verb, case_id, action.id, "--by", APPROVER_PLACEHOLDER, "--reason", reason]
        lines.append(f"  {verb + ':':<8} {invocation} {shlex.join(words)}{signed}")
    if signed:
        # A raw `temporal` update cannot sign: the case would refuse it.
        return "\n".join(lines)
    raw = update_command(
        settings,
        case_id,
        names.UPDATE_APPROVE,
        decision_input(action.id, APPROVER_PLACEHOLDER, approve),
    )
    lines.append(f"  or:      {raw}")
    return "\n".join(lines)


def _watching(watch: WatchStatus) -> str:
    """The watch under way: when it can end clean, and what it has seen so far."""
    seen = f"{counted(watch.checks, 'check')}"
    if watch.last_checked_at is not None:
        seen += f", the last at {when(watch.last_checked_at)}"
    if watch.denied_attempts:
        seen += f"; {counted(watch.denied_attempts, 'denied attempt')}"
    return f"ends clean no earlier than {when(watch.clean_at)} ({seen})"
