"""Credentials the attacker minted (playbook 2.3 and 3.5): each is contained before the
next eradication round investigates it, and watched once the rounds have contained them."""

from datetime import datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.iam import IamActivities
    from config import names
    from models.activities import AccessKeyInput
    from models.case import (
        DRY_RUN,
        DRY_RUN_DONE,
        ActionKind,
        ActionStatus,
        Decision,
        EradicationPlan,
        EradicationProgress,
        Phase,
    )
    from models.principal import CredentialKind
    from playbook.classify import NewCredential, ResourceKind
    from workflows.case.approvals import Approvals
    from workflows.case.containment import Containment
    from workflows.case.patches import MINTED_PATCH, MINTED_WATCH_PATCH
    from workflows.case.record import CaseRecord
    from workflows.case.retries import AWS_RETRY, HEARTBEAT_TIMEOUT
    from workflows.case.watch import ContainmentWatch, explain_failure


class MintedCredentials:
    def __init__(
        self,
        record: CaseRecord,
        approvals: Approvals,
        containment: Containment,
        watch: ContainmentWatch,
    ) -> None:
        self._record = record
        self._approvals = approvals
        self._containment = containment
        self._watch = watch

    def first_steps(self, plan: EradicationPlan) -> list[str]:
        """A round's first steps: the keys the attacker minted, deactivated before anything
        is removed, so a removal that fails cannot leave one working."""
        return [
            f"Deactivate {c.access_key_id} of {c.principal} first: the attacker minted it"
            for c in self._minted_keys(plan)
        ]

    async def deactivate_first(self, plan: EradicationPlan) -> None:
        """Each key the attacker minted this round deactivated, once the round is approved
        and before its removals; one that cannot be is noted and the rest go on."""
        record = self._record
        for credential in self._minted_keys(plan):
            key, user = credential.access_key_id, credential.principal
            request = record.in_account(AccessKeyInput(user_name=user, access_key_id=key))
            summary = f"Deactivate {key} of {user} before the round's removals"
            result, failure = await self._approvals.attempt_or_fail(
                f"deactivate {key}",
                lambda request=request, summary=summary: workflow.execute_activity_method(  # type: ignore[misc]
                    IamActivities.deactivate_access_key,
                    request,
                    start_to_close_timeout=timedelta(minutes=2),
                    heartbeat_timeout=HEARTBEAT_TIMEOUT,
                    retry_policy=AWS_RETRY,
                    summary=summary,
                ),
            )
            if result is None:
                record.note(f"{key} of {user} could not be deactivated first: {failure}")
                continue
            plan.deactivated.append(key)
            record.note(f"{key} of {user} deactivated before the round's removals")
        record.refresh()

    def _minted_keys(self, plan: EradicationPlan) -> list[NewCredential]:
        """The access keys the attacker minted found this round, on users Quench may act
        on, that no earlier round deactivated."""
        protected = set(self._record.policy.protected_names)
        earlier = {
            k for p in self._record.status.eradication if p is not plan for k in p.deactivated
        }
        return [
            c
            for c in plan.new_credentials
            if c.kind == "access_key"
            and c.principal not in protected
            and c.access_key_id not in earlier
        ]

    async def contain(self, plan: EradicationPlan, minted: list[NewCredential]) -> list[str]:
        """Each credential the attacker minted is contained before it is investigated: a
        key or session dies with the user or role this round removed; a federation token
        issued before the user's token cut-off is already denied; a session of a role
        that stays is revoked after approval. Anything else is listed for a human."""
        record = self._record
        # A dry run goes on as if its removals were made, to the same plan.
        removed = {
            (s.resource.kind, s.resource.name)
            for s in plan.steps
            if s.outcome in {"removed", "already_gone", DRY_RUN}
        }
        key_owners = {
            s.resource.name: s.resource.owner
            for s in plan.steps
            if s.resource.kind is ResourceKind.ACCESS_KEY
        }
        contained_user = self._contained_user()
        contained = []
        for credential in minted:
            if (
                credential.kind == "access_key"
                and (
                    ResourceKind.ACCESS_KEY,
                    credential.access_key_id,
                )
                in removed
            ):
                record.note(
                    f"{credential.access_key_id} was deleted this round; its activity is "
                    "investigated next"
                )
                contained.append(credential.access_key_id)
                continue
            if credential.kind == "access_key" and (ResourceKind.USER, credential.principal) in (
                removed
            ):
                record.note(
                    f"{credential.access_key_id} was deleted with its user "
                    f"{credential.principal}; its activity is investigated next"
                )
                contained.append(credential.access_key_id)
                continue
            if credential.access_key_id in plan.deactivated:
                record.note(
                    f"{credential.access_key_id} was deactivated before the round's removals; "
                    "its activity is investigated next"
                )
                contained.append(credential.access_key_id)
                continue
            if workflow.patched(MINTED_PATCH):
                if credential.kind == "role_session":
                    role = credential.principal.rsplit("/", 1)[-1]
                    if (ResourceKind.ROLE, role) in removed:
                        record.note(
                            f"session {credential.access_key_id} ended with role {role}, "
                            "removed this round; its activity is investigated next"
                        )
                        contained.append(credential.access_key_id)
                        continue
                    if role not in record.policy.protected_names:
                        if await self._contain_session(credential, role):
                            contained.append(credential.access_key_id)
                        continue
                    # A protected role's sessions are a human's to revoke: the open item.
                if credential.kind == "federation_token":
                    owner = key_owners.get(credential.made_by) or contained_user
                    if (ResourceKind.USER, owner) in removed:
                        record.note(
                            f"federation token {credential.access_key_id} lost every permission "
                            f"with its user {owner}, removed this round"
                        )
                        contained.append(credential.access_key_id)
                        continue
                    if (
                        owner is not None
                        and owner == contained_user
                        and self._issued_before_cutoff(credential)
                    ):
                        record.note(
                            f"federation token {credential.access_key_id} of {owner} was issued "
                            f"before the cut-off: {names.REVOKE_USER_TOKENS_POLICY_NAME} denies it"
                        )
                        contained.append(credential.access_key_id)
                        continue
            record.needs_human(
                f"contain {credential.kind} {credential.access_key_id} of "
                f"{credential.principal} (made by {credential.made_by}): nothing the case did "
                "contains it"
            )
            record.status.uncontained.append(credential.access_key_id)
        return contained

    async def watch(self, progress: EradicationProgress) -> bool:
        """The containment watch for the credentials the attacker minted, once the rounds
        have contained them (2.3). When one still works, a new round investigates it after
        approval: True when that round is to run."""
        if not workflow.patched(MINTED_WATCH_PATCH):
            return False
        keys = [k for k in progress.contained if k not in progress.watched]
        if keys and self._record.dry_run:
            # Nothing was contained: there is nothing to watch.
            self._record.would(
                "watch", [f"Watch CloudTrail for {', '.join(keys)} after their containment"]
            )
            progress.watched += keys
            return False
        if not keys:
            return False
        progress.watched += keys
        failed = await self._watch.watch(keys, since=progress.contained_from, minted=True)
        if failed is None:
            return False
        record = self._record
        ledger = self._approvals.ledger
        findings = explain_failure(failed, None)
        record.set_phase(Phase.CONTAINMENT_FAILED, findings[0])
        working = sorted({e.access_key_id for e in failed.events if not e.denied})
        minted = {
            c.access_key_id: c for plan in record.status.eradication for c in plan.new_credentials
        }
        credentials = [minted[k] for k in working if k in minted]
        action = self._approvals.propose(
            ActionKind.RECONTAIN,
            f"Contain {', '.join(working)} again: minted by the attacker, still working",
            [
                *findings,
                *(_recontain_step(c) for c in credentials),
                "Then classify what they did since the compromise in a new eradication "
                "round, remove what they made after approval, and watch again",
            ],
        )
        decision = await self._approvals.decision(action)
        if decision.decision is Decision.REJECTED:
            ledger.finish(action, ActionStatus.REJECTED, decision.reason)
            record.needs_human(
                f"minted credentials {', '.join(working)} still worked after containment "
                f"(declined by {decision.approver}: {decision.reason}): contain them by hand"
            )
            record.status.uncontained += [k for k in working if k not in record.status.uncontained]
            return False
        record.set_phase(Phase.CONTAINMENT, f"{action.id} approved by {decision.approver}")
        cutoff = ledger.start(action)
        for credential in credentials:
            await self._contain_again(credential, cutoff)
        ledger.finish(action, ActionStatus.DONE, "contained again; investigating again")
        progress.pending = working
        progress.contained_from = cutoff
        progress.watched = [k for k in progress.watched if k not in working]
        return True

    async def _contain_again(self, credential: NewCredential, cutoff: datetime) -> None:
        if credential.kind == "role_session":
            role = credential.principal.rsplit("/", 1)[-1]
            await self._containment.revoke_role_sessions(role, cutoff, record_cutoff=False)
        elif credential.kind == "access_key":
            request = self._record.in_account(
                AccessKeyInput(
                    user_name=credential.principal, access_key_id=credential.access_key_id
                )
            )
            await self._approvals.attempt(
                f"deactivate {credential.access_key_id}",
                lambda: workflow.execute_activity_method(
                    IamActivities.deactivate_access_key,
                    request,
                    start_to_close_timeout=timedelta(minutes=2),
                    heartbeat_timeout=HEARTBEAT_TIMEOUT,
                    retry_policy=AWS_RETRY,
                    summary=f"Deactivate {credential.access_key_id} of {credential.principal}",
                ),
            )
            self._record.note(f"{credential.access_key_id} of {credential.principal} deactivated")
        else:
            self._record.needs_human(
                f"contain {credential.kind} {credential.access_key_id} of "
                f"{credential.principal} by hand: it still worked after containment"
            )
            self._record.status.uncontained.append(credential.access_key_id)

    async def _contain_session(self, credential: NewCredential, role: str) -> bool:
        record = self._record
        ledger = self._approvals.ledger
        action = self._approvals.propose(
            ActionKind.CONTAIN_ROLE_SESSION,
            f"Contain {credential.access_key_id}, a session of {role} the attacker assumed",
            self._containment.with_logging_steps(
                [
                    f"Deny all sessions of role {role} issued before the approval (inline "
                    f"policy {names.REVOKE_SESSIONS_POLICY_NAME}); its legitimate users must "
                    "assume it again",
                    f"Then investigate what {credential.access_key_id} did, in the next round",
                ]
            ),
        )
        decision = await self._approvals.decision(action)
        if decision.decision is Decision.REJECTED:
            ledger.finish(action, ActionStatus.REJECTED, decision.reason)
            record.status.open_items.append(
                f"contain role_session {credential.access_key_id} of {role} (declined by "
                f"{decision.approver}: {decision.reason})"
            )
            record.status.uncontained.append(credential.access_key_id)
            return False
        record.set_phase(Phase.ERADICATION, f"{action.id} approved by {decision.approver}")
        if record.dry_run:
            record.would(action.id, action.steps[:-1])
            ledger.finish(action, ActionStatus.DONE, DRY_RUN_DONE)
            return True
        await self._containment.revoke_role_sessions(
            role, ledger.start(action), record_cutoff=False
        )
        ledger.finish(action, ActionStatus.DONE, f"sessions of {role} revoked")
        return True

    def _contained_user(self) -> str | None:
        """The IAM user whose older tokens the containment denied, if it was a user key."""
        credential = self._record.status.credential
        if credential is None or credential.kind is not CredentialKind.IAM_USER_KEY:
            return None
        return credential.principal.user_name

    def _issued_before_cutoff(self, credential: NewCredential) -> bool:
        cutoff = self._record.status.containment_cutoff
        if cutoff is None or not credential.event_time:
            return False
        issued = datetime.fromisoformat(credential.event_time.replace("Z", "+00:00"))
        return issued < cutoff


def _recontain_step(credential: NewCredential) -> str:
    if credential.kind == "role_session":
        role = credential.principal.rsplit("/", 1)[-1]
        return f"Revoke the sessions of role {role} again, with a new cut-off"
    if credential.kind == "access_key":
        return f"Deactivate {credential.access_key_id} of user {credential.principal}"
    return f"Contain {credential.kind} {credential.access_key_id} by hand (listed as open)"
