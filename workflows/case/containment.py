"""Containment (playbook 2.1 and 2.2): the credential cut off after approval, by the way
its kind needs: an instance role's sessions revoked and the instance's credentials
rotated and verified, a role session revoked, a user's key deactivated and its older
tokens denied; anything else handed to a human with a checklist."""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TypeVar

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.ec2 import Ec2Activities
    from activities.iam import IamActivities
    from activities.recovery import RecoveryActivities
    from activities.ssm import SsmActivities
    from config import names
    from models.activities import (
        InstanceInput,
        ProbeInstanceCredentialsInput,
        RevokeRoleSessionsInput,
        RevokeRoleSessionsResult,
        RoleTrustInput,
        RoleTrustResult,
        StartTrailsLoggingInput,
    )
    from models.case import (
        DRY_RUN_CONTAINED,
        DRY_RUN_DONE,
        Action,
        ActionKind,
        ActionStatus,
        Approval,
        CaseStatus,
        Decision,
        Phase,
    )
    from models.principal import Credential, CredentialKind
    from workflows.case.approvals import Approvals, CaseAbandoned
    from workflows.case.evidence import CollectedEvidence
    from workflows.case.patches import (
        CONTAINMENT_FIRST_PATCH,
        LOGGING_PATCH,
        ROLE_SESSION_PATCH,
    )
    from workflows.case.record import CaseRecord
    from workflows.case.release import record_change
    from workflows.case.retries import AWS_RETRY, HEARTBEAT_TIMEOUT, PROBE_RETRY
    from workflows.case.user_key import UserKeyContainment

T = TypeVar("T")
# How long a containment a person decides waits for the account's trails to be read.
TRAILS_READ_WAIT = timedelta(seconds=10)


class Containment:
    def __init__(self, record: CaseRecord, approvals: Approvals) -> None:
        self._record = record
        self._approvals = approvals
        self._ledger = approvals.ledger
        # Evidence that could not be kept before the first containment: its approver is
        # told what the change may cost.
        self._missing: list[str] = []
        self._user_key = UserKeyContainment(record, approvals, self)
        # A protected credential's containment by hand, offered beside Quench's own.
        self._by_hand: Action | None = None
        # The evidence phase, when it kept only what containment changes before the
        # cut-off: what it still takes beside containment (snapshots, trails).
        self._evidence: CollectedEvidence | None = None
        # Whether Quench's own containment was approved (not one by hand).
        self._approved = False

    async def contain(self, credential: Credential, evidence: CollectedEvidence) -> str | None:
        """Propose containment, wait for its decision and carry it out; the outcome, or
        None when it was rejected (the case is then closed)."""
        self._missing = evidence.missing
        self._evidence = evidence if evidence.cut_off_first else None
        status = self._record.status
        if status.quench_own:
            return await self._hand_to_human(credential, _own_checklist(credential, status))
        if status.hands_off:
            return await self._contain_protected(credential, evidence, status.hands_off)
        return await self._contain(credential, evidence)

    async def _contain(self, credential: Credential, evidence: CollectedEvidence) -> str | None:
        """Containment by the way the credential's kind needs."""
        if credential.kind is CredentialKind.INSTANCE_ROLE_SESSION:
            return await self._contain_instance_role(credential, evidence.instance_running)
        if evidence.user_key:
            return await self._user_key.contain(credential, evidence.user)
        if credential.kind is CredentialKind.ROLE_SESSION and workflow.patched(ROLE_SESSION_PATCH):
            return await self._contain_role_session(credential)
        return await self._hand_to_human(credential)

    async def contain_again(
        self, action: Action, credential: Credential, evidence: CollectedEvidence, by: str, why: str
    ) -> None:
        """Containment once more, after the watch saw the credential still work (never
        by Quench on its own identity: its containment is a human's)."""
        self._approved_anyway(action)
        if self._record.status.quench_own:
            self._ledger.finish(action, ActionStatus.DONE, f"by {by}")
            self._record.set_phase(Phase.CONTAINED, f"{by}: {why}")
        elif credential.kind is CredentialKind.INSTANCE_ROLE_SESSION:
            await self._apply_instance_role(action, credential, evidence.instance_running)
        elif evidence.user_key:
            await self._user_key.apply(action, credential)
        elif credential.kind is CredentialKind.ROLE_SESSION:
            await self._apply_role_session(action, credential)
        else:
            self._ledger.finish(action, ActionStatus.DONE, f"by {by}")
            self._record.set_phase(Phase.CONTAINED, f"{by}: {why}")

    def with_logging_steps(self, steps: list[str]) -> list[str]:
        """A containment's steps, after starting logging on trails found stopped (before
        the watch, after the cut-off when the evidence phase kept only what containment
        changes first)."""
        logging = [
            f"Start logging on trail {trail}: it was not logging when the case opened, "
            "and the containment watch reads its files"
            for trail in self._stopped_trails()
        ]
        if self._evidence is None:
            return logging + steps
        trails = self._evidence.trails
        if trails is None or not trails.done():
            logging = [
                "Start logging on any trail found not logging when the case opened (the "
                "account's trails are still being read), before the containment watch"
            ]
        return steps + logging

    async def ready_to_propose(self, kind: ActionKind | None) -> None:
        """A containment a person decides (`kind` None: a protected credential's, by hand
        or by two people) is proposed once the account's trails are read, so its steps
        name the trails it starts logging on, but never after TRAILS_READ_WAIT (a read
        retried against a throttled API must not keep the person from being asked); one
        the policy runs on its own is proposed at once."""
        evidence = self._evidence
        if evidence is None:
            return
        status = self._record.status
        if (
            kind is not None
            and kind in self._record.policy.without_approval
            and status.hands_off is None
        ):
            return
        evidence.start_all()
        trails = evidence.trails
        if trails is not None and not trails.done():
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    trails.done,
                    timeout=TRAILS_READ_WAIT,
                    timeout_summary="The account's trails, read before asking a person",
                )

    def cut_off_now(self) -> None:
        """The credential is cut off now (the first time counts): the report orders the
        evidence against it."""
        status = self._record.status
        if status.cut_off_at is None:
            status.cut_off_at = workflow.now()

    def waits_on_a_person(self) -> None:
        """Containment waits on a person: everything that waited for it starts."""
        if self._evidence is not None:
            self._evidence.start_all()

    def after_cut_off(self) -> None:
        """The credential is cut off: the evidence containment does not change starts."""
        if self._evidence is not None:
            self._evidence.start_later()

    async def logging_after_cut_off(self) -> None:
        """Once the credential is cut off: logging on again on the trails the evidence
        phase found stopped, before the watch reads them (when the evidence phase kept
        only what containment changes first; otherwise it was started before)."""
        evidence = self._evidence
        if evidence is None or self._record.dry_run or not self._approved:
            return
        evidence.start_later()
        if evidence.trails is not None:
            await evidence.trails
        trails = self._stopped_trails()
        if trails:
            await self._start_trails_logging(trails)

    def first_steps(self, steps: list[str], logging: bool = True) -> list[str]:
        """The first containment's steps, after what evidence it goes ahead without (and,
        when Quench carries it out, starting logging on trails found stopped)."""
        return [
            f"Evidence not kept ({missing}): containing now changes what it would show"
            for missing in self._missing
        ] + (self.with_logging_steps(steps) if logging else steps)

    async def revoke_role_sessions(
        self, role_name: str, cutoff: datetime, record_cutoff: bool = True
    ) -> None:
        """Deny the role's sessions issued before `cutoff`; the case's own containment
        records the cut-off in effect (a minted session's does not replace it)."""
        revoked = await self._approvals.attempt(
            "revoke the role's sessions",
            lambda: workflow.execute_activity_method(
                IamActivities.revoke_role_sessions,
                self._record.in_account(
                    RevokeRoleSessionsInput(role_name=role_name, cutoff=cutoff)
                ),
                start_to_close_timeout=timedelta(minutes=2),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=AWS_RETRY,
                summary=f"Revoke sessions of {role_name} issued before {cutoff.isoformat()}",
            ),
        )
        if revoked.changed:
            record_change(
                self._record,
                "policy_put",
                cutoff=revoked.cutoff_in_effect,
                previous=revoked.replaced,
                role_name=role_name,
                policy_name=revoked.policy_name,
            )
        self.after_cut_off()
        if record_cutoff:
            self._record.status.containment_cutoff = revoked.cutoff_in_effect
            self.cut_off_now()
        self._record.note(
            f"sessions of {role_name} issued before {revoked.cutoff_in_effect.isoformat()} "
            f"are denied" + ("" if revoked.changed else " (policy was already in place)")
        )
        self.written_unread(f"role {role_name}", revoked)

    def written_unread(self, whose: str, written: RevokeRoleSessionsResult) -> None:
        """A deny written without reading the policy in place first is said: a later
        cut-off someone else set may have been replaced by the case's earlier one."""
        if written.unread:
            self._record.needs_human(
                f"{written.policy_name} on {whose} was written without reading the one in "
                f"place ({written.unread}): check that no later cut-off was replaced"
            )

    async def go_live(
        self, action: Action, credential: Credential, evidence: CollectedEvidence
    ) -> None:
        """A dry run made real by `action`: containment for real, from the current state
        (logging first on trails found stopped), and console access after approval."""
        approval = action.approval
        assert approval is not None
        self._missing = evidence.missing
        trails = self._stopped_trails()
        if trails:
            await self._start_trails_logging(trails)
        await self.contain_again(action, credential, evidence, approval.approver, approval.reason)
        user = evidence.user
        if evidence.user_key and not self._record.status.quench_own:
            if user is None or user.has_login_profile:
                await self._user_key.remove_console_access(
                    credential.principal.user_name or "", known=user is not None
                )

    def _approved_anyway(self, action: Action) -> None:
        """A protected credential two people approved containing: its names may be acted
        on from now on (never Quench's own, which no approval opens)."""
        credential = self._record.status.credential
        if action.protected is None or credential is None or self._record.status.quench_own:
            return
        principal = credential.principal
        kinds = (
            ("user", principal.user_name),
            ("role", principal.role_name),
            ("instance", principal.instance_id),
        )
        approved = [f"{kind}:{name}" for kind, name in kinds if name]
        self._record.status.approved_protected = approved
        self._record.note(f"{', '.join(approved)}: protected, contained as two people approved")

    def not_made(self, action: Action, changes: list[str]) -> bool:
        """In a dry run, the approved action's changes are recorded as not made, and True."""
        if not self._record.dry_run:
            return False
        self.after_cut_off()
        self._record.would(action.id, changes)
        self._ledger.finish(action, ActionStatus.DONE, DRY_RUN_DONE)
        return True

    # -- approval, and logging back on first -----------------------------------------------

    async def approved(self, action: Action) -> bool:
        """Wait for the decision on a containment; a rejection closes the case. Once it is
        approved, logging starts again first on trails found stopped (one of its steps)."""
        if not self._ledger.runs_without_approval(action):
            # Nothing is cut off before a person decides: the rest of the evidence is kept
            # meanwhile, and the investigation runs.
            self.waits_on_a_person()
        if action.protected and self._by_hand is not None:
            approval = await self._protected_decision(action, self._by_hand)
        else:
            approval = await self._approvals.decision(action)
        if approval.decision is Decision.REJECTED:
            self._ledger.finish(action, ActionStatus.REJECTED, approval.reason)
            # A retry offered beside the case (evidence not kept) is still decided first.
            await self._approvals.offers_decided("closing")
            self._record.close(f"containment rejected by {approval.approver}: {approval.reason}")
            return False
        self._record.set_phase(Phase.CONTAINMENT, f"approved by {approval.approver}")
        self._approved = True
        self._approved_anyway(action)
        trails = self._stopped_trails()
        if trails and not self._record.dry_run and self._evidence is None:
            await self._start_trails_logging(trails)
        return True

    def _stopped_trails(self) -> list[str]:
        """Trails found stopped when the case opened that containment has not started."""
        status = self._record.status
        stopped = [t for t in status.trails_found_stopped if t not in status.trails_restarted]
        if not stopped or not workflow.patched(LOGGING_PATCH):
            return []
        return stopped

    async def _start_trails_logging(self, trails: list[str]) -> None:
        """Logging on again before the credential is contained, so the watch that follows
        reads complete files from its first second."""
        record = self._record
        result, failure = await self._step(
            "start logging on the trails found stopped",
            lambda: workflow.execute_activity_method(
                RecoveryActivities.start_trails_logging,
                record.in_account(StartTrailsLoggingInput(trail_names=trails)),
                start_to_close_timeout=timedelta(minutes=2),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=AWS_RETRY,
                summary=f"Start logging on {', '.join(trails)} before the watch",
            ),
        )
        if result is None:
            # Containment goes on: the watch then says it is blind on these trails.
            record.needs_human(
                f"logging on {', '.join(trails)} could not be started: {failure}: start it by "
                "hand; until then the containment watch cannot see calls those trails log"
            )
            return
        now = workflow.now()
        for name in result.started:
            record.status.trails_restarted[name] = now
            record.note(f"trail {name} is logging again, so the containment watch can see")
        for name in result.already_logging:
            record.note(f"trail {name} was logging again already: someone else started it")
        for name in result.missing:
            record.note(f"trail {name} no longer exists: recovery recreates it from evidence")

    # -- an EC2 instance role --------------------------------------------------------------

    async def _contain_instance_role(
        self, credential: Credential, instance_running: bool | None
    ) -> str | None:
        """Playbook 2.2 for an instance role: revoke older sessions, stop+start, verify."""
        principal = credential.principal
        role_name = principal.role_name or ""
        instance_id = principal.instance_id or ""
        steps = [
            f"Deny all sessions of role {role_name} issued before the approval "
            f"(inline policy {names.REVOKE_SESSIONS_POLICY_NAME} on aws:TokenIssueTime)",
            f"Stop instance {instance_id} and start it again so it receives new credentials",
            f"Verify through SSM and the instance metadata that the key is no longer "
            f"{credential.access_key_id}",
        ]
        await self.ready_to_propose(ActionKind.CONTAIN_INSTANCE_ROLE)
        if instance_running is None:
            steps[1] = (
                f"Stop instance {instance_id} and start it again so it receives new "
                "credentials (its state could not be read: the finding saw it in use)"
            )
        elif not instance_running:
            steps[1] = f"Instance {instance_id} is not running: it gets new credentials at start"
        action = self.propose(
            ActionKind.CONTAIN_INSTANCE_ROLE,
            f"Contain {credential.access_key_id}: revoke sessions of {role_name}, "
            f"rotate {instance_id}",
            self.first_steps(steps),
        )
        if not await self.approved(action):
            return None
        if self.not_made(action, self.with_logging_steps(steps)):
            return DRY_RUN_CONTAINED
        await self._apply_instance_role(action, credential, instance_running)
        return "contained"

    async def _apply_instance_role(
        self, action: Action, credential: Credential, instance_running: bool | None
    ) -> None:
        record = self._record
        principal = credential.principal
        role_name = principal.role_name or ""
        instance_id = principal.instance_id or ""
        await self.revoke_role_sessions(role_name, self._ledger.start(action))
        while True:
            if instance_running is False:
                record.note(f"instance {instance_id} was not running; no stop+start needed")
                self._ledger.finish(action, ActionStatus.DONE, "sessions revoked")
                record.set_phase(Phase.CONTAINED, "role sessions revoked")
                return
            unrotated = await self._rotate_instance(instance_id)
            if unrotated is not None:
                # The sessions are revoked, so the stolen key is denied: the case goes on,
                # and the instance is left to a human.
                record.needs_human(unrotated)
                self._ledger.finish(action, ActionStatus.DONE, "sessions revoked, not rotated")
                record.set_phase(Phase.CONTAINED, "role sessions revoked; instance not rotated")
                return
            record.set_phase(Phase.VERIFICATION, "reading the instance's credentials over SSM")
            probe, failure = await self._step(
                "verify the instance's new credentials",
                lambda: workflow.execute_activity_method(
                    SsmActivities.probe_instance_credentials,
                    record.in_account(
                        ProbeInstanceCredentialsInput(instance_id=instance_id, role_name=role_name)
                    ),
                    start_to_close_timeout=timedelta(minutes=3),
                    heartbeat_timeout=HEARTBEAT_TIMEOUT,
                    retry_policy=PROBE_RETRY,
                    summary=f"Read {role_name}'s credentials from {instance_id}'s metadata",
                ),
            )
            if probe is None:
                record.needs_human(
                    f"the rotation of {instance_id} is not verified: {failure}: check that "
                    f"its metadata no longer serves {credential.access_key_id}"
                )
                self._ledger.finish(action, ActionStatus.DONE, "sessions revoked, not verified")
                record.set_phase(Phase.CONTAINED, "role sessions revoked; rotation not verified")
                return
            if probe.access_key_id != credential.access_key_id:
                record.status.verified_access_key_id = probe.access_key_id
                record.note(
                    f"instance {instance_id} now holds {probe.access_key_id}, "
                    f"not {credential.access_key_id}: rotation verified"
                )
                self._ledger.finish(action, ActionStatus.DONE, "sessions revoked, key rotated")
                record.set_phase(Phase.CONTAINED, "credential rotated and verified")
                return
            record.set_phase(
                Phase.CONTAINMENT_FAILED,
                f"instance {instance_id} still holds {credential.access_key_id}",
            )
            retry = self._approvals.propose(
                ActionKind.RETRY,
                f"Stop and start {instance_id} again, then verify the key changed",
                [f"The metadata service still serves {credential.access_key_id} after stop+start"],
            )
            decision = await self._approvals.decision(retry)
            if decision.decision is Decision.REJECTED:
                self._ledger.finish(retry, ActionStatus.REJECTED, decision.reason)
                self._ledger.finish(action, ActionStatus.FAILED, "rotation not verified")
                raise CaseAbandoned(
                    f"rotation not verified; {decision.approver} takes over: {decision.reason}"
                )
            self._ledger.finish(retry, ActionStatus.DONE, "retrying")
            record.set_phase(Phase.CONTAINMENT, f"retry approved by {decision.approver}")

    async def _step(
        self, doing: str, call: Callable[[], Awaitable[T]]
    ) -> tuple[T | None, str | None]:
        """A containment step that need not hold up the case once the credential is cut
        off: its result, or why it failed for good (cases recorded before asked a human
        to retry it, and waited)."""
        if workflow.patched(CONTAINMENT_FIRST_PATCH):
            return await self._approvals.attempt_or_fail(doing, call)
        return await self._approvals.attempt(doing, call), None

    async def _rotate_instance(self, instance_id: str) -> str | None:
        """A reboot does not rotate instance credentials; a stop and a start do. Returns
        the open item when one of them failed for good."""
        request = self._record.in_account(InstanceInput(instance_id=instance_id))
        await self._snapshots_taken(instance_id)
        stopped, failure = await self._step(
            "stop the instance",
            lambda: workflow.execute_activity_method(
                Ec2Activities.stop_instance,
                request,
                start_to_close_timeout=timedelta(minutes=15),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=AWS_RETRY,
                summary=f"Stop {instance_id} (a reboot would keep the old credentials)",
            ),
        )
        if stopped is None:
            return (
                f"instance {instance_id} was not stopped and started: {failure}: its role's "
                "sessions are revoked, so the stolen key is denied, but so is the instance's "
                "own work until it gets new credentials: stop and start it by hand"
            )
        self._record.note(f"instance {instance_id} stopped")
        started, failure = await self._step(
            "start the instance",
            lambda: workflow.execute_activity_method(
                Ec2Activities.start_instance,
                request,
                start_to_close_timeout=timedelta(minutes=15),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=AWS_RETRY,
                summary=f"Start {instance_id} so it receives new role credentials",
            ),
        )
        if started is None:
            return (
                f"instance {instance_id} is stopped: starting it failed: {failure}: start it "
                "by hand"
            )
        self._record.note(f"instance {instance_id} started")
        return None

    async def _snapshots_taken(self, instance_id: str) -> None:
        """The EBS snapshots the evidence phase started, done before the stop. One that
        failed for good is an open item already: the stop goes ahead (EBS volumes keep
        their data through a stop and start; memory is lost either way)."""
        evidence = self._evidence
        if evidence is None or evidence.snapshots is None:
            return
        await evidence.snapshots
        evidence.snapshots = None
        if any(m.startswith("snapshot the instance's volumes") for m in evidence.missing):
            self._record.note(
                f"instance {instance_id} is stopped without the EBS snapshots: its volumes "
                "keep their data through the stop, so a snapshot taken later still holds it"
            )

    # -- a role session not from an instance -----------------------------------------------

    async def _contain_role_session(self, credential: Credential) -> str | None:
        """Playbook 2.2, option A, for a session of a role assumed by a user, a federated
        identity or another account; who may assume the role is recorded and flagged."""
        record = self._record
        role_name = credential.principal.role_name or ""
        account_id = record.status.account_id

        def read_trust() -> Awaitable[RoleTrustResult]:
            return workflow.execute_activity_method(
                IamActivities.list_role_trust,
                record.in_account(RoleTrustInput(role_name=role_name, account_id=account_id)),
                start_to_close_timeout=timedelta(minutes=2),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=AWS_RETRY,
                summary=f"Who may assume {role_name}",
            )

        flagged: list[str] = []
        unread: list[str] = []
        if workflow.patched(CONTAINMENT_FIRST_PATCH):
            trust, failure = await self._approvals.attempt_or_fail(
                "read the role's trust policy", read_trust
            )
        else:
            trust = await self._approvals.attempt("read the role's trust policy", read_trust)
            failure = None
        if trust is not None:
            trusted = [f"{p.kind} {p.value}" for p in trust.principals]
            flagged = [f"{p.kind} {p.value}" for p in trust.principals if p.outside_account]
            record.note(f"{role_name} may be assumed by: {', '.join(trusted) or 'nobody'}")
        else:
            record.needs_human(
                f"who may assume {role_name} is unknown: reading its trust policy failed: "
                f"{failure}: review it by hand, it may let the attacker back in"
            )
            unread.append(
                f"Review {role_name}'s trust policy by hand: it could not be read ({failure})"
            )
        steps = [
            f"Deny all sessions of role {role_name} issued before the approval (inline policy "
            f"{names.REVOKE_SESSIONS_POLICY_NAME}); its legitimate users must assume it again",
        ]
        if flagged:
            record.note(f"flagged: {role_name} trusts principals outside the account: {flagged}")
            steps.append(
                f"Review the trust policy: it lets {', '.join(flagged)} assume the role, a way "
                "back in for the attacker (playbook 2.2, option B)"
            )
        await self.ready_to_propose(ActionKind.CONTAIN_ROLE_SESSION)
        action = self.propose(
            ActionKind.CONTAIN_ROLE_SESSION,
            f"Contain {credential.access_key_id}: revoke sessions of {role_name}",
            self.first_steps(steps + unread),
        )
        if not await self.approved(action):
            return None
        if self.not_made(action, self.with_logging_steps(steps[:1])):
            return DRY_RUN_CONTAINED
        await self._apply_role_session(action, credential)
        return "contained"

    async def _apply_role_session(self, action: Action, credential: Credential) -> None:
        role_name = credential.principal.role_name or ""
        await self.revoke_role_sessions(role_name, self._ledger.start(action))
        self._ledger.finish(action, ActionStatus.DONE, "sessions revoked")
        self._record.set_phase(Phase.CONTAINED, f"sessions of {role_name} revoked")

    # -- by a human ------------------------------------------------------------------------

    async def _hand_to_human(
        self, credential: Credential, checklist: list[str] | None = None
    ) -> str | None:
        """Credentials Quench does not contain itself go to a human with a checklist."""
        record = self._record
        principal = credential.principal
        record.set_phase(Phase.NEEDS_HUMAN, f"{credential.kind.value} is contained by a human")
        self.waits_on_a_person()
        action = self._approvals.propose(
            ActionKind.MANUAL_CONTAINMENT,
            f"Contain {credential.access_key_id} ({principal.type.value}) by hand, then approve",
            self.first_steps(checklist or _manual_checklist(credential), logging=False),
        )
        return await self._decided_by_hand(action, await self._approvals.decision(action))

    async def _decided_by_hand(self, action: Action, approval: Approval) -> str | None:
        """A manual containment decided: done by a human, or the case closes uncontained."""
        record = self._record
        if approval.decision is Decision.APPROVED:
            self._ledger.finish(action, ActionStatus.DONE, f"contained by {approval.approver}")
            record.set_phase(Phase.CONTAINED, f"{approval.approver}: {approval.reason}")
            return "contained by a human"
        self._ledger.finish(action, ActionStatus.REJECTED, approval.reason)
        await self._approvals.offers_decided("closing")
        record.close(f"not contained: {approval.approver}: {approval.reason}")
        return None

    # -- something protected ---------------------------------------------------------------

    async def _contain_protected(
        self, credential: Credential, evidence: CollectedEvidence, why: str
    ) -> str | None:
        """A protected credential: a human contains it by hand (manual-N), or two people
        approve Quench's own containment anyway; whichever is decided first."""
        record = self._record
        key = credential.access_key_id
        record.note(f"{key} is protected ({why}): Quench does not contain it on its own")
        # Both ways are proposed together, once the trails are read.
        await self.ready_to_propose(None)
        self._by_hand = self._approvals.propose(
            ActionKind.MANUAL_CONTAINMENT,
            f"Contain {key} by hand, then approve: it is protected",
            self.first_steps(
                [
                    f"{why}: Quench does not contain it on its own",
                    *_manual_checklist(credential),
                    "Or have Quench contain it anyway: two different people approve the "
                    "containment proposed beside this",
                ],
                logging=False,
            ),
        )
        try:
            return await self._contain(credential, evidence)
        except _DecidedByHand as by_hand:
            return await self._decided_by_hand(by_hand.action, by_hand.approval)

    def propose(self, kind: ActionKind, title: str, steps: list[str]) -> Action:
        """A containment action; on a protected credential, one that needs two people
        and never goes ahead on the policy's say-so."""
        why = self._record.status.hands_off
        if why is None:
            return self._approvals.propose(kind, title, steps)
        by_hand = f", or contain it by hand with {self._by_hand.id}" if self._by_hand else ""
        return self._approvals.propose(
            kind,
            f"{title} (protected: two people must approve)",
            [
                f"Protected: {why}. Quench acts only if two different people approve{by_hand}",
                *steps,
            ],
            protected=why,
        )

    async def _protected_decision(self, action: Action, by_hand: Action) -> Approval:
        """The protected containment approved by two people, or the containment by hand
        decided, whichever comes first; the other is withdrawn. A rejected containment
        leaves the one by hand to decide."""
        ours = asyncio.create_task(self._approvals.decision(action))
        theirs = asyncio.create_task(self._approvals.decision(by_hand))
        await workflow.wait_condition(lambda: ours.done() or theirs.done())
        if ours.done():
            approval = ours.result()
            if approval.decision is Decision.APPROVED:
                theirs.cancel()
                self._ledger.finish(
                    by_hand, ActionStatus.WITHDRAWN, f"not needed: {action.id} was approved"
                )
                return approval
            self._ledger.finish(action, ActionStatus.REJECTED, approval.reason)
        else:
            ours.cancel()
            self._ledger.finish(
                action, ActionStatus.WITHDRAWN, f"not needed: {by_hand.id} was decided"
            )
        raise _DecidedByHand(by_hand, await theirs)


class _DecidedByHand(Exception):
    """A protected credential's containment by hand was decided before Quench's own."""

    def __init__(self, action: Action, approval: Approval) -> None:
        super().__init__(action.id)
        self.action = action
        self.approval = approval


def _manual_checklist(credential: Credential) -> list[str]:
    return [
        "Review the evidence stored with this case",
        f"Disable {credential.access_key_id} (update-access-key --status Inactive) "
        "or revoke the sessions of the role behind it",
        "Check CloudTrail for activity after containment",
        "Approve this action when done, or reject it to close the case as not contained",
    ]


def _own_checklist(credential: Credential, status: CaseStatus) -> list[str]:
    """Quench's own credential: it never contains itself, so its responders do."""
    return [
        f"This finding names Quench's own identity: {status.hands_off}. Quench does not "
        "contain itself: it would lock out the responder",
        "Review the evidence stored with this case: is the call really Quench's?",
        f"If it is not: rotate Quench's credentials by hand (deactivate {credential.access_key_id}"
        " or revoke the role's sessions), give the worker new ones, and restart it",
        "Check CloudTrail for what the credential did, and open a case for what it made",
        "Approve this action when done, or reject it to close the case as not contained",
    ]
