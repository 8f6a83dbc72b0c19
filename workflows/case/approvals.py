"""Asking people, as the workflow does it: an action proposed and waited for (with its
deadline, escalation and notifications), and a step that failed for good offered again.
The bookkeeping is the ledger's; this module adds the waiting."""

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.aws import ERROR_ACCESS_DENIED
    from config import names
    from models.case import (
        Action,
        ActionKind,
        ActionStatus,
        Approval,
        ApprovalInput,
        Decision,
        NotificationKind,
        Phase,
    )
    from workflows.case.details import approval_request
    from workflows.case.ledger import ApprovalLedger
    from workflows.case.notifications import Notifications
    from workflows.case.patches import DEADLINE_PATCH, ISOLATED_FAILURES_PATCH
    from workflows.case.record import CaseRecord

T = TypeVar("T")
# What runs once an action offered beside the case is decided.
AfterDecision = Callable[[Action, Approval], Awaitable[None]]


class CaseAbandoned(Exception):
    """A human declined to retry a failed step; the case closes with that decision."""


class Approvals:
    def __init__(
        self, record: CaseRecord, ledger: ApprovalLedger, notifications: Notifications
    ) -> None:
        self._record = record
        self.ledger = ledger
        self._notifications = notifications
        # Actions offered beside the case (failed steps' retries), with what follows them.
        self._beside: list[asyncio.Task[None]] = []

    def decide(self, input: ApprovalInput, decision: Decision) -> Action | None:
        """A person's decision sent by signal or update: refused and kept, one approval of
        two, or the decision that settles the action (None when refused)."""
        signal = names.SIGNAL_APPROVE if decision is Decision.APPROVED else names.SIGNAL_REJECT
        refusal = self.ledger.refusal(input, decision)
        if refusal is not None:
            self.refuse(signal, input.action_id, input.approver, refusal)
            return None
        action = self.ledger.decide(input, decision, signal)
        if action is not None and action.approval is None:
            # One approval of the two it needs: the details show who approved so far.
            self._record.refresh()
        return action

    def refuse(
        self, signal: str, action_id: str | None, by: str, reason: str, sent: str | None = None
    ) -> None:
        """Keep a refused decision, note or finding on the case, and say so in the log."""
        self.ledger.refuse(signal, action_id, by, reason, sent)
        workflow.logger.warning("refused %s for %s by %s: %s", signal, action_id, by, reason)

    def propose(
        self, kind: ActionKind, title: str, steps: list[str], protected: str | None = None
    ) -> Action:
        """An action waiting for approval; the case says it waits, unless it already
        waits for a human for another reason. `protected`: why it needs two people."""
        action = self.ledger.propose(kind, title, steps, protected)
        if self._record.status.phase not in (Phase.NEEDS_HUMAN, Phase.CONTAINMENT_FAILED):
            self._record.set_phase(Phase.AWAITING_APPROVAL, f"waiting for approval of {action.id}")
        else:
            self._record.refresh()
        return action

    async def decision(self, action: Action) -> Approval:
        """The action's decision, by people or, at a deadline, by the policy."""
        if workflow.patched(DEADLINE_PATCH):
            await self._await_with_deadline(action)
        else:
            await workflow.wait_condition(lambda: action.approval is not None)
        assert action.approval is not None
        self._record.refresh()
        return action.approval

    async def _await_with_deadline(self, action: Action) -> None:
        """Tell people the action waits for them; each time its deadline passes with
        nobody deciding, escalate, or, for containment the policy lets go ahead, proceed
        and record that the case did."""
        ledger = self.ledger
        if ledger.runs_without_approval(action):
            ledger.approve_by_policy(
                action, f"the case policy runs {action.kind.value} actions without approval"
            )
            return
        wait = ledger.open_deadline(action)
        self._record.refresh()
        case_id = self._record.status.case_id
        self._notifications.soon(
            NotificationKind.NEEDS_HUMAN,
            f"{action.id} waits for approval on {case_id}",
            self._request(action),
        )
        while action.approval is None:
            assert action.deadline is not None
            try:
                await workflow.wait_condition(
                    lambda: action.approval is not None,
                    timeout=max(action.deadline - workflow.now(), timedelta(seconds=1)),
                    timeout_summary=f"Approval deadline of {action.id}",
                )
            except TimeoutError:
                if ledger.may_proceed(action):
                    reason = ledger.proceed_without_decision(action, wait)
                    self._notifications.soon(
                        NotificationKind.PROCEEDED,
                        f"{action.id} proceeds without a decision on {case_id}",
                        f"{action.title}\n{reason}.\nThe case records the decision as taken "
                        f"by {names.AUTO_APPROVER}.",
                    )
                else:
                    waited = ledger.escalate(action, wait)
                    self._record.upsert_escalations(ledger.escalations())
                    self._record.refresh()
                    self._notifications.soon(
                        NotificationKind.ESCALATED,
                        f"ESCALATED: {action.id} has waited {waited} on {case_id}",
                        f"Nobody has decided in {waited} (escalation {action.escalations}).\n\n"
                        + self._request(action),
                    )

    def _request(self, action: Action) -> str:
        ledger = self.ledger
        return approval_request(
            self._record.status, action, ledger.severity(), ledger.may_proceed(action)
        )

    async def attempt(self, doing: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run a step the case cannot go on without; if it fails for good, ask a human
        whether to try again (a rejection gives the case up)."""
        try:
            return await call()
        except ActivityError as err:
            detail = failure_detail(err)
        return await self.retry(doing, detail, call)

    async def attempt_or_fail(
        self, doing: str, call: Callable[[], Awaitable[T]]
    ) -> tuple[T | None, str | None]:
        """Run a step whose failure must not hold up the rest of the case: its result, or
        why it failed for good. Cases recorded before this asked and waited instead."""
        result, error = await self.attempt_or_error(doing, call)
        return result, None if error is None else failure_detail(error)

    async def attempt_or_error(
        self, doing: str, call: Callable[[], Awaitable[T]]
    ) -> tuple[T | None, ActivityError | None]:
        """`attempt_or_fail`, with the error itself, for a caller that acts on its kind."""
        try:
            return await call(), None
        except ActivityError as err:
            error = err
        if workflow.patched(ISOLATED_FAILURES_PATCH):
            return None, error
        return await self.retry(doing, failure_detail(error), call), None

    async def retry(self, doing: str, detail: str, call: Callable[[], Awaitable[T]]) -> T:
        """A step that failed for good (`detail` says how), run again each time a human
        approves a retry; a rejection gives the case up."""
        record = self._record
        while True:
            previous = record.status.phase
            record.set_phase(Phase.NEEDS_HUMAN, f"failed to {doing}: {detail}")
            retry = self.propose(ActionKind.RETRY, f"Retry: {doing}", [f"It failed: {detail}"])
            decision = await self.decision(retry)
            if decision.decision is Decision.REJECTED:
                self.ledger.finish(retry, ActionStatus.REJECTED, decision.reason)
                record.needs_human(f"not done: {doing}: {detail}")
                raise CaseAbandoned(f"gave up after failing to {doing}: {decision.reason}")
            self.ledger.finish(retry, ActionStatus.DONE, "retrying")
            record.set_phase(previous, f"retry approved by {decision.approver}")
            try:
                return await call()
            except ActivityError as err:
                detail = failure_detail(err)

    def offer_beside(
        self, kind: ActionKind, title: str, steps: list[str], then: "AfterDecision"
    ) -> Action:
        """An action decided while the case goes on (a failed step's retry): `then` runs
        with the decision. The case closes only once every such action is decided."""
        action = self.ledger.propose(kind, title, steps)
        self._record.refresh()

        async def decide_then_act() -> None:
            await then(action, await self.decision(action))

        self._beside.append(asyncio.create_task(decide_then_act()))
        return action

    def alongside(self, work: Coroutine[Any, Any, None]) -> "asyncio.Task[None]":
        """Work the case goes on beside (evidence kept after the cut-off) whose failure
        offers a retry: the case closes, or continues as new, only once it is done and
        any retry it offered is decided."""
        task = asyncio.create_task(work)
        self._beside.append(task)
        return task

    async def offers_decided(self, before: str) -> None:
        """Wait for every action offered beside the case, saying so while it waits
        (`before` says for what: closing the case, continuing it as new)."""
        while self._beside:
            waiting = [a.id for a in self._record.status.pending_actions()]
            if waiting:
                self._record.set_phase(
                    Phase.NEEDS_HUMAN,
                    f"waiting for a decision on {', '.join(waiting)} before {before}",
                )
            running, self._beside = self._beside, []
            await asyncio.gather(*running)


def denied_call(err: ActivityError | None) -> str:
    """The AWS call an activity was denied (`iam:UpdateAccessKey`), or "" when it failed
    otherwise: the activity names its call in its error's details."""
    cause = None if err is None else err.cause
    if not isinstance(cause, ApplicationError) or cause.type != ERROR_ACCESS_DENIED:
        return ""
    details = cause.details[0] if cause.details else None
    call = details.get("call") if isinstance(details, dict) else None
    return call.split(" ")[0] if isinstance(call, str) else ""


def failure_detail(err: ActivityError) -> str:
    """What went wrong, in the activity's own words: the AWS call, the error and the
    permission it needed, when the activity said so."""
    cause = err.cause
    return str(cause.message if isinstance(cause, ApplicationError) else err)
