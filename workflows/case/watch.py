"""The containment watch (playbook 2.3): CloudTrail read on durable timers until a whole
window passes with no call of the contained credentials working; when one works, what
that says about how the attacker gets in, and containment proposed again."""

from collections import Counter
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.cloudtrail import CloudTrailActivities
    from activities.iam import IamActivities
    from models.activities import (
        CheckActivityInput,
        CheckActivityResult,
        ContainmentInPlaceInput,
    )
    from models.case import ActionKind, ActionStatus, CaseStatus, Decision, Phase, WatchStatus
    from models.principal import Credential, CredentialKind
    from workflows.case.approvals import Approvals, CaseAbandoned
    from workflows.case.containment import Containment
    from workflows.case.details import duration
    from workflows.case.evidence import CollectedEvidence
    from workflows.case.patches import CONTAINMENT_IN_PLACE_PATCH
    from workflows.case.record import CaseRecord
    from workflows.case.retries import AWS_RETRY, HEARTBEAT_TIMEOUT

if TYPE_CHECKING:  # the quarantine reads eradication's plans, which import the watch
    from workflows.case.quarantine import OrganizationQuarantine

# Calls that make a new credential: a sign the attacker has another way in.
_CREDENTIAL_EVENTS = frozenset(
    {"CreateAccessKey", "AssumeRole", "GetSessionToken", "GetFederationToken", "CreateLoginProfile"}
)


class ContainmentWatch:
    def __init__(
        self,
        record: CaseRecord,
        approvals: Approvals,
        containment: Containment,
        quarantine: "OrganizationQuarantine",
    ) -> None:
        self._record = record
        self._approvals = approvals
        self._containment = containment
        self._quarantine = quarantine

    async def until_clean(self, credential: Credential, evidence: CollectedEvidence) -> None:
        """Watch until a whole window is clean; when the contained credential still
        works, say how, propose containing it again, and watch again."""
        record = self._record
        if record.dry_run:
            # Nothing was contained: there is nothing to watch.
            record.would(
                "watch",
                [
                    f"Watch CloudTrail for {credential.access_key_id} for "
                    f"{duration(timedelta(seconds=record.policy.watch_seconds))}"
                ],
            )
            return
        while True:
            failed = await self.watch([credential.access_key_id])
            if failed is None or record.status.false_positive:
                return
            undone = record.status.watch.undone if record.status.watch else []
            findings = [f"containment undone: {line}" for line in undone]
            if failed.effective_count or not findings:
                findings += explain_failure(failed, record.status.containment_cutoff)
            record.set_phase(Phase.CONTAINMENT_FAILED, findings[0])
            for line in findings[1:]:
                record.note(line)
            if self._quarantine.available():
                # The account's own IAM did not keep the credential out: the organisation
                # can, before containment is tried again there.
                await self._quarantine.propose(credential)
            action = self._approvals.propose(
                ActionKind.RECONTAIN,
                f"Contain {credential.access_key_id} again, then watch again",
                findings + _recontain_steps(credential, record.status),
                # Protected, it needs two people again; Quench's own, it is a human's.
                protected=None if record.status.quench_own else record.status.hands_off,
            )
            decision = await self._approvals.decision(action)
            if decision.decision is Decision.REJECTED:
                self._approvals.ledger.finish(action, ActionStatus.REJECTED, decision.reason)
                raise CaseAbandoned(
                    f"containment failed; {decision.approver} takes over: {decision.reason}"
                )
            record.set_phase(Phase.CONTAINMENT, f"approved by {decision.approver}")
            await self._containment.contain_again(
                action, credential, evidence, decision.approver, decision.reason
            )

    async def watch(
        self, access_key_ids: list[str], since: datetime | None = None, minted: bool = False
    ) -> CheckActivityResult | None:
        """One watch: durable timers between CloudTrail checks. Returns the calls that
        worked after containment (at `since`, or now), or None once the window is clean."""
        record = self._record
        policy = record.policy
        start = since or workflow.now()
        window_end = workflow.now() + timedelta(seconds=policy.watch_seconds)
        clean_at = window_end + timedelta(seconds=policy.delivery_lag_seconds)
        watch = WatchStatus(access_key_ids=access_key_ids, start=start, clean_at=clean_at)
        if minted:
            record.status.minted_watches.append(watch)
        else:
            record.status.watch = watch
        record.set_phase(
            Phase.WATCHING,
            f"watching CloudTrail for {', '.join(access_key_ids)} until "
            f"{window_end.isoformat()}; clean no earlier than {clean_at.isoformat()}, when "
            "its logs can be expected",
        )
        while True:
            wait = min(timedelta(seconds=policy.check_every_seconds), clean_at - workflow.now())
            if wait > timedelta(0):
                await workflow.sleep(wait, summary="Containment watch: until the next check")
            if record.status.false_positive:
                # What containment changed may be released now: the watch would see it.
                watch.verdict = "stopped: marked a false positive"
                record.note(f"watch of {', '.join(access_key_ids)} stopped: a false positive")
                return None
            now = workflow.now()
            check = CheckActivityInput(
                case_id=record.status.folder,
                account_id=record.status.account_id,
                access_key_ids=access_key_ids,
                start=start,
                end=min(now, window_end),
            )
            result = await self._approvals.attempt(
                "check CloudTrail for the contained credentials",
                lambda check=check: workflow.execute_activity_method(  # type: ignore[misc]
                    CloudTrailActivities.check_credential_activity,
                    check,
                    start_to_close_timeout=timedelta(minutes=10),
                    heartbeat_timeout=HEARTBEAT_TIMEOUT,
                    retry_policy=AWS_RETRY,
                    summary=f"CloudTrail calls of {', '.join(access_key_ids)} since containment",
                ),
            )
            self._take_in(watch, result)
            watch.checks += 1
            watch.last_checked_at = now
            watch.denied_attempts = result.denied_count
            watch.effective_calls = result.effective_count
            if not minted and workflow.patched(CONTAINMENT_IN_PLACE_PATCH):
                # Undone with no call made yet is undone all the same.
                watch.undone = await self._containment_undone()
            if result.effective_count or watch.undone:
                watch.verdict = "failed"
                return result
            if now >= clean_at:
                self._clean(watch, window_end)
                return None
            record.refresh()

    async def _containment_undone(self) -> list[str]:
        """What of the case's own containment is no longer in place in IAM: its revocation
        or token-deny policy deleted or edited, its deactivated key active again."""
        record = self._record
        status = record.status
        credential, cutoff = status.credential, status.containment_cutoff
        if credential is None or cutoff is None:
            return []
        principal = credential.principal
        user_key = credential.kind is CredentialKind.IAM_USER_KEY
        deactivated = user_key and any(
            a.kind is ActionKind.CONTAIN_USER_KEY
            and a.status is ActionStatus.DONE
            and (a.outcome or "").startswith("key deactivated")
            for a in status.actions
        )
        request = record.in_account(
            ContainmentInPlaceInput(
                cutoff=cutoff,
                role_name=None if user_key else principal.role_name,
                user_name=principal.user_name if user_key else None,
                access_key_id=credential.access_key_id if deactivated else None,
            )
        )
        if not (request.role_name or request.user_name):
            return []
        result, failure = await self._approvals.attempt_or_fail(
            "read whether the containment is still in place",
            lambda: workflow.execute_activity_method(
                IamActivities.check_containment_in_place,
                request,
                start_to_close_timeout=timedelta(minutes=2),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=AWS_RETRY,
                summary="Is the containment still in place?",
            ),
        )
        if result is None:
            record.note(f"whether the containment is still in place could not be read: {failure}")
            return []
        return result.undone

    def _take_in(self, watch: WatchStatus, result: CheckActivityResult) -> None:
        """Note new denied attempts (and keep where they came from, for the report), and
        trails found not logging."""
        attempts = [e for e in result.events if not e.worked]
        watch.attempt_sources = sorted({*watch.attempt_sources, *(e.source_ip for e in attempts)})
        # Each check reads the whole window again: its counts replace the last check's.
        calls = Counter(
            f"{e.event_source.split('.')[0]}:{e.event_name} "
            + (e.error_code or "answered (needs no permission)")
            for e in attempts
        )
        if calls:
            watch.attempt_calls = dict(sorted(calls.items()))
        if result.denied_count > watch.denied_attempts:
            sources = sorted({e.source_ip for e in result.events if e.denied})
            # A call AWS answers whatever denies it (GetCallerIdentity) is an attempt
            # with no refusal, and so no source among the refused ones.
            where = f", from {', '.join(sources)}" if sources else ""
            self._record.note(
                f"{result.denied_count} "
                + ("attempt" if result.denied_count == 1 else "attempts")
                + f" since containment{where}: the attacker is still trying, and no call worked"
            )
        if result.logging_unknown and not watch.logging_unknown:
            watch.logging_unknown = result.logging_unknown
            self._record.note(
                f"whether the trails are logging could not be read: {result.logging_unknown}"
            )
        for trail in result.not_logging:
            if trail not in watch.blind_trails:
                watch.blind_trails.append(trail)
                self._record.note(
                    f"trail {trail} is not logging: the watch cannot see a call made while "
                    "it is off"
                )

    def _clean(self, watch: WatchStatus, window_end: datetime) -> None:
        record = self._record
        keys = ", ".join(watch.access_key_ids)
        watch.verdict = "clean"
        record.note(
            f"no call of {keys} worked from {watch.start.isoformat()} "
            f"to {window_end.isoformat()}: containment holds"
        )
        if watch.logging_unknown:
            record.status.open_items.append(
                f"the containment watch of {keys} could not read whether the trails were "
                f"logging ({watch.logging_unknown}): a call made while one was off is in "
                "none of its files. Check the trails' status and CloudTrail event history "
                f"(LookupEvents) for their calls since {watch.start.isoformat()}"
            )
        if watch.blind_trails:
            record.status.open_items.append(
                f"the containment watch of {keys} read CloudTrail "
                f"while trail {', '.join(watch.blind_trails)} was not logging: a call "
                "made then is in none of its files. Check CloudTrail event history "
                f"(LookupEvents) for their calls since {watch.start.isoformat()}"
            )
        record.refresh()


def _recontain_steps(credential: Credential, status: CaseStatus) -> list[str]:
    if status.quench_own:
        return [f"Quench's own identity ({status.hands_off}): contain it by hand, then approve"]
    if credential.kind is CredentialKind.INSTANCE_ROLE_SESSION:
        return [
            "Revoke the role's sessions again with a new cut-off, stop+start the instance "
            "and verify; review the role's trust policy if new sessions appear"
        ]
    if credential.kind is CredentialKind.IAM_USER_KEY:
        return ["Deactivate the key again and deny the user's tokens with a new cut-off"]
    if credential.kind is CredentialKind.ROLE_SESSION:
        return ["Revoke the role's sessions again with a new cut-off; fix its trust policy"]
    return ["Contain the credential by hand, then approve"]


def explain_failure(result: CheckActivityResult, cutoff: datetime | None) -> list[str]:
    """What the calls that worked after containment say about how the attacker gets in."""
    worked = [e for e in result.events if e.worked]
    sources = sorted({e.source_ip for e in worked})
    calls = Counter(e.event_name for e in worked).most_common(5)
    lines = [
        f"{result.effective_count} calls worked after containment, from {', '.join(sources)}: "
        + ", ".join(f"{name} x{count}" for name, count in calls)
    ]
    if cutoff is not None:
        fresh = sorted(
            {
                e.access_key_id
                for e in worked
                if e.session_issued_at and e.session_issued_at >= cutoff
            }
        )
        if fresh:
            lines.append(
                f"sessions issued after the cut-off are in use ({', '.join(fresh)}): the "
                "attacker can still obtain credentials; review the trust policy and whoever "
                "can reach the instance"
            )
        old = sorted(
            {
                e.access_key_id
                for e in worked
                if e.session_issued_at and e.session_issued_at < cutoff
            }
        )
        if old:
            lines.append(
                f"sessions issued before the cut-off still work ({', '.join(old)}): check that "
                "the revocation policy is still attached"
            )
    minted = sorted({e.event_name for e in worked if e.event_name in _CREDENTIAL_EVENTS})
    if minted:
        lines.append(f"the attacker made new credentials ({', '.join(minted)})")
    return lines
