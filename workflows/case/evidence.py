"""Triage and evidence (playbook 1): who the credential belongs to, and everything
containment could change, kept with its SHA-256 before any change is made."""

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
    from models.case import Action, ActionKind, ActionStatus, Approval, Decision
    from models.finding import Finding
    from models.principal import Credential, CredentialKind
    from playbook.principal import named_by_finding
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
        record = self._record
        case_id = record.status.folder
        finding = record.finding
        principal = credential.principal
        collected = CollectedEvidence()
        run = self._call_in

        async def store_finding() -> None:
            stored = await run(
                "store the finding",
                lambda: workflow.execute_activity_method(
                    EvidenceActivities.store_evidence,
                    StoreEvidenceInput(
                        case_id=case_id,
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

        await self._keep("store the finding", store_finding, collected)
        if principal.role_name:
            role_name = principal.role_name

            async def capture_role() -> None:
                role = await run(
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

            await self._keep("capture the role's IAM state", capture_role, collected)
        if (
            credential.kind is CredentialKind.IAM_USER_KEY
            and principal.user_name
            and workflow.patched(USER_KEY_PATCH)
        ):
            user_name = principal.user_name
            collected.user_key = True

            async def capture_user() -> None:
                user = await run(
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
                collected.user = user
                record.record_evidence(user.evidence)
                for policy in user.quarantine_policies:
                    record.note(f"AWS quarantined the key with {policy}; it stays attached")

            await self._keep("capture the user's IAM state", capture_user, collected)
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
        window_end = workflow.now()
        window_start = min(finding.first_seen, window_end) - EVIDENCE_LOOKBACK

        async def capture_slice() -> None:
            trail = await run(
                "capture the CloudTrail slice",
                lambda: workflow.execute_activity_method(
                    CloudTrailActivities.capture_cloudtrail_slice,
                    CloudTrailSliceInput(
                        case_id=case_id,
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

        await self._keep("capture the CloudTrail slice", capture_slice, collected)
        if workflow.patched(TRAILS_PATCH):
            await self._keep("capture the account's trails", self._capture_trails, collected)
        return collected

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
        record = self._record
        run = self._call_in
        instance = await run(
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
            return
        snapshots = await run(
            "snapshot the instance's volumes",
            lambda: workflow.execute_activity_method(
                Ec2Activities.snapshot_volumes,
                record.in_account(
                    SnapshotVolumesInput(instance_id=instance_id, volume_ids=instance.volume_ids)
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


def _slug(value: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in value.lower())[:100]
