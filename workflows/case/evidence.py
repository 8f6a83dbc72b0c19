"""Triage and evidence (playbook 1): who the credential belongs to, and everything
containment could change, kept with its SHA-256 before any change is made."""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.cloudtrail import CloudTrailActivities
    from activities.ec2 import Ec2Activities
    from activities.evidence import EvidenceActivities
    from activities.iam import IamActivities
    from activities.recovery import RecoveryActivities
    from models.activities import (
        CaptureInstanceInput,
        CaptureInstanceResult,
        CaptureRoleInput,
        CaptureTrailsInput,
        CaptureUserInput,
        CaptureUserResult,
        CloudTrailSliceInput,
        ResolvePrincipalInput,
        ResolvePrincipalResult,
        SnapshotVolumesInput,
        StoreEvidenceInput,
    )
    from models.case import Action, ActionKind, ActionStatus, Approval, Decision, Phase
    from models.finding import Finding
    from models.principal import Credential, CredentialKind
    from playbook.principal import named_by_finding, session_name
    from workflows.case.approvals import Approvals, failure_detail
    from workflows.case.patches import (
        CONTAINMENT_FIRST_PATCH,
        HANDS_OFF_PATCH,
        TRAILS_PATCH,
        USER_KEY_PATCH,
    )
    from workflows.case.record import CaseRecord
    from workflows.case.retries import AWS_RETRY, HEARTBEAT_TIMEOUT

# How far before GuardDuty's first sighting the evidence slice of CloudTrail reaches: the
# compromise can precede the first call GuardDuty flagged, and instance role sessions
# live up to 12 hours.
EVIDENCE_LOOKBACK = timedelta(hours=24)
T = TypeVar("T")


@dataclass
class CollectedEvidence:
    """What the evidence phase learned that containment needs, and what it could not keep."""

    # Whether the instance was running; None when its capture failed.
    instance_running: bool | None = False
    # Whether the credential is a user's key Quench contains itself; `user` is its
    # capture, None when that failed.
    user_key: bool = False
    user: CaptureUserResult | None = None
    # Evidence steps that failed for good, each with why: containment goes ahead without
    # them, and its approver is told.
    missing: list[str] = field(default_factory=list)
    # Kept only what containment changes before the cut-off: the EBS snapshots still being
    # taken (awaited before the instance is stopped) and the account's trails still being
    # read (awaited before logging starts on those found stopped).
    cut_off_first: bool = False
    snapshots: "asyncio.Task[None] | None" = None
    trails: "asyncio.Task[None] | None" = None
    # What starts once the credential is cut off, or once containment waits on a person,
    # whichever is first (the rest of the evidence): each runs once.
    later: list[Callable[[], None]] = field(default_factory=list)
    # What starts once containment is done, or waits on a person (the investigation,
    # whose reads would compete with other cases' cut-offs).
    after_containment: list[Callable[[], None]] = field(default_factory=list)

    def start_later(self) -> None:
        """Start what waited for the cut-off."""
        waiting, self.later = self.later, []
        for start in waiting:
            start()

    def start_all(self) -> None:
        """Start everything still waiting: containment is done, or waits on a person."""
        self.start_later()
        waiting, self.after_containment = self.after_containment, []
        for start in waiting:
            start()


class Evidence:
    def __init__(self, record: CaseRecord, approvals: Approvals) -> None:
        self._record = record
        self._approvals = approvals

    def _containment_first(self) -> bool:
        """Whether a failed lookup or capture leaves containment to go ahead (cases
        recorded before asked a human to retry it, and waited)."""
        return workflow.patched(CONTAINMENT_FIRST_PATCH)

    async def resolve_principal(self, finding: Finding) -> Credential:
        """The principal behind the finding's access key. When IAM cannot say (a call
        denied, an API missing), the principal the finding names, flagged as not
        confirmed: a failed lookup must not leave the credential working."""

        def call() -> Awaitable[ResolvePrincipalResult]:
            return workflow.execute_activity_method(
                IamActivities.resolve_principal,
                self._record.in_account(ResolvePrincipalInput(finding=finding)),
                start_to_close_timeout=timedelta(minutes=2),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=AWS_RETRY,
                summary="Resolve the principal behind the access key",
            )

        if not self._containment_first():
            return (await self._approvals.attempt("resolve the principal", call)).credential
        try:
            resolved = await call()
        except ActivityError as err:
            failure = failure_detail(err)
        else:
            if resolved.hands_off and workflow.patched(HANDS_OFF_PATCH):
                self._record.status.hands_off = resolved.hands_off
                self._record.status.quench_own = resolved.quench_own
            return resolved.credential
        credential = named_by_finding(finding)
        named = credential.principal.arn or "no principal"
        self._record.needs_human(
            f"principal not confirmed: resolving it failed: {failure}; the case acts on "
            f"{named}, as the finding names it: check that it is the key's owner"
        )
        return credential

    async def collect(self, credential: Credential) -> CollectedEvidence:
        """Evidence before any change. A capture that fails for good is an open item with
        a retry of its own, and containment goes ahead without it."""
        principal = credential.principal
        collected = CollectedEvidence()
        await self._keep("store the finding", self._store_finding, collected)
        if principal.role_name:
            await self._keep(
                "capture the role's IAM state", self._role_capture(principal.role_name), collected
            )
        if self._user_key(credential):
            collected.user_key = True
            user_name = principal.user_name or ""
            users: dict[str, CaptureUserResult] = {}
            await self._keep(
                "capture the user's IAM state", self._user_capture(user_name, users), collected
            )
            collected.user = users.get(user_name)
        if principal.instance_id:
            instance_id = principal.instance_id
            collected.instance_running = None

            async def capture_instance() -> None:
                await self._capture_instance(instance_id, collected)

            await self._keep(
                f"capture instance {instance_id} and snapshot its volumes",
                capture_instance,
                collected,
            )
        await self._keep("capture the CloudTrail slice", self._slice_capture(credential), collected)
        if workflow.patched(TRAILS_PATCH):
            await self._keep("capture the account's trails", self._capture_trails, collected)
        return collected

    async def triage_cut_off_first(self, finding: Finding) -> tuple[Credential, CollectedEvidence]:
        """The principal resolved, and only what containment changes kept before the
        cut-off: the principal's IAM state and its instance's, captured at once and
        while the principal is resolved (they are reads, of the names the finding gives;
        anything resolving names otherwise is captured after). The EBS snapshots start
        as soon as the instance's volumes are known and are awaited only before the stop
        (a snapshot holds the volume as it was when CreateSnapshot was accepted). The
        finding, the CloudTrail slice and the account's trails are not changed by
        containment: they are kept from the cut-off on (`CollectedEvidence.later`), or
        from when containment first waits on a person."""
        record = self._record
        collected = CollectedEvidence(cut_off_first=True)
        captures: dict[str, asyncio.Task[None]] = {}
        users: dict[str, CaptureUserResult] = {}
        instances: dict[str, CaptureInstanceResult] = {}

        def capture(role: str | None, user: str | None, instance: str | None) -> None:
            if role and f"role {role}" not in captures:
                captures[f"role {role}"] = asyncio.create_task(
                    self._keep("capture the role's IAM state", self._role_capture(role), collected)
                )
            if user and f"user {user}" not in captures:
                captures[f"user {user}"] = asyncio.create_task(
                    self._keep(
                        "capture the user's IAM state", self._user_capture(user, users), collected
                    )
                )
            if instance and f"instance {instance}" not in captures:
                captures[f"instance {instance}"] = asyncio.create_task(
                    self._keep(
                        f"capture instance {instance}",
                        self._instance_capture(instance, instances),
                        collected,
                    )
                )

        named = named_by_finding(finding)
        capture(
            named.principal.role_name,
            named.principal.user_name if self._user_key(named) else None,
            _instance_named(finding) if named.principal.role_name else None,
        )
        credential = await self.resolve_principal(finding)
        record.status.credential = credential
        record.upsert_principal_attributes(credential)
        record.set_phase(Phase.EVIDENCE, "keeping what containment changes before the cut-off")
        principal = credential.principal
        collected.user_key = self._user_key(credential)
        user_name = principal.user_name if collected.user_key else None
        capture(principal.role_name, user_name, principal.instance_id)
        await asyncio.gather(*captures.values())
        if user_name:
            collected.user = users.get(user_name)
        instance_id = principal.instance_id
        instance = instances.get(instance_id) if instance_id else None
        if instance_id:
            collected.instance_running = None if instance is None else instance.state == "running"
        if instance_id and instance is not None and not record.dry_run:
            # Only the resolved principal's instance, once resolved: never one the finding
            # named that IAM does not confirm, nor Quench's own.
            volume_ids = instance.volume_ids

            async def snapshot() -> None:
                await self._snapshot_volumes(instance_id, volume_ids)

            collected.snapshots = self._approvals.alongside(
                self._keep("snapshot the instance's volumes", snapshot, collected)
            )
        collected.later.append(lambda: self._after_cut_off(credential, collected))
        return credential, collected

    def _after_cut_off(self, credential: Credential, collected: CollectedEvidence) -> None:
        """The evidence containment does not change, kept beside the rest of the case."""
        # Alongside the case: it closes only once each is kept, or its retry decided.
        alongside = self._approvals.alongside
        alongside(self._keep("store the finding", self._store_finding, collected))
        alongside(
            self._keep("capture the CloudTrail slice", self._slice_capture(credential), collected)
        )
        collected.trails = alongside(
            self._keep("capture the account's trails", self._capture_trails, collected)
        )

    def _instance_capture(
        self, instance_id: str, instances: dict[str, CaptureInstanceResult]
    ) -> Callable[[], Awaitable[None]]:
        """The instance's state (its snapshots wait for the principal to be resolved)."""

        async def capture_instance() -> None:
            # Its own record of whether the instance runs: `collected` holds the resolved
            # instance's.
            instances[instance_id] = await self._instance_state(instance_id, CollectedEvidence())

        return capture_instance

    @staticmethod
    def _user_key(credential: Credential) -> bool:
        """Whether the credential is a user's key Quench contains itself."""
        return bool(
            credential.kind is CredentialKind.IAM_USER_KEY
            and credential.principal.user_name
            and workflow.patched(USER_KEY_PATCH)
        )

    async def _store_finding(self) -> None:
        record = self._record
        finding = record.finding
        stored = await self._call_in(
            "store the finding",
            lambda: workflow.execute_activity_method(
                EvidenceActivities.store_evidence,
                StoreEvidenceInput(
                    case_id=record.status.folder,
                    name=f"finding-{_slug(finding.id)}",
                    document=finding.raw or finding.model_dump(mode="json"),
                    account_id=finding.account_id,
                ),
                start_to_close_timeout=timedelta(minutes=2),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=AWS_RETRY,
                summary="Store the GuardDuty finding",
            ),
        )
        record.record_evidence(stored)

    def _role_capture(self, role_name: str) -> Callable[[], Awaitable[None]]:
        record = self._record

        async def capture_role() -> None:
            role = await self._call_in(
                "capture the role's IAM state",
                lambda: workflow.execute_activity_method(
                    IamActivities.capture_role_state,
                    record.in_account(CaptureRoleInput(role_name=role_name)),
                    start_to_close_timeout=timedelta(minutes=5),
                    heartbeat_timeout=HEARTBEAT_TIMEOUT,
                    retry_policy=AWS_RETRY,
                    summary=f"Capture role {role_name}: policies, trust policy, profiles",
                ),
            )
            record.record_evidence(role)

        return capture_role

    def _user_capture(
        self, user_name: str, users: dict[str, CaptureUserResult]
    ) -> Callable[[], Awaitable[None]]:
        record = self._record

        async def capture_user() -> None:
            user = await self._call_in(
                "capture the user's IAM state",
                lambda: workflow.execute_activity_method(
                    IamActivities.capture_user_state,
                    record.in_account(CaptureUserInput(user_name=user_name)),
                    start_to_close_timeout=timedelta(minutes=5),
                    heartbeat_timeout=HEARTBEAT_TIMEOUT,
                    retry_policy=AWS_RETRY,
                    summary=f"Capture user {user_name}: keys, policies, groups, console access",
                ),
            )
            users[user_name] = user
            record.record_evidence(user.evidence)
            for policy in user.quarantine_policies:
                record.note(f"AWS quarantined the key with {policy}; it stays attached")

        return capture_user

    def _slice_capture(self, credential: Credential) -> Callable[[], Awaitable[None]]:
        """The CloudTrail records of the key, from a day before GuardDuty first saw it to
        now (the window is fixed when the step is made, so a retry reads the same)."""
        record = self._record
        finding = record.finding
        window_end = workflow.now()
        window_start = min(finding.first_seen, window_end) - EVIDENCE_LOOKBACK

        async def capture_slice() -> None:
            trail = await self._call_in(
                "capture the CloudTrail slice",
                lambda: workflow.execute_activity_method(
                    CloudTrailActivities.capture_cloudtrail_slice,
                    CloudTrailSliceInput(
                        case_id=record.status.folder,
                        account_id=finding.account_id,
                        access_key_id=credential.access_key_id,
                        start=window_start,
                        end=window_end,
                    ),
                    start_to_close_timeout=timedelta(minutes=30),
                    heartbeat_timeout=HEARTBEAT_TIMEOUT,
                    retry_policy=AWS_RETRY,
                    summary=f"CloudTrail records of {credential.access_key_id}",
                ),
            )
            record.record_evidence(trail.evidence)
            record.note(f"{trail.event_count} CloudTrail records of {credential.access_key_id}")

        return capture_slice

    async def _call_in(self, doing: str, call: Callable[[], Awaitable[T]]) -> T:
        """One activity of an evidence step: as it is when containment goes first (the
        step's failure is kept by `_keep`), else retried on a human's say-so."""
        if self._containment_first():
            return await call()
        return await self._approvals.attempt(doing, call)

    async def _keep(
        self, doing: str, step: Callable[[], Awaitable[None]], collected: CollectedEvidence
    ) -> None:
        """Run an evidence step; one that fails for good is an open item naming the call,
        and its retry is offered beside the case, so containment does not wait for it."""
        if not self._containment_first():
            await step()
            return
        try:
            await step()
        except ActivityError as err:
            failure = failure_detail(err)
            collected.missing.append(f"{doing}: {failure}")
            self._missed(doing, failure, step)

    def _missed(self, doing: str, failure: str, step: Callable[[], Awaitable[None]]) -> None:
        record = self._record
        item = f"evidence not kept: {doing}: {failure}"
        record.needs_human(item)

        async def then(action: Action, decision: Approval) -> None:
            ledger = self._approvals.ledger
            if decision.decision is Decision.REJECTED:
                ledger.finish(action, ActionStatus.REJECTED, decision.reason)
                return
            ledger.start(action)
            record.status.open_items.remove(item)
            try:
                await step()
            except ActivityError as err:
                ledger.finish(action, ActionStatus.FAILED, "failed again")
                self._missed(doing, failure_detail(err), step)
                return
            ledger.finish(action, ActionStatus.DONE, "kept")
            record.note(f"evidence kept on retry: {doing}")

        self._approvals.offer_beside(
            ActionKind.RETRY,
            f"Retry: {doing}",
            [
                f"It failed: {failure}",
                "Kept now, it shows the account as it is now, after any containment",
            ],
            then,
        )

    async def before_going_live(self, credential: Credential) -> None:
        """A dry run gone live: the instance's state and the EBS snapshots the dry run
        did not take, before the stop and start."""
        instance_id = credential.principal.instance_id
        if instance_id:
            await self._capture_instance(instance_id, CollectedEvidence(instance_running=False))

    async def _capture_instance(self, instance_id: str, collected: CollectedEvidence) -> None:
        """The instance's state and a snapshot of its volumes; whether it was running."""
        instance = await self._instance_state(instance_id, collected)
        if not self._record.dry_run:
            await self._snapshot_volumes(instance_id, instance.volume_ids)

    async def _instance_state(
        self, instance_id: str, collected: CollectedEvidence
    ) -> CaptureInstanceResult:
        """The instance's state kept; whether it was running. In a dry run, the snapshot
        it would take is said instead."""
        record = self._record
        instance = await self._call_in(
            "capture the instance",
            lambda: workflow.execute_activity_method(
                Ec2Activities.capture_instance_state,
                record.in_account(CaptureInstanceInput(instance_id=instance_id)),
                start_to_close_timeout=timedelta(minutes=5),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=AWS_RETRY,
                summary=f"Capture instance {instance_id}",
            ),
        )
        record.record_evidence(instance.evidence)
        if collected.instance_running is None:
            # The state before containment; a retry after it would see the stop+start.
            collected.instance_running = instance.state == "running"
        if record.dry_run:
            # A snapshot is a change in the account: the instance's state above is kept.
            record.would(
                "evidence",
                [
                    f"Snapshot the EBS volumes of {instance_id} "
                    f"({', '.join(instance.volume_ids) or 'none'}), tagged with the case"
                ],
            )
        return instance

    async def _snapshot_volumes(self, instance_id: str, volume_ids: list[str]) -> None:
        record = self._record
        snapshots = await self._call_in(
            "snapshot the instance's volumes",
            lambda: workflow.execute_activity_method(
                Ec2Activities.snapshot_volumes,
                record.in_account(
                    SnapshotVolumesInput(instance_id=instance_id, volume_ids=volume_ids)
                ),
                start_to_close_timeout=timedelta(minutes=10),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=AWS_RETRY,
                summary=f"Snapshot the EBS volumes of {instance_id} before the stop",
            ),
        )
        record.record_evidence(snapshots.evidence)

    async def _capture_trails(self) -> None:
        """Every trail's settings and status: what recovery restores, and which trails
        were found not logging."""
        record = self._record
        trails = await self._call_in(
            "capture the account's trails",
            lambda: workflow.execute_activity_method(
                RecoveryActivities.capture_trails,
                record.in_account(CaptureTrailsInput()),
                start_to_close_timeout=timedelta(minutes=5),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=AWS_RETRY,
                summary="Capture every trail's settings, status and event selectors",
            ),
        )
        record.record_evidence(trails.evidence)
        record.status.trails_found_stopped = trails.not_logging
        for name in trails.not_logging:
            record.note(f"trail {name} was not logging when the case opened")


def _instance_named(finding: Finding) -> str | None:
    """The instance whose role session the finding names: its own instance details, or a
    session named after an instance, as EC2 names the sessions it delivers."""
    session = session_name(finding.access_key.principal_id)
    return finding.instance_id or (session if session and session.startswith("i-") else None)


def _slug(value: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in value.lower())[:100]
