"""What a case knows and how it shows it: the status every phase writes to, its timeline
and phase, the search attributes and current details people find it by, and the work it
goes on beside."""

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate

with workflow.unsafe.imports_passed_through():
    from config import names
    from models.activities import InAccount
    from models.case import (
        CasePolicy,
        CaseStatus,
        EvidenceRecord,
        Phase,
        PhaseChange,
        TimelineEntry,
        WouldChange,
    )
    from models.finding import Finding
    from models.principal import Credential
    from playbook.undone import outcome_word, undone
    from workflows.case.details import render_details
    from workflows.case.metrics import CaseMetrics
    from workflows.case.patches import OUTCOME_ATTRIBUTE_PATCH

Request = TypeVar("Request", bound="InAccount")


class CaseRecord:
    """The case's status and policy, written by every phase through these few verbs."""

    def __init__(self, status: CaseStatus, policy: CasePolicy) -> None:
        self.status = status
        self.policy = policy
        self._metrics = CaseMetrics(status)
        # Work the case goes on beside: notifications on their way, the investigation.
        self._background: list[asyncio.Task[None]] = []

    @property
    def finding(self) -> Finding:
        """The finding that opened the case."""
        return self.status.findings[0]

    def in_account(self, request: Request) -> Request:
        """The request, carried out in the case's account in a session named for the case."""
        where: dict[str, object] = {
            "account_id": self.status.account_id,
            "case_id": self.status.folder,
        }
        if "protected_names" in type(request).model_fields:
            # What it must never change on its own, as the case's policy names it, but
            # for a protected principal two people approved containing.
            where["protected_names"] = self.policy.protected_names
            where["approved_protected"] = self.status.approved_protected
        return request.model_copy(update=where)

    @property
    def dry_run(self) -> bool:
        """Whether the case changes nothing in AWS (until a person approves going live)."""
        return self.status.dry_run

    def would(self, where: str, changes: list[str]) -> None:
        """A dry run's changes, not made: kept in order, and on the timeline."""
        now = workflow.now()
        for change in changes:
            self.status.would.append(WouldChange(at=now, action_id=where, change=change))
        self.note(f"dry run: {where}: {len(changes)} change(s) not made")

    def note(self, what: str) -> None:
        self.status.timeline.append(TimelineEntry(at=workflow.now(), what=what))

    def needs_human(self, item: str) -> None:
        """An open item: something a human must still do, on the timeline too."""
        if item in self.status.open_items:
            return
        self.status.open_items.append(item)
        self.note(f"needs a human: {item}")

    def set_phase(self, phase: Phase, note: str) -> None:
        now = workflow.now()
        self.status.phase = phase
        self.status.phases.append(PhaseChange(phase=phase, at=now, note=note))
        self.status.timeline.append(TimelineEntry(at=now, what=f"phase {phase.value}: {note}"))
        self.refresh()

    def close(self, outcome: str) -> None:
        """Closed with `outcome`; whatever it leaves undone becomes an open item first."""
        for item in undone(self.status):
            self.needs_human(item)
        self.status.outcome = outcome
        if workflow.patched(OUTCOME_ATTRIBUTE_PATCH):
            workflow.upsert_search_attributes(
                [names.SA_OUTCOME.value_set(outcome_word(self.status))]
            )
        self.set_phase(Phase.CLOSED, outcome)

    def record_evidence(self, record: EvidenceRecord) -> None:
        if all(e.key != record.key for e in self.status.evidence):
            self.status.evidence.append(record)
            self.note(f"evidence {record.uri} sha256={record.sha256}")

    def refresh(self) -> None:
        """The phase and pending approvals for list queries, the details for the Web UI."""
        pending = self.status.pending_actions()
        workflow.upsert_search_attributes(
            [
                names.SA_PHASE.value_set(self.status.phase.value),
                names.SA_PENDING_APPROVALS.value_set(len(pending)),
            ]
        )
        workflow.set_current_details(render_details(self.status))
        self._metrics.refresh()

    def upsert_finding_attributes(self, finding: Finding) -> None:
        updates: list[SearchAttributeUpdate[Any]] = [
            names.SA_ACCOUNT_ID.value_set(finding.account_id),
            names.SA_ACCESS_KEY_ID.value_set(finding.access_key.access_key_id),
            names.SA_FINDING_TYPE.value_set(finding.type),
            names.SA_SEVERITY.value_set(finding.severity),
        ]
        if finding.instance_id:
            updates.append(names.SA_INSTANCE_ID.value_set(finding.instance_id))
        workflow.upsert_search_attributes(updates)

    def upsert_principal_attributes(self, credential: Credential) -> None:
        principal = credential.principal
        updates = [names.SA_PRINCIPAL_TYPE.value_set(principal.type.value)]
        if principal.arn:
            updates.append(names.SA_PRINCIPAL_ARN.value_set(principal.arn))
        if principal.instance_id:
            updates.append(names.SA_INSTANCE_ID.value_set(principal.instance_id))
        workflow.upsert_search_attributes(updates)

    def upsert_escalations(self, escalations: int) -> None:
        workflow.upsert_search_attributes([names.SA_ESCALATIONS.value_set(escalations)])

    def beside(self, work: Coroutine[Any, Any, None]) -> "asyncio.Task[None]":
        """Run `work` while the case goes on: a slow notification channel or a long
        look-back must not hold up containment. The case ends only once it is done."""
        task = asyncio.create_task(work)
        self._background.append(task)
        return task

    async def background_done(self) -> None:
        """Every notification on its way delivered (or noted as failed), and the
        investigation over."""
        running, self._background = self._background, []
        await asyncio.gather(*running)
