"""Containment of a long-term user key (playbook 2.1): the key deactivated (never
deleted: it is evidence), the user's older tokens denied, console access removed after its
own approval; a deactivation that is denied makes the user denied everything meanwhile,
and every step that fails is offered for a retry beside the case."""

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.iam import IamActivities
    from config import names
    from models.activities import (
        AccessKeyInput,
        AccessKeyResult,
        CaptureUserResult,
        DenyUserTokensInput,
        RevokeRoleSessionsResult,
        UserInput,
    )
    from models.case import (
        DRY_RUN_CONTAINED,
        Action,
        ActionKind,
        ActionStatus,
        Approval,
        Decision,
        Phase,
    )
    from models.principal import Credential
    from workflows.case.approvals import Approvals, denied_call, failure_detail
    from workflows.case.patches import (
        CONTAINMENT_FIRST_PATCH,
        CUT_OFF_FIRST_PATCH,
        USER_DENIED_ALL_PATCH,
    )
    from workflows.case.record import CaseRecord
    from workflows.case.release import record_change
    from workflows.case.retries import AWS_RETRY, HEARTBEAT_TIMEOUT

if TYPE_CHECKING:
    from workflows.case.containment import Containment


class UserKeyContainment:
    def __init__(
        self, record: CaseRecord, approvals: Approvals, containment: "Containment"
    ) -> None:
        self._record = record
        self._approvals = approvals
        self._ledger = approvals.ledger
        # The containment whose approval, steps and dry run this one shares.
        self._containment = containment
        # Whether a stolen key's deactivation is offered for a retry beside the case
        # already: containing it again does not offer another.
        self._deactivation_offered = False

    async def contain(self, credential: Credential, user: CaptureUserResult | None) -> str | None:
        """Playbook 2.1: deactivate the key (never delete it: it is evidence), deny the
        user's tokens issued before the approval, then, approved separately, remove
        console access."""
        user_name = credential.principal.user_name or ""
        steps = [
            f"Deactivate access key {credential.access_key_id} of {user_name} (kept as "
            "evidence, not deleted)",
            f"Deny {user_name}'s session tokens issued before the approval (inline "
            f"policy {names.REVOKE_USER_TOKENS_POLICY_NAME} on aws:TokenIssueTime): "
            "sessions from GetSessionToken or GetFederationToken outlive the key",
            f"If deactivating the key is denied (iam:UpdateAccessKey), deny {user_name} "
            f"everything instead (inline policy {names.DENY_ALL_POLICY_NAME}) until it "
            "is deactivated, unless the user is protected",
        ]
        await self._containment.ready_to_propose(ActionKind.CONTAIN_USER_KEY)
        action = self._containment.propose(
            ActionKind.CONTAIN_USER_KEY,
            f"Contain {credential.access_key_id}: deactivate it, deny {user_name}'s older tokens",
            self._containment.first_steps(steps),
        )
        if not await self._containment.approved(action):
            return None
        dry = self._containment.not_made(action, self._containment.with_logging_steps(steps[:2]))
        if not dry:
            await self.apply(action, credential)
        if user is None or user.has_login_profile:
            await self.remove_console_access(user_name, known=user is not None)
        return DRY_RUN_CONTAINED if dry else "contained"

    async def remove_console_access(self, user_name: str, known: bool = True) -> None:
        step = f"Delete the login profile of {user_name}: its password may be known too"
        if not known:
            step = (
                f"Delete the login profile of {user_name}, if it has one (whether it does is "
                "unknown: the user's capture failed): its password may be known too"
            )
        console = self._containment.propose(
            ActionKind.REMOVE_CONSOLE_ACCESS, f"Remove console access of {user_name}", [step]
        )
        decision = await self._approvals.decision(console)
        if decision.decision is Decision.REJECTED:
            self._ledger.finish(console, ActionStatus.REJECTED, decision.reason)
        elif not self._containment.not_made(console, [step]):
            self._ledger.start(console)
            removed = await self._approvals.attempt(
                "remove console access",
                lambda: workflow.execute_activity_method(
                    IamActivities.remove_login_profile,
                    self._record.in_account(UserInput(user_name=user_name)),
                    start_to_close_timeout=timedelta(minutes=2),
                    heartbeat_timeout=HEARTBEAT_TIMEOUT,
                    retry_policy=AWS_RETRY,
                    summary=f"Delete the login profile of {user_name}",
                ),
            )
            self._ledger.finish(console, ActionStatus.DONE, removed.detail)
        if not self._record.dry_run:
            self._record.set_phase(Phase.CONTAINED, "console access decided")

    async def apply(self, action: Action, credential: Credential) -> None:
        user_name = credential.principal.user_name or ""
        key_id = credential.access_key_id
        cutoff = self._ledger.start(action)

        deactivate = self._deactivate(user_name, key_id)
        failure = None
        error = None
        still_active = ""
        # Cut-off first: the older tokens are denied at the same time as the key is
        # deactivated, neither waiting on the other.
        together = workflow.patched(CUT_OFF_FIRST_PATCH)
        tokens = (
            asyncio.create_task(
                self._approvals.attempt_or_fail(
                    "deny the user's older tokens",
                    self._deny_tokens(user_name, cutoff, recorded=False),
                )
            )
            if together
            else None
        )
        if together or workflow.patched(CONTAINMENT_FIRST_PATCH):
            # The older tokens are denied even while the key's deactivation waits on a
            # human's retry: one denied call must not leave both working.
            key, error = await self._approvals.attempt_or_error(
                "deactivate the access key", deactivate
            )
            if key is None and error is not None:
                failure = failure_detail(error)
                # Said at once: if the case stops before the retry, it must still say so.
                still_active = f"{key_id} is still active: deactivating it failed: {failure}"
                self._record.needs_human(still_active)
        else:
            key = await self._approvals.attempt("deactivate the access key", deactivate)

        isolated = together or workflow.patched(USER_DENIED_ALL_PATCH)
        tokens_open = ""
        if tokens is not None or isolated:
            # A denied tokens' deny holds up nothing either: it is an open item at once.
            if tokens is not None:
                denied, tokens_failure = await tokens
                if denied is not None:
                    self._record_tokens_denied(user_name, denied)
            else:
                denied, tokens_failure = await self._approvals.attempt_or_fail(
                    "deny the user's older tokens", self._deny_tokens(user_name, cutoff)
                )
            if denied is None:
                tokens_open = self._tokens_not_denied(
                    user_name, key_id, cutoff, tokens_failure or "it failed"
                )
        else:
            denied = await self._approvals.attempt(
                "deny the user's older tokens", self._deny_tokens(user_name, cutoff)
            )
        self._containment.after_cut_off()
        if key is not None:
            # Cut off once the key is inactive (a token deny alone leaves the key working).
            self._containment.cut_off_now()
        self._record.status.containment_cutoff = denied.cutoff_in_effect if denied else cutoff
        if denied is not None:
            self._containment.written_unread(f"user {user_name}", denied)
        if key is None:
            self._record.note(
                f"{key_id} is still active"
                + ("" if denied is None else f"; {user_name}'s older tokens are denied")
            )
            if isolated and await self._deny_everything(
                action, credential, (still_active, failure or "it failed", error)
            ):
                if tokens_open:
                    # Denied everything, the older tokens are too, until that is lifted.
                    _settle(self._record.status.uncontained, f"{user_name}'s older tokens")
                    self._offer_tokens_deny(user_name, tokens_open)
                return
            key = await self._approvals.retry(
                "deactivate the access key", failure or "it failed", deactivate
            )
            if still_active in self._record.status.open_items:
                self._record.status.open_items.remove(still_active)
        if denied is None:
            self._record.note(f"{key_id} is {key.status}")
            self._offer_tokens_deny(user_name, tokens_open)
            self._ledger.finish(
                action, ActionStatus.DONE, "key deactivated; its older tokens are NOT denied"
            )
            self._record.set_phase(Phase.CONTAINED, "key deactivated")
            return
        self._record.note(
            f"{key_id} is {key.status}"
            + ("" if key.changed else " (it already was)")
            + f"; {user_name}'s tokens issued before {denied.cutoff_in_effect.isoformat()} "
            "are denied"
        )
        self._ledger.finish(action, ActionStatus.DONE, "key deactivated, older tokens denied")
        self._record.set_phase(Phase.CONTAINED, "key deactivated")

    def _deactivate(self, user_name: str, key_id: str) -> Callable[[], Awaitable[AccessKeyResult]]:
        async def deactivate() -> AccessKeyResult:
            key = await workflow.execute_activity_method(
                IamActivities.deactivate_access_key,
                self._record.in_account(AccessKeyInput(user_name=user_name, access_key_id=key_id)),
                start_to_close_timeout=timedelta(minutes=2),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=AWS_RETRY,
                summary=f"Deactivate {key_id}",
            )
            if key.changed:
                record_change(
                    self._record, "key_deactivated", user_name=user_name, access_key_id=key_id
                )
            return key

        return deactivate

    def _deny_tokens(
        self, user_name: str, cutoff: datetime, recorded: bool = True
    ) -> Callable[[], Awaitable[RevokeRoleSessionsResult]]:
        """The deny of the user's older tokens; with `recorded` off, its change is left for
        the caller to record (in the order containment's changes are listed)."""

        async def deny() -> RevokeRoleSessionsResult:
            denied = await workflow.execute_activity_method(
                IamActivities.deny_user_tokens_before,
                self._record.in_account(DenyUserTokensInput(user_name=user_name, cutoff=cutoff)),
                start_to_close_timeout=timedelta(minutes=2),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=AWS_RETRY,
                summary=f"Deny {user_name}'s tokens issued before {cutoff.isoformat()}",
            )
            if recorded:
                self._record_tokens_denied(user_name, denied)
            return denied

        return deny

    def _record_tokens_denied(self, user_name: str, denied: RevokeRoleSessionsResult) -> None:
        if denied.changed:
            record_change(
                self._record,
                "policy_put",
                cutoff=denied.cutoff_in_effect,
                previous=denied.replaced,
                user_name=user_name,
                policy_name=denied.policy_name,
            )

    def _tokens_not_denied(self, user_name: str, key_id: str, cutoff: datetime, why: str) -> str:
        """The open item, and the case partly contained, while the user's older tokens
        are not denied: sessions made with the key before its deactivation still work."""
        item = (
            f"{user_name}'s tokens issued before {cutoff.isoformat()} are not denied: {why}: "
            f"sessions made with {key_id} before its deactivation may still work"
        )
        self._record.needs_human(item)
        self._record.status.uncontained.append(f"{user_name}'s older tokens")
        return item

    def _offer_tokens_deny(self, user_name: str, tokens_open: str) -> None:
        """The older tokens' deny, offered for a retry beside the case (and again each time
        it fails), with the retry's approval as the cut-off; `tokens_open` is the open item
        it settles."""
        record = self._record

        async def then(retry: Action, decision: Approval) -> None:
            if decision.decision is Decision.REJECTED:
                self._ledger.finish(retry, ActionStatus.REJECTED, decision.reason)
                return
            cutoff = self._ledger.start(retry)
            denied, failure = await self._approvals.attempt_or_fail(
                "deny the user's older tokens", self._deny_tokens(user_name, cutoff)
            )
            if denied is None:
                self._ledger.finish(retry, ActionStatus.FAILED, f"failed again: {failure}")
                self._offer_tokens_deny(user_name, tokens_open)
                return
            self._ledger.finish(retry, ActionStatus.DONE, "older tokens denied")
            _settle(record.status.open_items, tokens_open)
            _settle(record.status.uncontained, f"{user_name}'s older tokens")
            self._containment.written_unread(f"user {user_name}", denied)
            record.note(
                f"{user_name}'s tokens issued before {denied.cutoff_in_effect.isoformat()} "
                "are denied"
            )

        self._approvals.offer_beside(
            ActionKind.RETRY, f"Retry: deny {user_name}'s older tokens", [tokens_open], then
        )

    async def _deny_everything(
        self, action: Action, credential: Credential, failed: tuple[str, str, ActivityError | None]
    ) -> bool:
        """A key whose deactivation was denied is made useless instead: its user is denied
        everything, the case goes on, and the deactivation is offered for a retry beside
        it. Only for a denied UpdateAccessKey (the key was found to be the user's), and
        never for a protected user. False when it does not apply or fails too (the case
        then waits on the deactivation's retry). `failed`: the open item saying the key is
        still active, why, and the error."""
        still_active, why, error = failed
        user_name = credential.principal.user_name or ""
        key_id = credential.access_key_id
        record = self._record
        if denied_call(error) != "iam:UpdateAccessKey":
            return False
        if user_name in record.policy.protected_names:
            record.note(f"{user_name} is protected: it is not denied everything")
            return False
        if self._deactivation_offered:
            # Contained once more (the watch saw the key work): its retry is offered already.
            _settle(record.status.open_items, still_active)
            self._ledger.finish(
                action, ActionStatus.DONE, f"{key_id} is still active; its retry is pending"
            )
            record.set_phase(Phase.CONTAINED, f"{user_name} denied everything")
            return True
        done, failure = await self._approvals.attempt_or_fail(
            f"deny {user_name} everything",
            lambda: workflow.execute_activity_method(
                IamActivities.deny_user_everything,
                self._record.in_account(UserInput(user_name=user_name)),
                start_to_close_timeout=timedelta(minutes=2),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=AWS_RETRY,
                summary=f"Deny {user_name} everything ({names.DENY_ALL_POLICY_NAME})",
            ),
        )
        if done is None:
            record.note(f"denying {user_name} everything failed too: {failure}")
            return False
        if done.changed:
            record_change(
                self._record,
                "policy_put",
                user_name=user_name,
                policy_name=names.DENY_ALL_POLICY_NAME,
            )
        _settle(record.status.open_items, still_active)
        meanwhile = (
            f"{still_active}; {user_name} is denied everything by "
            f"{names.DENY_ALL_POLICY_NAME} meanwhile (the key can still get session tokens, "
            "which are denied too): deactivate the key"
        )
        record.needs_human(meanwhile)
        self._deactivation_offered = True
        self._offer_deactivation(credential, why, meanwhile)
        self._ledger.finish(
            action,
            ActionStatus.DONE,
            f"{user_name} denied everything ({names.DENY_ALL_POLICY_NAME}); {key_id} is still "
            "active",
        )
        record.set_phase(Phase.CONTAINED, f"{user_name} denied everything")
        return True

    def _offer_deactivation(self, credential: Credential, failed: str, meanwhile: str) -> None:
        """The key's deactivation, offered for a retry beside the case (and again each time
        it fails); `meanwhile` is the open item it settles. Once the key is inactive, the
        user's tokens issued before then are denied, and only then is a human told that
        the deny-everything policy may go."""
        user_name = credential.principal.user_name or ""
        key_id = credential.access_key_id
        record = self._record

        deactivate = self._deactivate(user_name, key_id)

        async def then(retry: Action, decision: Approval) -> None:
            if decision.decision is Decision.REJECTED:
                self._ledger.finish(retry, ActionStatus.REJECTED, decision.reason)
                return
            cutoff = self._ledger.start(retry)
            key, failure = await self._approvals.attempt_or_fail(
                "deactivate the access key", deactivate
            )
            if key is None:
                self._ledger.finish(retry, ActionStatus.FAILED, f"failed again: {failure}")
                self._offer_deactivation(credential, failure or "it failed", meanwhile)
                return
            _settle(record.status.open_items, meanwhile)
            # Tokens the key got while it was active are denied before anyone lifts the
            # deny-everything policy.
            denied, why = await self._approvals.attempt_or_fail(
                "deny the user's older tokens", self._deny_tokens(user_name, cutoff)
            )
            if denied is None:
                self._ledger.finish(
                    retry, ActionStatus.DONE, f"{key_id} is {key.status}; tokens not denied"
                )
                record.needs_human(
                    f"{key_id} is {key.status} now, but {user_name}'s tokens issued before "
                    f"{cutoff.isoformat()} are not denied ({why}): keep "
                    f"{names.DENY_ALL_POLICY_NAME} on {user_name} until they are"
                )
                return
            self._ledger.finish(
                retry, ActionStatus.DONE, f"{key_id} is {key.status}, older tokens denied"
            )
            self._containment.written_unread(f"user {user_name}", denied)
            record.needs_human(
                f"{key_id} is {key.status} now and {user_name}'s tokens issued before "
                f"{denied.cutoff_in_effect.isoformat()} are denied: remove "
                f"{names.DENY_ALL_POLICY_NAME} from {user_name} when {user_name} may work again"
            )

        self._approvals.offer_beside(
            ActionKind.RETRY,
            f"Retry: deactivate {key_id}",
            [f"It failed: {failed}", f"{user_name} is denied everything meanwhile"],
            then,
        )


def _settle(items: list[str], item: str) -> None:
    """An open item (or an uncontained credential) settled, if it is still listed."""
    if item in items:
        items.remove(item)
