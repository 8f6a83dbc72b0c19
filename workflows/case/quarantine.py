"""The organisation-level quarantine (playbook/quarantine.py): proposed when the watch sees
containment undone or bypassed in an account of an organisation Quench may act on, and
lifted, with its own approval, once eradication and recovery are done."""

from collections.abc import Callable
from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.organizations import OrganizationActivities
    from models.activities import QuarantineInput, QuarantineResult
    from models.case import ActionKind, ActionStatus, Decision, Quarantine
    from models.principal import Credential
    from playbook.classify import ResourceKind
    from playbook.quarantine import (
        document_text,
        fits,
        principal_arns,
        quarantine_document,
        quarantine_policy_name,
    )
    from workflows.case.approvals import Approvals
    from workflows.case.eradication import attacker_made
    from workflows.case.patches import QUARANTINE_PATCH
    from workflows.case.record import CaseRecord
    from workflows.case.retries import AWS_RETRY, HEARTBEAT_TIMEOUT


class OrganizationQuarantine:
    def __init__(self, record: CaseRecord, approvals: Approvals) -> None:
        self._record = record
        self._approvals = approvals

    def available(self) -> bool:
        """In an organisation Quench may act on, and not quarantined yet."""
        record = self._record
        return (
            record.policy.quarantine is not None
            and record.status.quarantine is None
            and workflow.patched(QUARANTINE_PATCH)
        )

    async def propose(self, credential: Credential) -> None:
        """A service control policy on the case's account, for approval: what the account's
        own IAM cannot keep denied, the organisation does."""
        record = self._record
        policy = record.policy.quarantine
        assert policy is not None
        account = record.status.account_id
        # Now, as containing again will: sessions issued since the first cut-off are the
        # attacker's too when it undid containment.
        cutoff = workflow.now()
        principal = credential.principal
        role_sessions = (
            [principal.role_arn]
            if principal.role_arn
            else principal_arns(account, [principal.role_name], ("role",))
            if principal.role_name
            else []
        )
        # A user is denied whatever its credentials' age: its keys last until deleted.
        denied = [principal.arn] if principal.user_name and principal.arn else []
        for kind, noun in ((ResourceKind.USER, "user"), (ResourceKind.ROLE, "role")):
            names = [name for k, name in attacker_made(record.status) if k is kind and name]
            denied += principal_arns(account, names, (noun,))
        document = quarantine_document(
            role_sessions=role_sessions, principals=denied, cutoff=cutoff, exempt=policy.exempt
        )
        name = quarantine_policy_name(record.status.folder)
        if not document["Statement"] or not fits(document):
            why = "it would deny no one" if not document["Statement"] else "it is too large"
            record.needs_human(f"quarantine of account {account} not proposed: {why}")
            return
        steps = [
            f"Attach the service control policy {name} to account {account} from "
            f"{policy.policy_account}: the account's own IAM cannot lift it",
            *(
                f"Deny sessions of {arn} issued before {cutoff.isoformat()}"
                for arn in role_sessions
            ),
            *(f"Deny {arn}" for arn in denied),
            *(f"Never deny {arn}" for arn in policy.exempt),
            f"The policy: {document_text(document)}",
        ]
        action = self._approvals.propose(
            ActionKind.QUARANTINE, f"Quarantine account {account} with an SCP", steps
        )
        decision = await self._approvals.decision(action)
        ledger = self._approvals.ledger
        if decision.decision is Decision.REJECTED:
            ledger.finish(action, ActionStatus.REJECTED, decision.reason)
            record.note(f"quarantine of account {account} declined by {decision.approver}")
            return
        ledger.start(action)
        request = QuarantineInput(
            account_id=policy.policy_account,
            case_id=record.status.folder,
            target_account_id=account,
            policy_name=name,
            document=document,
        )
        # Kept before the attempt: one that fails half-way (the policy made, not attached)
        # is still lifted, by name, at the end.
        quarantine = Quarantine(policy_name=name, account_id=account)
        record.status.quarantine = quarantine
        result, failure = await self._run(
            OrganizationActivities.attach_quarantine,
            request,
            "quarantine the account",
            f"Attach SCP {name} to {account}",
        )
        if result is None:
            ledger.finish(action, ActionStatus.FAILED, str(failure))
            record.needs_human(f"quarantine of account {account} not attached: {failure}")
            return
        quarantine.policy_id = result.policy_id
        quarantine.attached_at = workflow.now()
        ledger.finish(action, ActionStatus.DONE, result.detail)
        record.note(f"account {account} quarantined: SCP {name} ({result.policy_id}) attached")

    async def lift(self) -> None:
        """Once the case is done: the policy detached and deleted, with its own approval;
        until then, an open item says it is still there."""
        record = self._record
        quarantine = record.status.quarantine
        policy = record.policy.quarantine
        if quarantine is None or quarantine.lifted_at is not None or policy is None:
            return
        if not workflow.patched(QUARANTINE_PATCH):
            return
        account, name = quarantine.account_id, quarantine.policy_name
        action = self._approvals.propose(
            ActionKind.LIFT_QUARANTINE,
            f"Lift the quarantine of account {account}",
            [f"Detach the service control policy {name} from account {account}, and delete it"],
        )
        decision = await self._approvals.decision(action)
        ledger = self._approvals.ledger
        still = f"the quarantine SCP {name} is still attached to account {account}"
        if decision.decision is Decision.REJECTED:
            ledger.finish(action, ActionStatus.REJECTED, decision.reason)
            record.needs_human(f"{still}: detach it in Organizations when it may go")
            return
        ledger.start(action)
        request = QuarantineInput(
            account_id=policy.policy_account,
            case_id=record.status.folder,
            target_account_id=account,
            policy_name=name,
        )
        result, failure = await self._run(
            OrganizationActivities.lift_quarantine,
            request,
            "lift the quarantine",
            f"Detach SCP {name} from {account}",
        )
        if result is None:
            ledger.finish(action, ActionStatus.FAILED, str(failure))
            record.needs_human(f"{still}: lifting it failed: {failure}")
            return
        quarantine.lifted_at = workflow.now()
        ledger.finish(action, ActionStatus.DONE, result.detail)
        record.note(f"quarantine of account {account} lifted: SCP {name} {result.detail}")

    async def _run(
        self,
        activity: Callable[[OrganizationActivities, QuarantineInput], QuarantineResult],
        request: QuarantineInput,
        doing: str,
        summary: str,
    ) -> tuple[QuarantineResult | None, str | None]:
        """One of the quarantine's activities, in the policy account; its result, or why
        it failed for good (the case goes on either way)."""
        return await self._approvals.attempt_or_fail(
            doing,
            lambda: workflow.execute_activity_method(
                activity,
                request,
                start_to_close_timeout=timedelta(minutes=2),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=AWS_RETRY,
                summary=summary,
            ),
        )
