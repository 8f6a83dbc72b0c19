"""Handing a finding to its case: one case per compromised credential.

Update-with-start: the running case for the credential takes the finding, or a new case
starts with it, and either way the case itself answers what it made of the finding. The
answer arrives only once the update is in the case's history, so a 2xx built from it
never loses a finding. A worker must be polling: the case's update handler gives the
answer.
"""

import asyncio
from typing import Any

from temporalio.client import Client, WithStartWorkflowOperation, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError

from config import names
from config.settings import Settings
from models.case import CaseInput
from models.finding import Finding
from models.intake import FindingOutcome, IngestResult, SubmitFindingInput
from workflows.case import CaseWorkflow


class FindingRefused(Exception):
    """The case refused the finding for a reason a retry cannot change."""


async def submit_finding(
    client: Client, settings: Settings, finding: Finding, dry_run: bool = False
) -> IngestResult:
    """The finding handed to its case; a new case is a dry run when `dry_run` or
    QUENCH_DRY_RUN says so (a running case goes on as it is)."""
    key = finding.access_key
    case_id = names.case_workflow_id(finding.account_id, key.access_key_id)
    start = WithStartWorkflowOperation(
        CaseWorkflow.run,
        CaseInput(
            case_id=case_id,
            finding=finding,
            policy=settings.case_policy(finding.account_id, dry_run=dry_run),
        ),
        id=case_id,
        task_queue=settings.task_queue,
        # A running case takes the finding; a closed case's id is used again for a new one.
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"{finding.type} on {key.access_key_id}"[:200],
        static_details=(
            f"**Finding** `{finding.id}` ({finding.type}, severity {finding.severity})\n\n"
            f"**Credential** `{key.access_key_id}` of {key.user_type or 'unknown'} "
            f"`{key.user_name or key.principal_id or '?'}` in account {finding.account_id}"
            + (f"\n\n**Instance** `{finding.instance_id}`" if finding.instance_id else "")
        ),
    )
    try:
        result = await client.execute_update_with_start_workflow(
            CaseWorkflow.submit_finding,
            SubmitFindingInput(finding=finding),
            start_workflow_operation=start,
        )
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        if isinstance(cause, ApplicationError) and cause.type == names.DUPLICATE_FINDING_ERROR:
            run_id = cause.details[0] if cause.details else None
            return IngestResult(
                outcome=FindingOutcome.DUPLICATE,
                case_id=case_id,
                run_id=str(run_id) if run_id else None,
                finding_id=finding.id,
                reason=cause.message,
            )
        raise FindingRefused(str(cause)) from exc
    except BaseException:
        _settle(start)
        raise
    return IngestResult(
        outcome=result.outcome,
        case_id=result.case_id,
        run_id=result.run_id,
        finding_id=finding.id,
    )


def _settle(start: WithStartWorkflowOperation[Any, Any]) -> None:
    """The SDK leaves a failed start in a future only `workflow_handle()` would read; read
    it here, so asyncio does not report it as lost (the sender is already told to retry)."""
    future = getattr(start, "_workflow_handle", None)
    if isinstance(future, asyncio.Future) and future.done() and not future.cancelled():
        future.exception()
