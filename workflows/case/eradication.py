"""Eradication (playbook 3): in rounds, what the compromised credentials did since the
likely compromise, the plan to remove what they made (approved by a human), and every
credential they minted contained and investigated in the next round, until a round finds
nothing new (3.5)."""

from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from temporalio import workflow

from playbook.words import counted

with workflow.unsafe.imports_passed_through():
    from activities.cloudtrail import CloudTrailActivities
    from activities.eradication import EradicationActivities
    from activities.iam import IamActivities
    from activities.recovery import RecoveryActivities
    from models.activities import (
        CaptureLaunchedInput,
        CaptureRoleInput,
        CaptureUserInput,
        ClassifyActivityInput,
        FindPriorStateInput,
        RemoveResourceInput,
    )
    from models.case import (
        DRY_RUN,
        DRY_RUN_DONE,
        Action,
        ActionKind,
        ActionStatus,
        Approval,
        CaseStatus,
        Decision,
        EradicationPlan,
        EradicationProgress,
        Phase,
    )
    from models.principal import Credential
    from playbook.classify import POLICY_PARTS, REPLACED_POLICY_CHANGE, AttackerChange, ResourceKind
    from playbook.plan import RemovalStep, removal_plan
    from playbook.report import in_words
    from workflows.case.approvals import Approvals
    from workflows.case.minted import MintedCredentials
    from workflows.case.patches import (
        ERADICATE_PATCH,
        LAUNCHED_EVIDENCE_PATCH,
        MINTED_FIRST_PATCH,
        PERMISSIONS_PATCH,
        ROUNDS_PATCH,
    )
    from workflows.case.record import CaseRecord
    from workflows.case.retries import AWS_RETRY, HEARTBEAT_TIMEOUT


# A resource of the plan as the plan names it: kind, name, owner.
ResourceKey = tuple[str, str, str | None]


class Eradication:
    def __init__(
        self,
        record: CaseRecord,
        approvals: Approvals,
        minted: MintedCredentials,
        continue_as_new: Callable[[EradicationProgress], Awaitable[None]],
    ) -> None:
        self._record = record
        self._approvals = approvals
        self._minted = minted
        # Called between rounds when the run's history should start afresh; never returns.
        self._continue_as_new = continue_as_new

    def begin(self, credential: Credential, outcome: str) -> EradicationProgress:
        """The rounds' starting point: the contained credential, from the likely
        compromise; the case closes with `outcome` once they are done."""
        status = self._record.status
        first_seen = min(f.first_seen for f in status.findings)
        margin = timedelta(seconds=self._record.policy.compromise_margin_seconds)
        return EradicationProgress(
            compromise_time=first_seen - margin,
            pending=[credential.access_key_id],
            investigated=[credential.access_key_id],
            rounds_done=0,
            outcome=outcome,
        )

    async def run(self, progress: EradicationProgress) -> None:
        """Rounds until one finds nothing new, and the watch of what they contained;
        continues as new every few rounds."""
        rounds_this_run = 0
        while True:
            capped = await self._rounds(progress, rounds_this_run)
            if capped or not await self._minted.watch(progress):
                return
            rounds_this_run = 0

    async def _rounds(self, progress: EradicationProgress, rounds_this_run: int) -> bool:
        """Rounds until one finds nothing new; True when the cap stopped them."""
        record = self._record
        policy = record.policy
        while progress.pending and not record.status.false_positive:
            if rounds_this_run >= policy.rounds_per_run or (
                rounds_this_run and workflow.info().is_continue_as_new_suggested()
            ):
                await self._continue_as_new(progress)
            round_number = progress.rounds_done + 1
            plan = await self._round(round_number, progress.pending, progress.compromise_time)
            progress.rounds_done = round_number
            rounds_this_run += 1
            if not workflow.patched(ROUNDS_PATCH):
                break
            fresh = [
                c for c in plan.new_credentials if c.access_key_id not in progress.investigated
            ]
            progress.investigated += [c.access_key_id for c in fresh]
            contained = await self._minted.contain(plan, fresh)
            if contained:
                progress.contained += contained
                progress.contained_from = progress.contained_from or workflow.now()
            progress.pending = [c.access_key_id for c in fresh]
            if progress.pending and round_number >= policy.max_eradication_rounds:
                record.status.open_items.append(
                    f"eradication stopped after {counted(round_number, 'round')} (the cap): "
                    f"investigate {', '.join(progress.pending)} by hand"
                )
                record.note(record.status.open_items[-1])
                return True
        if record.status.false_positive:
            record.note(f"eradication stopped after round {progress.rounds_done}: a false positive")
            return True
        record.note(f"eradication round {progress.rounds_done} found no new credential: done")
        return False

    async def _round(
        self, round_number: int, access_key_ids: list[str], compromise_time: datetime
    ) -> EradicationPlan:
        record = self._record
        keys = ", ".join(access_key_ids)
        record.set_phase(
            Phase.ERADICATION,
            f"round {round_number}: classifying what {keys} did since "
            f"{compromise_time.isoformat()}",
        )
        request = ClassifyActivityInput(
            case_id=record.status.folder,
            account_id=record.status.account_id,
            access_key_ids=access_key_ids,
            start=compromise_time,
            end=workflow.now(),
        )
        classified = await self._approvals.attempt(
            "classify the credentials' CloudTrail activity",
            lambda: workflow.execute_activity_method(
                CloudTrailActivities.classify_credential_activity,
                request,
                task_queue=record.policy.scan_task_queue,
                start_to_close_timeout=timedelta(minutes=30),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=AWS_RETRY,
                summary=f"Round {round_number}: everything {keys} did since the compromise",
            ),
        )
        record.record_evidence(classified.evidence)
        report = classified.report
        plan = EradicationPlan(
            round=round_number,
            compromise_time=compromise_time,
            access_key_ids=access_key_ids,
            impact=report.counts,
            impact_examples=report.examples,
            failed_calls=report.failed_calls,
            steps=removal_plan(report.resources, frozenset(record.policy.protected_names)),
            changes=report.changes,
            new_credentials=report.new_credentials,
            evidence_key=classified.evidence.key,
            failures=report.failures,
            data_reads=report.data_reads,
            others_changes=report.others_changes,
            others_read=report.others_read,
        )
        record.status.eradication.append(plan)
        record.note(
            f"round {round_number}: {sum(report.counts.values())} calls since the compromise: "
            + ", ".join(f"{g.value} {n}" for g, n in report.counts.items() if n)
            + f"; {counted(len(plan.steps), 'attacker resource')} to remove, "
            f"{counted(len(plan.changes), 'change')} to restore, "
            f"{counted(len(plan.new_credentials), 'new credential')}"
        )
        record.refresh()
        if plan.steps and workflow.patched(PERMISSIONS_PATCH):
            await self._sort_out_permissions(plan)
        if plan.steps and workflow.patched(ERADICATE_PATCH):
            await self._remove(plan)
        return plan

    async def _sort_out_permissions(self, plan: EradicationPlan) -> None:
        """A policy the attacker put on or attached to a user or role it did not make may
        have been there before: if so, a replaced inline policy is restored in recovery
        and a policy already attached stays; removing either would break what it serves.
        Where CloudTrail cannot say, the attacker's version is removed (and kept as
        evidence) and a human is asked to check."""
        record = self._record
        made = attacker_made(record.status)
        candidates = [
            s.resource
            for s in plan.steps
            if s.resource.kind in POLICY_PARTS
            and not s.skipped_reason
            and (owner_kind(s.resource.kind), s.resource.owner) not in made
        ]
        if not candidates:
            return
        request = FindPriorStateInput(
            case_id=record.status.folder,
            account_id=record.status.account_id,
            resources=candidates,
            attacker_keys=attacker_keys(record.status),
            lookback_seconds=record.policy.restore_lookback_seconds,
        )
        found = await self._approvals.attempt(
            "find what the attacker's policies replaced",
            lambda: workflow.execute_activity_method(
                RecoveryActivities.find_prior_state,
                request,
                start_to_close_timeout=timedelta(minutes=30),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=AWS_RETRY,
                summary=f"Round {plan.round}: were the attacker's policies there before?",
            ),
        )
        states = {state.resource.key: state for state in found.states}
        for step in plan.steps:
            state = states.get(step.resource.key)
            if state is None or state.state == "absent":
                continue
            resource = step.resource
            if state.state == "unknown":
                record.needs_human(
                    f"{step.describe()}: {state.source}, so whether it replaced an earlier "
                    f"policy of {resource.owner} is unknown; it is removed (the attacker's "
                    "version is kept as evidence): check what "
                    f"{resource.owner} needs against your infrastructure code"
                )
                continue
            change_kind = REPLACED_POLICY_CHANGE.get(resource.kind)
            if change_kind is None:
                step.skipped_reason = f"attached before the attacker's call ({state.source})"
            else:
                step.skipped_reason = (
                    f"replaced an earlier version ({state.source}): restored in recovery"
                )
                plan.changes.append(
                    AttackerChange(
                        kind=change_kind,
                        target=resource.owner or "",
                        detail=resource.name,
                        made_by=resource.made_by,
                        event_id=resource.event_id,
                        event_time=resource.event_time,
                    )
                )
            step.outcome, step.detail = "kept", step.skipped_reason
            record.note(f"{step.describe()}")
        record.refresh()

    async def _remove(self, plan: EradicationPlan) -> None:
        """After approval, every step of the plan in order, each one recorded."""
        record = self._record
        ledger = self._approvals.ledger
        to_remove = [step for step in plan.steps if step.outcome != "kept"]
        if not to_remove:
            return
        minted_first = workflow.patched(MINTED_FIRST_PATCH)
        action = self._approvals.propose(
            ActionKind.ERADICATE,
            f"Round {plan.round}: remove {counted(len(to_remove), 'resource')} the attacker made",
            (self._minted.first_steps(plan) if minted_first else [])
            + [step.describe() for step in plan.steps],
        )
        decision = await self._approvals.decision(action)
        if decision.decision is Decision.REJECTED:
            ledger.finish(action, ActionStatus.REJECTED, decision.reason)
            record.note(f"eradication declined by {decision.approver}: the plan stays for humans")
            for step in to_remove:
                record.status.open_items.append(
                    f"{step.describe()}: removal declined by {decision.approver}; it is still "
                    "in AWS"
                )
            return
        record.set_phase(Phase.ERADICATION, f"removal approved by {decision.approver}")
        if record.dry_run:
            record.would(action.id, [s for s in action.steps if s not in plan_skipped(plan)])
            for step in to_remove:
                step.outcome = "skipped" if step.skipped_reason else DRY_RUN
            ledger.finish(action, ActionStatus.DONE, DRY_RUN_DONE)
            return
        ledger.start(action)
        if minted_first:
            await self._minted.deactivate_first(plan)
        uncaptured = await self._capture_before_removal(
            [s for s in plan.steps if not s.skipped_reason]
        )
        failed = await self._carry_out(to_remove, uncaptured)
        outcomes = Counter(step.outcome for step in plan.steps)
        ledger.finish(
            action,
            ActionStatus.DONE,
            ", ".join(f"{n} {in_words(o)}" for o, n in sorted(outcomes.items())),
        )
        if failed:
            self._offer_retry(plan.round, failed)

    async def _carry_out(
        self, steps: list[RemovalStep], uncaptured: dict[ResourceKey, str]
    ) -> list[RemovalStep]:
        """Each removal in order, each recorded; one that fails for good, or whose
        evidence could not be kept first, is an open item and the rest go on. Returns the
        steps that failed."""
        record = self._record
        failed = []
        for step in steps:
            if step.resource.key in uncaptured:
                step.outcome = "failed"
                step.detail = (
                    f"not removed: its evidence could not be kept first: "
                    f"{uncaptured[step.resource.key]}"
                )
                record.needs_human(_undone(step))
                failed.append(step)
                continue
            request = RemoveResourceInput(
                case_id=record.status.folder,
                account_id=record.status.account_id,
                operation=step.operation,
                name=step.resource.name,
                owner=step.resource.owner,
                protected_names=record.policy.protected_names,
            )
            summary = f"Eradicate: {step.describe()}"
            result, failure = await self._approvals.attempt_or_fail(
                step.describe(),
                lambda request=request, summary=summary: workflow.execute_activity_method(  # type: ignore[misc]
                    EradicationActivities.remove_resource,
                    request,
                    start_to_close_timeout=timedelta(minutes=5),
                    heartbeat_timeout=HEARTBEAT_TIMEOUT,
                    retry_policy=AWS_RETRY,
                    summary=summary,
                ),
            )
            if result is None:
                step.outcome, step.detail = "failed", failure
                record.needs_human(_undone(step))
                failed.append(step)
                record.refresh()
                continue
            step.outcome, step.detail = result.outcome, result.detail
            if result.evidence is not None:
                record.record_evidence(result.evidence)
            record.note(f"{step.describe()}: {result.outcome} ({result.detail})")
            record.refresh()
        return failed

    def _offer_retry(self, round_number: int, failed: list[RemovalStep]) -> None:
        """The failed removals offered again, decided while the case goes on."""

        async def then(action: Action, decision: Approval) -> None:
            ledger = self._approvals.ledger
            if decision.decision is Decision.REJECTED:
                ledger.finish(action, ActionStatus.REJECTED, decision.reason)
                return
            ledger.start(action)
            open_items = self._record.status.open_items
            for step in failed:
                if _undone(step) in open_items:
                    open_items.remove(_undone(step))
                # Said in the report: this removal was done, if at all, only on its retry.
                step.retried_in, step.failed_before = action.id, _failure(step)
            still = await self._carry_out(failed, await self._capture_before_removal(failed))
            ledger.finish(
                action,
                ActionStatus.FAILED if still else ActionStatus.DONE,
                f"{len(failed) - len(still)} removed, {len(still)} failed again",
            )
            if still:
                self._offer_retry(round_number, still)

        self._approvals.offer_beside(
            ActionKind.RETRY,
            f"Round {round_number}: retry {len(failed)} failed "
            + ("removal" if len(failed) == 1 else "removals"),
            [f"{step.describe()}: it failed: {_failure(step)}" for step in failed],
            then,
        )

    async def _capture_before_removal(self, steps: list[RemovalStep]) -> dict[ResourceKey, str]:
        """Evidence of every user, role, instance and function the plan deletes, whole,
        before the first removal takes any part of it away. Returns, by resource, why a
        capture failed: such a resource is not removed."""
        record = self._record
        failures: dict[ResourceKey, str] = {}
        for step in steps:
            name = step.resource.name
            if step.resource.kind is ResourceKind.USER:
                user, failure = await self._approvals.attempt_or_fail(
                    f"capture user {name} before its removal",
                    lambda name=name: workflow.execute_activity_method(  # type: ignore[misc]
                        IamActivities.capture_user_state,
                        record.in_account(CaptureUserInput(user_name=name)),
                        start_to_close_timeout=timedelta(minutes=5),
                        heartbeat_timeout=HEARTBEAT_TIMEOUT,
                        retry_policy=AWS_RETRY,
                        summary=f"Capture user {name} before its removal",
                    ),
                )
                if user is not None:
                    record.record_evidence(user.evidence)
            elif step.resource.kind is ResourceKind.ROLE:
                role, failure = await self._approvals.attempt_or_fail(
                    f"capture role {name} before its removal",
                    lambda name=name: workflow.execute_activity_method(  # type: ignore[misc]
                        IamActivities.capture_role_state,
                        record.in_account(CaptureRoleInput(role_name=name)),
                        start_to_close_timeout=timedelta(minutes=5),
                        heartbeat_timeout=HEARTBEAT_TIMEOUT,
                        retry_policy=AWS_RETRY,
                        summary=f"Capture role {name} before its removal",
                    ),
                )
                if role is not None:
                    record.record_evidence(role)
            elif step.resource.kind in _LAUNCHED and workflow.patched(LAUNCHED_EVIDENCE_PATCH):
                kind = _LAUNCHED[step.resource.kind]
                launched, failure = await self._approvals.attempt_or_fail(
                    f"capture {kind} {name} before its removal",
                    lambda kind=kind, name=name: workflow.execute_activity_method(  # type: ignore[misc]
                        EradicationActivities.capture_launched_resource,
                        record.in_account(CaptureLaunchedInput(kind=kind, name=name)),
                        start_to_close_timeout=timedelta(minutes=5),
                        heartbeat_timeout=HEARTBEAT_TIMEOUT,
                        retry_policy=AWS_RETRY,
                        summary=f"Capture {kind} {name} before its removal",
                    ),
                )
                if launched is not None and launched.evidence is not None:
                    record.record_evidence(launched.evidence)
                if launched is not None and launched.missing:
                    record.needs_human(
                        f"the evidence of {kind} {name} is partial: {launched.missing}"
                    )
            else:
                continue
            if failure is not None:
                failures[step.resource.key] = failure
        return failures


# What a launched resource is called in its capture: the instance or function to keep.
_LAUNCHED = {ResourceKind.INSTANCE: "instance", ResourceKind.FUNCTION: "function"}


def plan_skipped(plan: EradicationPlan) -> list[str]:
    """The plan's steps that would not be carried out: protected, or kept."""
    return [s.describe() for s in plan.steps if s.skipped_reason]


def _failure(step: RemovalStep) -> str:
    """Why a removal failed, without the removal's own name again: the activity's message
    already starts with it."""
    detail = step.detail or "no detail"
    return detail.removeprefix(f"{step.describe()}: ")


def _undone(step: RemovalStep) -> str:
    """The open item of a removal that failed for good."""
    return f"{step.describe()} failed: {_failure(step)}; it is still in AWS"


def attacker_made(status: CaseStatus) -> set[tuple[ResourceKind, str | None]]:
    """The users, roles and managed policies the attacker's credentials made."""
    return {
        (s.resource.kind, s.resource.name)
        for plan in status.eradication
        for s in plan.steps
        if s.resource.kind in {ResourceKind.USER, ResourceKind.ROLE, ResourceKind.MANAGED_POLICY}
    }


def attacker_keys(status: CaseStatus) -> list[str]:
    """Every credential of the attacker's the case knows of."""
    keys = {k for plan in status.eradication for k in plan.access_key_ids}
    keys |= {c.access_key_id for plan in status.eradication for c in plan.new_credentials}
    return sorted(keys)


def owner_kind(kind: ResourceKind) -> ResourceKind:
    """The kind of principal a policy of this kind belongs to."""
    user_kinds = {ResourceKind.USER_INLINE_POLICY, ResourceKind.USER_POLICY_ATTACHMENT}
    return ResourceKind.USER if kind in user_kinds else ResourceKind.ROLE
