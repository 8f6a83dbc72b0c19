"""Triage and evidence (playbook 1): who the credential belongs to, and everything
containment could change, kept with its SHA-256 before any change is made."""

from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow

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
        SnapshotVolumesInput,
        StoreEvidenceInput,
    )
    from models.finding import Finding
    from models.principal import Credential, CredentialKind
    from workflows.case.approvals import Approvals
    from workflows.case.patches import TRAILS_PATCH, USER_KEY_PATCH
    from workflows.case.record import CaseRecord
    from workflows.case.retries import AWS_RETRY, HEARTBEAT_TIMEOUT

# How far before GuardDuty's first sighting the evidence slice of CloudTrail reaches: the
# compromise can precede the first call GuardDuty flagged, and instance role sessions
# live up to 12 hours.
EVIDENCE_LOOKBACK = timedelta(hours=24)


@dataclass
class CollectedEvidence:
    """What the evidence phase learned that containment needs."""

    instance_running: bool = False
    user: CaptureUserResult | None = None


class Evidence:
    def __init__(self, record: CaseRecord, approvals: Approvals) -> None:
        self._record = record
        self._approvals = approvals

    async def resolve_principal(self, finding: Finding) -> Credential:
        """The principal behind the finding's access key."""
        resolved = await self._approvals.attempt(
            "resolve the principal",
            lambda: workflow.execute_activity_method(
                IamActivities.resolve_principal,
                ResolvePrincipalInput(finding=finding),
                start_to_close_timeout=timedelta(minutes=2),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=AWS_RETRY,
                summary="Resolve the principal behind the access key",
            ),
        )
        return resolved.credential

    async def collect(self, credential: Credential) -> CollectedEvidence:
        """Evidence before any change."""
        record = self._record
        attempt = self._approvals.attempt
        case_id = record.status.case_id
        finding = record.finding
        principal = credential.principal
        collected = CollectedEvidence()
        record.record_evidence(
            await attempt(
                "store the finding",
                lambda: workflow.execute_activity_method(
                    EvidenceActivities.store_evidence,
                    StoreEvidenceInput(
                        case_id=case_id,
                        name=f"finding-{_slug(finding.id)}",
                        document=finding.raw or finding.model_dump(mode="json"),
                    ),
                    start_to_close_timeout=timedelta(minutes=2),
                    heartbeat_timeout=HEARTBEAT_TIMEOUT,
                    retry_policy=AWS_RETRY,
                    summary="Store the GuardDuty finding",
                ),
            )
        )
        if principal.role_name:
            role_name = principal.role_name
            record.record_evidence(
                await attempt(
                    "capture the role's IAM state",
                    lambda: workflow.execute_activity_method(
                        IamActivities.capture_role_state,
                        CaptureRoleInput(case_id=case_id, role_name=role_name),
                        start_to_close_timeout=timedelta(minutes=5),
                        heartbeat_timeout=HEARTBEAT_TIMEOUT,
                        retry_policy=AWS_RETRY,
                        summary=f"Capture role {role_name}: policies, trust policy, profiles",
                    ),
                )
            )
        if (
            credential.kind is CredentialKind.IAM_USER_KEY
            and principal.user_name
            and workflow.patched(USER_KEY_PATCH)
        ):
            user_name = principal.user_name
            collected.user = await attempt(
                "capture the user's IAM state",
                lambda: workflow.execute_activity_method(
                    IamActivities.capture_user_state,
                    CaptureUserInput(case_id=case_id, user_name=user_name),
                    start_to_close_timeout=timedelta(minutes=5),
                    heartbeat_timeout=HEARTBEAT_TIMEOUT,
                    retry_policy=AWS_RETRY,
                    summary=f"Capture user {user_name}: keys, policies, groups, console access",
                ),
            )
            record.record_evidence(collected.user.evidence)
            for policy in collected.user.quarantine_policies:
                record.note(f"AWS quarantined the key with {policy}; it stays attached")
        if principal.instance_id:
            collected.instance_running = await self._capture_instance(principal.instance_id)
        window_end = workflow.now()
        window_start = min(finding.first_seen, window_end) - EVIDENCE_LOOKBACK
        trail = await attempt(
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
        if workflow.patched(TRAILS_PATCH):
            await self._capture_trails()
        return collected

    async def _capture_instance(self, instance_id: str) -> bool:
        """The instance's state and a snapshot of its volumes; whether it was running."""
        record = self._record
        attempt = self._approvals.attempt
        case_id = record.status.case_id
        instance = await attempt(
            "capture the instance",
            lambda: workflow.execute_activity_method(
                Ec2Activities.capture_instance_state,
                CaptureInstanceInput(case_id=case_id, instance_id=instance_id),
                start_to_close_timeout=timedelta(minutes=5),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=AWS_RETRY,
                summary=f"Capture instance {instance_id}",
            ),
        )
        record.record_evidence(instance.evidence)
        snapshots = await attempt(
            "snapshot the instance's volumes",
            lambda: workflow.execute_activity_method(
                Ec2Activities.snapshot_volumes,
                SnapshotVolumesInput(
                    case_id=case_id, instance_id=instance_id, volume_ids=instance.volume_ids
                ),
                start_to_close_timeout=timedelta(minutes=10),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=AWS_RETRY,
                summary=f"Snapshot the EBS volumes of {instance_id} before the stop",
            ),
        )
        record.record_evidence(snapshots.evidence)
        return instance.state == "running"

    async def _capture_trails(self) -> None:
        """Every trail's settings and status: what recovery restores, and which trails
        were found not logging."""
        record = self._record
        case_id = record.status.case_id
        trails = await self._approvals.attempt(
            "capture the account's trails",
            lambda: workflow.execute_activity_method(
                RecoveryActivities.capture_trails,
                CaptureTrailsInput(case_id=case_id),
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
