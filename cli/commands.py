"""The case commands: start, list, show (alias status), approve, reject, note, report.

Readable tables by default and `--json` for scripts; errors go to standard error with a
non-zero exit status: 2 for input that cannot be used (nothing was sent), 1 for anything
else (Temporal unreachable, no such case, a decision refused).
"""

import argparse
import asyncio
import json
import math
import os
import shlex
import sys
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from pydantic import BaseModel, ValidationError
from pydantic_settings import SettingsError
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.aws import AwsClients
from activities.evidence import EvidenceStore
from cli.findings import FindingFileError, read_document, triage_document
from cli.queries import CaseFilter, QueryValueError, build_query
from cli.render import (
    CaseLine,
    decision_input,
    render_case,
    render_case_lines,
    temporal_command,
    update_command,
)
from cli.stack_options import add_stack_options, stack_config
from cli.tables import render_table
from codec.aesgcm import ENCRYPTED_ENCODING
from config import names
from config.settings import Settings, settings_problem
from config.temporal import connect
from lab import world as lab_world
from models.case import (
    ApprovalInput,
    CaseStatus,
    Decision,
    DecisionSignature,
    EvidenceRecord,
    FalsePositiveInput,
    NoteInput,
    Phase,
)
from models.intake import FindingOutcome, IngestResult
from models.principal import PrincipalType
from playbook import signing
from playbook.signing import FALSE_POSITIVE_SUBJECT
from stack.binaries import MissingBinaryError
from stack.embedded import EmbeddedStack
from webhook.intake import FindingRefused, submit_finding
from workflows.case import CaseWorkflow

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

EXIT_ERROR = 1
EXIT_USAGE = 2
# A query needs a worker to answer it; without one it would wait for ever.
QUERY_TIMEOUT = timedelta(seconds=20)
DEFAULT_START_TIMEOUT = 30.0
DEFAULT_LIST_LIMIT = 100

Handler = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class CommandError(Exception):
    """What went wrong, for the person at the terminal, and the exit status it ends with."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def out(text: str) -> None:
    print(text, flush=True)


def err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- the commands ------------------------------------------------------------------------


async def cmd_start(args: argparse.Namespace, settings: Settings) -> int:
    """Hand the findings of a file to their cases, as the webhook hands a delivery."""
    if not settings.managed_accounts:
        raise CommandError(
            "no account is managed, so every finding would be ignored: set "
            "QUENCH_ACCOUNT_ID or QUENCH_ACCOUNTS_FILE as the webhook has them (the lab's: "
            "`start --lab`); nothing was started",
            EXIT_USAGE,
        )
    try:
        # New cases are written as the webhook writes them: encrypted outside the lab.
        settings.require_payload_encryption()
    except ValueError as exc:
        raise CommandError(f"{exc}; nothing was started", EXIT_USAGE) from None
    try:
        entries = triage_document(read_document(args.file), settings)
    except FindingFileError as exc:
        raise CommandError(f"{exc}; nothing was started", EXIT_USAGE) from None
    client = await _connect(settings)
    answers: list[IngestResult] = []
    for entry in entries:
        triage = entry.triage
        if triage.finding is None:
            answers.append(
                IngestResult(
                    outcome=FindingOutcome.IGNORED,
                    finding_id=triage.finding_id,
                    reason=triage.ignored,
                )
            )
            continue
        try:
            async with asyncio.timeout(args.timeout):
                answers.append(await submit_finding(client, settings, triage.finding, args.dry_run))
        except FindingRefused as exc:
            _print_answers(args, answers)
            raise CommandError(f"{entry.where}: the case refused the finding: {exc}") from None
        except RPCError as exc:
            # Temporal failed between findings: what it took is said, and the rest is
            # left for a second run, where a finding already taken is answered duplicate.
            _print_answers(args, answers)
            raise CommandError(
                f"{entry.where}: Temporal did not take finding {triage.finding.id}: {exc}. "
                "Run `start` again once it answers (a finding already taken is answered "
                "duplicate)"
            ) from None
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
            _print_answers(args, answers)
            raise CommandError(
                f"{entry.where}: the case did not take finding {triage.finding.id} within "
                f"{args.timeout:g}s: is a worker polling task queue {settings.task_queue}? "
                "Run `start` again once one is (a finding already taken is answered "
                "duplicate)"
            ) from None
    _print_answers(args, answers)
    if all(a.outcome is FindingOutcome.IGNORED for a in answers):
        raise CommandError("nothing started: Quench does not act on these findings")
    return 0


def _print_answers(args: argparse.Namespace, answers: list[IngestResult]) -> None:
    if args.json:
        out(_json([a.model_dump(mode="json") for a in answers]))
        return
    if not answers:
        return
    out(
        render_table(
            ["OUTCOME", "CASE", "FINDING", "REASON"],
            [[a.outcome.value, a.case_id, a.finding_id, a.reason] for a in answers],
        )
    )
    cases = dict.fromkeys(a.case_id for a in answers if a.case_id)
    for case_id in cases:
        out(f"follow it: {args.invocation} show {shlex.quote(case_id)}")


async def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    case_filter = CaseFilter(
        phases=[Phase(p) for p in args.phase or []],
        account_id=args.account,
        principal_arn=args.principal,
        principal_type=args.principal_type,
        access_key_id=args.key,
        finding_type=args.finding_type,
        instance_id=args.instance,
        min_severity=args.min_severity,
        awaiting=args.awaiting,
        open=args.open,
        raw=args.query,
    )
    try:
        query = build_query(case_filter)
    except QueryValueError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    if args.json and args.ids:
        raise CommandError("--json or --ids: one of them", EXIT_USAGE)
    if args.show_query or args.verbose:
        # On standard error, so that `--json` output stays one document.
        err(temporal_command(settings, "list", "--query", query))
    client = await _connect(settings)
    lines: list[CaseLine] = []
    seen: set[str] = set()
    try:
        async for execution in client.list_workflows(query, page_size=min(args.limit, 1000)):
            # A case continued as new has a run per part; the newest (listed first) stands
            # for the case.
            if execution.id in seen:
                continue
            seen.add(execution.id)
            lines.append(CaseLine.of(execution))
            if len(lines) >= args.limit:
                break
    except RPCError as exc:
        if exc.status is RPCStatusCode.INVALID_ARGUMENT:
            raise CommandError(
                f"Temporal refused the query: {exc.message}\n  query: {query}", EXIT_USAGE
            ) from None
        raise
    if args.json:
        out(_json([line.model_dump(mode="json") for line in lines]))
    elif args.ids:
        if lines:
            out("\n".join(line.case_id for line in lines))
    else:
        out(render_case_lines(lines))
    return 0


async def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    client = await _connect(settings)
    handle = client.get_workflow_handle_for(CaseWorkflow.run, args.case_id)
    if args.verbose:
        err(
            temporal_command(
                settings, "query", "--workflow-id", args.case_id, "--name", names.QUERY_STATUS
            )
        )
    status, temporal_status = await case_status(handle, args.case_id)
    if args.json:
        out(status.model_dump_json(indent=2))
    else:
        out(render_case(status, temporal_status, args.invocation, settings))
    return 0


def _show_update(settings: Settings, case_id: str, update: str, payload: str) -> None:
    """-v: the same update as a raw `temporal` command, on standard error."""
    err(update_command(settings, case_id, update, payload))


async def cmd_decide(args: argparse.Namespace, settings: Settings) -> int:
    """approve or reject, as an update: the case answers, or says why it refuses."""
    update = (
        CaseWorkflow.approve_action if args.command == "approve" else CaseWorkflow.reject_action
    )
    update_name = names.UPDATE_APPROVE if args.command == "approve" else names.UPDATE_REJECT
    decision = _model(ApprovalInput, action_id=args.action_id, approver=args.by, reason=args.reason)
    key = _signing_key(args)
    client = await _connect(settings)
    handle = client.get_workflow_handle_for(CaseWorkflow.run, args.case_id)
    if key is not None:
        # The signature covers the action's time, read from the case.
        status, _ = await case_status(handle, args.case_id)
        action = next((a for a in status.actions if a.id == decision.action_id), None)
        if action is None:
            raise CommandError(f"{args.case_id} has no action {decision.action_id}")
        verdict = Decision.APPROVED if args.command == "approve" else Decision.REJECTED
        signature = _signature(
            key, args.case_id, action.id, action.requested_at, verdict.value, args.by, args.reason
        )
        decision = decision.model_copy(update={"signature": signature})
    if args.verbose:
        _show_update(
            settings,
            args.case_id,
            update_name,
            decision_input(decision.action_id, decision.approver, decision.reason),
        )
    result = await _update(
        handle, args.case_id, lambda: handle.execute_update(update, decision), settings
    )
    if args.json:
        out(_json({"case_id": args.case_id, **result.model_dump(mode="json")}))
    else:
        out(
            f"{args.command} sent for {result.action_id} on {args.case_id}: "
            + (
                result.status.value
                if args.command == "reject"
                else f"{result.status.value} ({result.approvals} of {result.needed} approvals)"
            )
        )
    return 0


async def cmd_note(args: argparse.Namespace, settings: Settings) -> int:
    note = _model(NoteInput, author=args.by, text=args.text)
    if args.verbose:
        _show_update(settings, args.case_id, names.UPDATE_ADD_NOTE, note.model_dump_json())
    client = await _connect(settings)
    handle = client.get_workflow_handle_for(CaseWorkflow.run, args.case_id)
    result = await _update(
        handle,
        args.case_id,
        lambda: handle.execute_update(CaseWorkflow.add_note_now, note),
        settings,
    )
    if args.json:
        out(_json({"case_id": args.case_id, **result.model_dump(mode="json")}))
    else:
        out(f"note added to {args.case_id} ({result.notes} notes)")
    return 0


def _signing_key(args: argparse.Namespace) -> "Ed25519PrivateKey | None":
    """The approver's private key, from --key or QUENCH_SIGNING_KEY; None: unsigned."""
    key_path = args.key or os.environ.get("QUENCH_SIGNING_KEY")
    if not key_path:
        return None
    try:
        return signing.private_key(Path(key_path).expanduser().read_bytes())
    except OSError as exc:
        raise CommandError(f"cannot read the signing key {key_path}: {exc}", EXIT_USAGE) from None
    except signing.UnreadableKey as exc:
        raise CommandError(f"{key_path}: {exc}", EXIT_USAGE) from None


def _signature(
    key: "Ed25519PrivateKey",
    case_id: str,
    subject: str,
    since: datetime,
    decision: str,
    approver: str,
    reason: str,
) -> DecisionSignature:
    """A decision signed with the approver's key (playbook/signing.py's message); the
    fields as the case reads them (stripped, as its models strip them)."""
    signed_at = datetime.now(UTC).replace(microsecond=0)
    message = signing.signed_message(
        case_id, subject, since, decision, approver.strip(), reason.strip(), signed_at
    )
    return DecisionSignature(signed_at=signed_at, signature=signing.sign(key, message))


async def cmd_false_positive(args: argparse.Namespace, settings: Settings) -> int:
    """Mark a case a false positive: its response stops; each change it made is offered
    back as a release action to approve."""
    marked = _model(FalsePositiveInput, by=args.by, reason=args.reason)
    key = _signing_key(args)
    client = await _connect(settings)
    handle = client.get_workflow_handle_for(CaseWorkflow.run, args.case_id)
    if key is not None:
        # Signed as a decision on the case since it opened.
        status, _ = await case_status(handle, args.case_id)
        signature = _signature(
            key,
            args.case_id,
            FALSE_POSITIVE_SUBJECT,
            status.phases[0].at,
            FALSE_POSITIVE_SUBJECT,
            args.by,
            args.reason,
        )
        marked = marked.model_copy(update={"signature": signature})
    if args.verbose:
        _show_update(settings, args.case_id, names.UPDATE_FALSE_POSITIVE, marked.model_dump_json())
    result = await _update(
        handle,
        args.case_id,
        lambda: handle.execute_update(CaseWorkflow.mark_false_positive_now, marked),
        settings,
    )
    if args.json:
        out(_json({"case_id": args.case_id, **result.model_dump(mode="json")}))
    elif result.released:
        out(
            f"{args.case_id} marked a false positive; approve each release to undo what it "
            f"changed: {', '.join(result.released)}"
        )
    else:
        out(f"{args.case_id} marked a false positive; it changed nothing to release")
    return 0


async def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    """The report from the evidence bucket, checked against the SHA-256 the case holds."""
    client = await _connect(settings)
    handle = client.get_workflow_handle_for(CaseWorkflow.run, args.case_id)
    status, _ = await case_status(handle, args.case_id)
    if status.report is None:
        raise CommandError(f"{status.case_id} has no report yet (phase {status.phase.value})")
    record = status.report.json_report if args.json else status.report.markdown_report
    try:
        store = EvidenceStore(AwsClients.from_settings(settings), record.bucket)
        body = await asyncio.to_thread(store.read_verified, record)
    except (ApplicationError, BotoCoreError, ClientError) as exc:
        raise CommandError(
            _report_unreadable(exc, record, settings, f"{args.invocation} report {args.case_id}")
        ) from None
    out(body.decode().rstrip("\n"))
    return 0


def _report_unreadable(
    exc: Exception, record: EvidenceRecord, settings: Settings, command: str
) -> str:
    """Why the report could not be read, and what to do about it: botocore's own words
    ("Unable to locate credentials") say neither what was being read nor how to fix it."""
    cause = exc.__cause__ if isinstance(exc, ApplicationError) else exc
    lab_case = record.bucket == lab_world.EVIDENCE_BUCKET and settings.aws_endpoint_url is None
    lab_hint = (
        f"this case ran in the lab (its evidence is in the lab's bucket): read it from the "
        f"lab's AWS with `{command} --lab` (and `up`'s --state-dir, if it was given one)"
    )
    if isinstance(cause, NoCredentialsError | PartialCredentialsError):
        missing = f"no AWS credentials to read the report from {record.uri}"
        if lab_case:
            return f"{missing}; {lab_hint}"
        return (
            f"{missing}: give credentials as for the AWS CLI (AWS_PROFILE, AWS_ACCESS_KEY_ID "
            "and AWS_SECRET_ACCESS_KEY, ~/.aws/credentials, or an instance role) that may "
            f"s3:GetObject in {record.bucket}"
        )
    reason = str(cause) if isinstance(cause, BotoCoreError | ClientError) else str(exc)
    message = f"cannot read the report {record.uri}: {reason}"
    return f"{message}; {lab_hint}" if lab_case else message


# -- talking to Temporal -----------------------------------------------------------------


async def _connect(settings: Settings) -> Client:
    try:
        return await connect(settings)
    except RuntimeError as exc:
        # How the client reports a Temporal it cannot reach; its transport's words for a
        # refused connection say nothing a person needs.
        reason = "nothing listens there" if "Connection refused" in str(exc) else str(exc)
        raise CommandError(
            f"cannot connect to Temporal at {settings.temporal_address}: {reason}. Is the "
            "stack up? `make demo` runs Temporal at 127.0.0.1:7233; a stack on other ports "
            "prints its address: set QUENCH_TEMPORAL_ADDRESS to it"
        ) from None


async def case_status(
    handle: WorkflowHandle[Any, CaseStatus], case_id: str
) -> tuple[CaseStatus, str]:
    """The case's status and Temporal's word for its run. A completed case is read from
    its result; any other is asked (a worker answers the query)."""
    try:
        description = await handle.describe()
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            raise CommandError(f"no such case: {case_id}") from None
        raise
    state = description.status.name.lower() if description.status else "unknown"
    if description.status is WorkflowExecutionStatus.COMPLETED:
        return await handle.result(), state
    try:
        return await handle.query(CaseWorkflow.status, rpc_timeout=QUERY_TIMEOUT), state
    except RPCError as exc:
        # The client's own deadline ends the call as cancelled; the server's, as exceeded.
        if exc.status in {RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED}:
            raise CommandError(
                f"no worker answered for {case_id} within {QUERY_TIMEOUT.seconds}s: is a "
                f"worker polling task queue {description.task_queue}?"
            ) from None
        raise
    except WorkflowQueryFailedError as exc:
        raise CommandError(f"{case_id} could not answer: {exc}") from None


async def _update(
    handle: WorkflowHandle[Any, Any],
    case_id: str,
    send: Callable[[], Awaitable[T]],
    settings: Settings,
) -> T:
    """An update's answer; a refusal, an unknown case, an ended one, and no worker to
    answer, as errors."""
    if settings.payload_keys is None:
        await _refuse_clear_writes_to_encrypted(handle, case_id)
    try:
        async with asyncio.timeout(QUERY_TIMEOUT.total_seconds()):
            return await send()
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
        raise CommandError(
            f"no worker answered for {case_id} within {QUERY_TIMEOUT.seconds}s: is a worker "
            "polling the case's task queue? The decision may still be taken once one runs: "
            "check with `show`"
        ) from None
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        raise CommandError(
            f"refused: {cause.message if isinstance(cause, ApplicationError) else exc}"
        ) from None
    except RPCError as exc:
        if exc.status is not RPCStatusCode.NOT_FOUND:
            raise
        await _raise_if_unknown(handle, case_id)
        # The case exists: its run has ended, so nothing can be decided on it any more.
        raise CommandError(f"refused: {case_id} has ended: {exc.message}") from None


async def _refuse_clear_writes_to_encrypted(handle: WorkflowHandle[Any, Any], case_id: str) -> None:
    """A command without the payload keys must not write into a case that is encrypted:
    its decision would be kept in clear (and its answer could not be read). A case kept in
    clear (the lab, QUENCH_ENCRYPT_PAYLOADS=false) takes it as it is."""
    try:
        async for event in handle.fetch_history_events(page_size=1):
            started = event.workflow_execution_started_event_attributes
            encrypted = any(
                payload.metadata.get("encoding") == ENCRYPTED_ENCODING
                for payload in started.input.payloads
            )
            if encrypted:
                raise CommandError(
                    f"{case_id} is encrypted: set QUENCH_PAYLOAD_KEYS (and "
                    "QUENCH_PAYLOAD_KEY_ID) as the worker has them; nothing was sent",
                    EXIT_USAGE,
                )
            return
    except RPCError as exc:
        if exc.status is not RPCStatusCode.NOT_FOUND:
            raise
        await _raise_if_unknown(handle, case_id)


async def _raise_if_unknown(handle: WorkflowHandle[Any, Any], case_id: str) -> None:
    try:
        await handle.describe()
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            raise CommandError(f"no such case: {case_id}") from None
        raise


def _model(model: type[M], **values: Any) -> M:
    try:
        return model(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        option = {"approver": "--by", "author": "--by"}.get(str(first["loc"][0]), "")
        option = option or f"--{first['loc'][0]}".replace("_", "-")
        raise CommandError(f"{option}: {first['msg']}", EXIT_USAGE) from None


def _json(value: Any) -> str:
    return json.dumps(value, indent=2)


# -- the command line --------------------------------------------------------------------


def add_case_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """The case commands, on the `starter.py` (or `quench`) command line."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also print the raw `temporal workflow ...` command (on standard error)",
    )
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="JSON for scripts")

    start = commands.add_parser(
        "start",
        parents=[common, as_json],
        help="start (or join) cases from a file of findings, as the webhook does",
        description=(
            "Hand each finding in FILE to its case, exactly as the webhook does: a "
            "GuardDuty finding (the `detail` of its event), an EventBridge event "
            "(GuardDuty or Security Hub), or a JSON list of them; '-' reads standard "
            "input. Each finding is answered new_case, joined, updated, duplicate or "
            "ignored, with its case id. A file with any entry that cannot be read starts "
            "nothing."
        ),
    )
    start.add_argument("file", metavar="FILE")
    start.add_argument(
        "--timeout",
        type=_positive_float,
        default=DEFAULT_START_TIMEOUT,
        metavar="SECONDS",
        help=f"how long each case may take to answer (default {DEFAULT_START_TIMEOUT:g})",
    )
    start.add_argument(
        "--lab", action="store_true", help="the lab's stack, and the accounts its webhook manages"
    )
    start.add_argument(
        "--dry-run",
        action="store_true",
        help="new cases change nothing in AWS: they record what they would have changed, "
        "until a person approves their go-live action",
    )
    add_stack_options(start)
    start.set_defaults(handler=cmd_start)

    listing = commands.add_parser(
        "list",
        parents=[common, as_json],
        help="list cases, filtered on their search attributes",
        description=(
            "List cases through Temporal's visibility, running ones first: every filter "
            "is ANDed into one `temporal workflow list --query`, printed with --show-query."
        ),
    )
    listing.add_argument(
        "--phase",
        action="append",
        choices=[p.value for p in Phase],
        metavar="PHASE",
        help=f"repeatable, any of them: {', '.join(p.value for p in Phase)}",
    )
    listing.add_argument("--account", metavar="ACCOUNT_ID")
    listing.add_argument("--principal", metavar="ARN", help="the principal's ARN")
    listing.add_argument("--principal-type", choices=[t.value for t in PrincipalType])
    listing.add_argument("--key", metavar="ACCESS_KEY_ID")
    listing.add_argument("--finding-type", metavar="TYPE")
    listing.add_argument("--instance", metavar="INSTANCE_ID")
    listing.add_argument("--min-severity", type=_severity, metavar="N")
    listing.add_argument(
        "--awaiting",
        action="store_true",
        help="with approvals pending (QuenchPendingApprovals > 0)",
    )
    listing.add_argument(
        "--open", action="store_true", help="still running (not closed, not terminated)"
    )
    listing.add_argument("--query", help="a raw visibility query, ANDed with the filters")
    listing.add_argument("--limit", type=_positive_int, default=DEFAULT_LIST_LIMIT)
    listing.add_argument(
        "--show-query", action="store_true", help="print the query (on standard error)"
    )
    listing.add_argument(
        "--ids",
        action="store_true",
        help="only the case ids, one a line (for scripts: CASE=$(quench list --open --ids "
        "--limit 1))",
    )
    listing.set_defaults(handler=cmd_list)

    show = commands.add_parser(
        "show",
        aliases=["status"],
        parents=[common, as_json],
        help="show a case: where it stands, what waits for approval, evidence",
    )
    show.add_argument("case_id")
    show.set_defaults(handler=cmd_show)

    for name in ("approve", "reject"):
        decide = commands.add_parser(
            name, parents=[common, as_json], help=f"{name} a pending action of a case"
        )
        decide.add_argument("case_id")
        decide.add_argument("action_id")
        decide.add_argument("--by", required=True, help="who decides (recorded on the case)")
        decide.add_argument("--reason", required=True)
        decide.add_argument(
            "--key",
            metavar="PATH",
            help="sign the decision with this Ed25519 private key (OpenSSH or PEM, "
            "unencrypted; default: $QUENCH_SIGNING_KEY), as a policy with approver keys asks",
        )
        decide.set_defaults(handler=cmd_decide)

    note = commands.add_parser("note", parents=[common, as_json], help="add a note to a case")
    note.add_argument("case_id")
    note.add_argument("--by", required=True)
    note.add_argument("--text", required=True)
    note.set_defaults(handler=cmd_note)

    false_positive = commands.add_parser(
        "false-positive",
        parents=[common, as_json],
        help="mark a case a false positive: offer back what its containment changed",
    )
    false_positive.add_argument("case_id")
    false_positive.add_argument("--by", required=True, help="who says so (recorded)")
    false_positive.add_argument("--reason", required=True)
    false_positive.add_argument(
        "--key",
        metavar="PATH",
        help="sign the mark with this Ed25519 private key (default: $QUENCH_SIGNING_KEY), "
        "as a policy with approver keys asks",
    )
    false_positive.set_defaults(handler=cmd_false_positive)

    report = commands.add_parser(
        "report", parents=[common], help="print a closed case's post-incident report"
    )
    report.add_argument("case_id")
    report.add_argument("--json", action="store_true", help="the JSON form, not the Markdown")
    report.add_argument("--lab", action="store_true", help="read it from the lab's AWS")
    add_stack_options(report)
    report.set_defaults(handler=cmd_report)


def run_case_command(args: argparse.Namespace, invocation: str) -> int:
    """Run a case command; its exit status."""
    args.invocation = invocation
    handler: Handler = args.handler
    try:
        if getattr(args, "lab", False):
            # The lab's AWS and Temporal, as `up` runs them with the same options.
            # A Temporal named in the shell is still the one meant.
            lab_env = EmbeddedStack(stack_config(args, lab=True)).child_env()
            for named in ("QUENCH_TEMPORAL_ADDRESS", "QUENCH_TEMPORAL_NAMESPACE"):
                lab_env[named] = os.environ.get(named, lab_env[named])
            os.environ.update(lab_env)
        try:
            # The lab's faults and call log are the worker's: a shell that exported them to
            # run `up` can still run the case commands, which never use them.
            settings = Settings(lab_faults={}, lab_log_calls=False)
        except (ValidationError, SettingsError) as exc:
            raise CommandError(settings_problem(exc), EXIT_USAGE) from None
        return asyncio.run(handler(args, settings))
    except CommandError as exc:
        err(f"error: {exc}" if not str(exc).startswith("refused:") else str(exc))
        return exc.exit_code
    except (RPCError, RuntimeError, MissingBinaryError) as exc:
        err(f"error: {exc}")
        return EXIT_ERROR
    except KeyError as exc:
        # What the data converter says of a payload it has no codec for.
        if "payload encoding" not in str(exc):
            raise
        err(
            "error: this case's payloads are encrypted: set QUENCH_PAYLOAD_KEYS (and "
            "QUENCH_PAYLOAD_KEY_ID) as the worker has them"
        )
        return EXIT_ERROR
    except BrokenPipeError:
        # The reader went away (`list | head`): nothing left to say to it.
        sys.stdout = open(os.devnull, "w")
        return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def _severity(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and 0 <= value <= 10):
        raise argparse.ArgumentTypeError("GuardDuty's severities run from 0 to 10")
    return value
