"""Opening or joining the case for a finding: one case per compromised credential."""

from temporalio.client import Client, WorkflowHandle

from config import names
from config.settings import Settings
from models.case import CaseInput, CaseStatus
from models.finding import Finding
from workflows.case import CaseWorkflow


async def open_or_join_case(
    client: Client, settings: Settings, finding: Finding
) -> WorkflowHandle[CaseWorkflow, CaseStatus]:
    """Signal-with-start: the running case for this credential gets the finding, or a new
    case starts with it. A closed case's id may be used again for a new case."""
    case_id = names.case_workflow_id(finding.account_id, finding.access_key.access_key_id)
    key = finding.access_key
    return await client.start_workflow(
        CaseWorkflow.run,
        CaseInput(case_id=case_id, finding=finding, policy=settings.case_policy()),
        id=case_id,
        task_queue=settings.task_queue,
        start_signal=names.SIGNAL_ADD_FINDING,
        start_signal_args=[finding],
        static_summary=f"{finding.type} on {key.access_key_id}",
        static_details=(
            f"**Finding** `{finding.id}` ({finding.type}, severity {finding.severity})\n\n"
            f"**Credential** `{key.access_key_id}` of {key.user_type or 'unknown'} "
            f"`{key.user_name or key.principal_id or '?'}` in account {finding.account_id}"
            + (f"\n\n**Instance** `{finding.instance_id}`" if finding.instance_id else "")
        ),
    )
