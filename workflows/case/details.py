"""What people read about a case: the Web UI's current details, and the texts of the
notifications that ask for a decision or say the case is closed. Pure text from the
case's status; nothing here decides anything."""

from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from temporalio import workflow

from playbook.words import counted

with workflow.unsafe.imports_passed_through():
    from config import names
    from models.case import Action, ActionKind, ActionStatus, CaseStatus, EvidenceRecord
    from playbook.report import in_words


# What a decision's reason could say, by kind of action, for the commands people are
# shown: a retry is not approved because something is malicious, nor declined because it
# is a false positive.
_SUGGESTED_REASONS: dict[ActionKind, tuple[str, str]] = {
    ActionKind.RETRY: ("the cause of the failure is fixed", "it will be done by hand"),
    ActionKind.ERADICATE: (
        "every resource on the plan is the attacker's",
        "a resource on the plan is legitimate",
    ),
    ActionKind.RECOVER: ("restore what the attacker changed", "it will be restored by hand"),
    ActionKind.MANUAL_CONTAINMENT: ("contained by hand as the checklist says", "not contained yet"),
    ActionKind.GO_LIVE: ("the dry run decided as we would", "keep it a dry run"),
    ActionKind.RELEASE: ("a false positive: undo it", "keep it in place"),
}
DEFAULT_REASONS = ("confirmed malicious", "false positive")


def suggested_reasons(kind: ActionKind) -> tuple[str, str]:
    """A reason to approve and one to reject an action of this kind, as examples."""
    return _SUGGESTED_REASONS.get(kind, DEFAULT_REASONS)


def approve_update_command(case_id: str, action_id: str) -> str:
    """The `temporal` command that approves an action and answers at once (or refuses)."""
    return (
        f"temporal workflow update execute --workflow-id {case_id} "
        f"--name {names.UPDATE_APPROVE} --input "
        f'\'{{"action_id": "{action_id}", "approver": "<you>", "reason": "<why>"}}\''
    )


def approval_request(
    status: CaseStatus, action: Action, severity: float, proceeds_at_deadline: bool
) -> str:
    """What the action would do and how to decide it, for a notification."""
    case_id = status.case_id
    credential = status.credential
    lines = [f"Case {case_id} ({status.phase.value}) waits for a decision."]
    if credential is not None:
        principal = credential.principal
        lines.append(
            f"Credential {credential.access_key_id} of "
            f"{principal.arn or principal.principal_id}, severity {severity}."
        )
    lines += ["", f"{action.id}: {action.title}", *[f"- {step}" for step in action.steps]]
    if action.deadline is not None:
        then = (
            "the case proceeds on its own" if proceeds_at_deadline else "the case escalates again"
        )
        lines.append(f"Decide before {utc(action.deadline)}; then {then}.")
    approve, reject = suggested_reasons(action.kind)
    command = f"quench approve {case_id} {action.id} --by <you> --reason <why>"
    if status.signed_decisions:
        # The policy takes signed decisions only: no raw `temporal` command can sign.
        lines += ["", f"Approve (signed): {command} --key <your key>"]
    else:
        lines += [
            "",
            f"Approve: {command}",
            f"     or: {approve_update_command(case_id, action.id)}",
        ]
    lines.append(
        f"(a reason could be '{approve}'; to decline: quench reject ... --reason '{reject}')"
    )
    return "\n".join(lines)


def closing_message(status: CaseStatus) -> tuple[str, str]:
    """The subject and text of the notification that the case is closed."""
    lines = [f"Case {status.case_id} is closed: {status.outcome}"]
    decided = [a for a in status.actions if a.approval is not None]
    lines += [f"- {a.id}: {a.status.value} by {a.approval.approver}" for a in decided if a.approval]
    if status.open_items:
        lines += ["", f"Open items for a human ({len(status.open_items)}):"]
        lines += [f"- {item}" for item in status.open_items]
    if status.report is not None:
        lines += ["", f"Post-incident report: {status.report.markdown_report.uri}"]
    return f"{status.case_id} closed", "\n".join(lines)


def utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(delta: timedelta) -> str:
    """A duration as people say it: 45s, 30m, 2h 5m."""
    seconds = int(delta.total_seconds())
    if seconds < 60:
        return f"{seconds}s"
    hours, minutes = divmod(seconds // 60, 60)
    if not hours:
        return f"{minutes}m"
    return f"{hours}h {minutes}m" if minutes else f"{hours}h"


def _console_url(record: EvidenceRecord) -> str:
    """The S3 console's page of an evidence object."""
    return (
        f"https://s3.console.aws.amazon.com/s3/object/{record.bucket}"
        f"?prefix={quote(record.key, safe='')}"
    )


def render_details(status: CaseStatus) -> str:
    """The case as Markdown for the Web UI's current details."""
    credential = status.credential
    lines = [
        f"## Case {status.case_id}",
        "",
        f"**Account:** {status.account_id} (every change is made there)",
        f"**Phase:** {status.phase.value}",
    ]
    if status.dry_run:
        lines.append(
            f"**DRY RUN:** nothing is changed in AWS; {len(status.would)} change(s) not made "
            "so far (`would` in the status)"
        )
    if status.phases and status.phases[-1].note:
        since = status.phases[-1].at.isoformat(timespec="seconds")
        lines.append(f"**Now:** {status.phases[-1].note} (since {since})")
    if status.outcome:
        lines.append(f"**Outcome:** {status.outcome}")
    watch = status.watch
    if watch is not None and watch.verdict is None:
        lines.append(
            f"**Containment watch:** {counted(watch.checks, 'check')} of CloudTrail so far, "
            f"{watch.denied_attempts} denied attempts; clean at "
            f"{watch.clean_at.isoformat(timespec='seconds')} if no call works"
            + (
                f"; blind while trail {', '.join(watch.blind_trails)} is not logging"
                if watch.blind_trails
                else ""
            )
        )
    if credential:
        principal = credential.principal
        lines += [
            f"**Credential:** `{credential.access_key_id}` ({credential.kind.value})",
            f"**Principal:** `{principal.arn or principal.principal_id}`",
        ]
        if principal.instance_id:
            lines.append(f"**Instance:** `{principal.instance_id}`")
    pending = status.pending_actions()
    if pending:
        lines += ["", "### Waiting for approval"]
        for action in pending:
            # A heading and a plain list each: the Web UI runs nested lists into one line.
            lines += ["", f"#### {action.id}: {action.title}", ""]
            lines += [f"{n}. {step}" for n, step in enumerate(action.steps, 1)]
            if action.approvals_needed > 1:
                given = ", ".join(e.approver for e in action.endorsements) or "none yet"
                lines += [
                    "",
                    f"Needs {action.approvals_needed} different approvers "
                    f"({len(action.endorsements)} so far: {given}).",
                ]
            if action.deadline is not None:
                escalated = f" (escalated {action.escalations}x)" if action.escalations else ""
                lines += ["", f"Decide before {utc(action.deadline)}{escalated}."]
            lines += [
                "",
                "Approve (the case answers at once, or says why it refuses):",
                "",
                f"`{approve_update_command(status.case_id, action.id)}`",
                "",
                "or as a signal:",
                "",
                f"`temporal workflow signal --workflow-id {status.case_id} "
                f'--name {names.SIGNAL_APPROVE} --input \'{{"action_id": "{action.id}", '
                f'"approver": "<you>", "reason": "<why>"}}\'`',
            ]
    done = [a for a in status.actions if a.status is not ActionStatus.PENDING_APPROVAL]
    if done:
        lines += ["", "### Actions"]
        lines += [f"- {a.id}: {a.status.value}: {a.outcome or a.title}" for a in done]
    if status.open_items:
        lines += ["", "### Open items for a human"]
        lines += [f"- {item}" for item in status.open_items]
    for plan in status.eradication:
        lines += [
            "",
            f"### Round {plan.round}: what {', '.join(plan.access_key_ids)} did "
            f"(since {plan.compromise_time.isoformat()})",
        ]
        lines += [
            f"- {group.value}: {count} ({', '.join(plan.impact_examples.get(group, []))})"
            for group, count in plan.impact.items()
            if count
        ]
        lines += ["", f"#### Removal plan ({counted(len(plan.steps), 'step')})"]
        lines += [
            f"{step.order}. {step.describe()}"
            + (f" — {in_words(step.outcome)}" if step.outcome else "")
            for step in plan.steps
        ]
        lines += [f"- restore: {c.kind.value} of {c.target}" for c in plan.changes]
        lines += [
            f"- new credential to investigate: `{c.access_key_id}` ({c.kind} of {c.principal})"
            for c in plan.new_credentials
        ]
    if status.recovery:
        lines += ["", "### Recovery"]
        lines += [f"- {r.description}: {in_words(r.outcome)}" for r in status.recovery]
        lines += [
            f"- logging gap on {g.trail} from {g.stopped_at.isoformat()} to "
            f"{g.restarted_at.isoformat() if g.restarted_at else 'not restarted'}"
            for g in status.logging_gaps
        ]
    if status.investigation:
        found = status.investigation
        chart = found.chart
        lines += [
            "",
            "### Investigation (CloudTrail)",
            f"- {found.hours_above_baseline} hours above the principal's 45-day baseline; "
            f"new source IPs: {', '.join(found.new_source_ips) or 'none'}; API calls never "
            f"made before: {', '.join(found.new_api_calls) or 'none'}",
            f"- chart: [`{chart.uri}`]({_console_url(chart)}) (sha256 `{chart.sha256[:16]}…`)",
            f"- the whole investigation: `{found.investigation.uri}`",
        ]
    if status.report:
        lines += [
            "",
            f"**Post-incident report:** `{status.report.markdown_report.uri}` "
            f"(JSON: `{status.report.json_report.uri}`)",
        ]
    if status.evidence:
        lines += ["", f"### Evidence ({counted(len(status.evidence), 'object')})"]
        lines += [f"- `{e.uri}` sha256 `{e.sha256[:16]}…`" for e in status.evidence]
    return "\n".join(lines)
