"""The case's investigation: the Detective-grade view of its credentials from CloudTrail
(their sessions, the principal's call volume against its 45-day baseline, what is new),
run as a child workflow beside the case and kept as evidence. A failure is an open item,
never a stuck case."""

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ChildWorkflowError, FailureError

with workflow.unsafe.imports_passed_through():
    from models.case import InvestigationInput, InvestigationRef
    from models.principal import Credential
    from workflows.case.patches import INVESTIGATION_CHILD_PATCH
    from workflows.case.record import CaseRecord
    from workflows.investigation import CredentialInvestigation, InvestigationWorkflow


class Investigation:
    def __init__(self, record: CaseRecord) -> None:
        self._record = record

    async def investigate(
        self, credential: Credential, keys: list[str], name: str = "investigation"
    ) -> None:
        """Investigate `keys`, the credential and any the attacker minted, from the likely
        compromise to now."""
        record = self._record
        status = record.status
        earlier = status.investigation
        request = InvestigationInput(
            case_id=status.folder,
            account_id=status.account_id,
            credentials=keys,
            findings=status.findings,
            scope_start=min(f.first_seen for f in status.findings)
            - timedelta(seconds=record.policy.compromise_margin_seconds),
            scope_end=workflow.now(),
            principal_evidence=next(
                (e for e in status.evidence if e.name.startswith(("iam-role-", "iam-user-"))),
                None,
            ),
            principal_arn=credential.principal.arn,
            baseline_parts=earlier.baseline_parts if earlier is not None else [],
            name=name,
        )
        try:
            found = await self._run(request)
        except (ActivityError, ChildWorkflowError) as failure:
            status.open_items.append(f"the CloudTrail investigation failed: {_reason(failure)}")
            record.refresh()
            return
        status.investigation = found
        record.record_evidence(found.investigation)
        record.record_evidence(found.chart)
        record.note(
            f"investigation of {found.principal_arn}: {found.hours_above_baseline} hours above "
            f"baseline; new source IPs {', '.join(found.new_source_ips) or 'none'}; "
            f"{len(found.new_api_calls)} API calls never made before"
        )
        record.refresh()

    async def every_credential(self) -> None:
        """Once the rounds found the credentials the attacker minted, the investigation
        again with all of them, so the report's session timeline has every one."""
        status = self._record.status
        credential = status.credential
        if status.investigation is None or credential is None:
            return
        keys = [credential.access_key_id]
        for plan in status.eradication:
            keys += [c.access_key_id for c in plan.new_credentials if c.access_key_id not in keys]
        if len(keys) == 1:
            return
        await self.investigate(credential, keys, name="investigation-all-credentials")

    async def _run(self, request: InvestigationInput) -> InvestigationRef:
        """As a child workflow: its reads, hundreds in a busy account of many regions,
        stay out of the case's history. Cases recorded before it existed read inline."""
        if not workflow.patched(INVESTIGATION_CHILD_PATCH):
            return await CredentialInvestigation(request).run()
        return await workflow.execute_child_workflow(
            InvestigationWorkflow.run,
            request,
            # Found beside its case in the Web UI; its evidence goes to the case's folder.
            id=f"{self._record.status.case_id}/{request.name}",
            task_queue=self._record.policy.scan_task_queue,
            static_summary=f"{request.name} of {', '.join(request.credentials)}",
        )


def _reason(failure: FailureError) -> str:
    """The innermost cause's message: what AWS or the activity said."""
    while isinstance(failure.cause, FailureError):
        failure = failure.cause
    return failure.message
