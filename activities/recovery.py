"""Recovery (playbook 4): the trails as the case found them, and undoing what the attacker
changed in things it did not make: logging stopped, a trail deleted or narrowed, a role's
trust policy rewritten.

Planning only reads. A configuration is restored only to a version Quench can show the
origin of: the case's own evidence snapshot, taken before the change, or the last call
that set it in CloudTrail before the attacker's. Anything else goes to a human with what
to do. Each restore checks first and writes nothing when AWS already matches.
"""

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import unquote

from botocore.exceptions import ClientError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.aws import ERROR_INVALID_REQUEST, AwsClients, aws_errors, error_code
from activities.cloudtrail import CloudTrailSource, TrailQuery, record_time, scan
from activities.evidence import EvidenceStore, canonical_json
from models.activities import (
    CaptureTrailsInput,
    CaptureTrailsResult,
    PlanRecoveryInput,
    PlanRecoveryResult,
    RestoreChangeInput,
    RestoreChangeResult,
)
from models.case import EvidenceRecord, RecoveryOperation, RecoveryStep
from playbook.classify import AttackerChange, ChangeKind

TRAILS_EVIDENCE_NAME = "trails"
_TRAIL_GONE = {"TrailNotFoundException", "TrailNotFound"}
# The settings of a trail that CreateTrail and UpdateTrail take, as DescribeTrails names them.
_TRAIL_SETTINGS = {
    "S3BucketName": "S3BucketName",
    "S3KeyPrefix": "S3KeyPrefix",
    "SnsTopicName": "SnsTopicName",
    "IncludeGlobalServiceEvents": "IncludeGlobalServiceEvents",
    "IsMultiRegionTrail": "IsMultiRegionTrail",
    "LogFileValidationEnabled": "EnableLogFileValidation",
    "CloudWatchLogsLogGroupArn": "CloudWatchLogsLogGroupArn",
    "CloudWatchLogsRoleArn": "CloudWatchLogsRoleArn",
    "KmsKeyId": "KmsKeyId",
    "IsOrganizationTrail": "IsOrganizationTrail",
}


def trail_name(target: str) -> str:
    """A trail's name from a name or an ARN (…:trail/<name>)."""
    return target.rsplit("trail/", 1)[-1] if ":trail/" in target else target


def normalized_policy(document: Any) -> Any:
    """A policy document as a comparable value, whether IAM returned it parsed or
    URL-encoded, and whether CloudTrail recorded it as a string."""
    if isinstance(document, str):
        text = document.strip()
        document = json.loads(unquote(text) if text.startswith("%7B") else text)
    return json.loads(json.dumps(document, sort_keys=True))


class RecoveryActivities:
    def __init__(
        self, clients: AwsClients, evidence: EvidenceStore, source: CloudTrailSource
    ) -> None:
        self._clients = clients
        self._evidence = evidence
        self._source = source
        self._restorers: dict[RecoveryOperation, Callable[[RestoreChangeInput], str]] = {
            RecoveryOperation.START_LOGGING: self._start_logging,
            RecoveryOperation.RECREATE_TRAIL: self._recreate_trail,
            RecoveryOperation.RESTORE_EVENT_SELECTORS: self._restore_event_selectors,
            RecoveryOperation.RESTORE_TRAIL_SETTINGS: self._restore_trail_settings,
            RecoveryOperation.RESTORE_TRUST_POLICY: self._restore_trust_policy,
        }

    @property
    def _trail_api(self) -> Any:
        return self._clients.client("cloudtrail")

    # -- evidence ------------------------------------------------------------------------

    def _describe_trails(self) -> list[dict[str, Any]]:
        trails = []
        with aws_errors("describe the account's trails"):
            for trail in self._trail_api.describe_trails(includeShadowTrails=False)["trailList"]:
                name = trail["TrailARN"]
                status = self._trail_api.get_trail_status(Name=name)
                selectors = self._trail_api.get_event_selectors(TrailName=name)
                trails.append(
                    {
                        "trail": trail,
                        "is_logging": bool(status.get("IsLogging")),
                        "event_selectors": selectors.get("EventSelectors") or [],
                        "advanced_event_selectors": selectors.get("AdvancedEventSelectors") or [],
                    }
                )
        return trails

    @activity.defn
    def capture_trails(self, input: CaptureTrailsInput) -> CaptureTrailsResult:
        """Evidence: every trail's settings, logging status and event selectors, so a trail
        the attacker deletes or narrows later can be put back as it was."""
        trails = self._describe_trails()
        evidence = self._evidence.put_json(input.case_id, TRAILS_EVIDENCE_NAME, {"trails": trails})
        return CaptureTrailsResult(
            evidence=evidence,
            trails=[t["trail"]["Name"] for t in trails],
            not_logging=[t["trail"]["Name"] for t in trails if not t["is_logging"]],
        )

    def _snapshot(self, record: EvidenceRecord | None) -> list[dict[str, Any]]:
        """The trails from the case's evidence, checked against the hash it was stored with."""
        if record is None:
            return []
        return list(json.loads(self._evidence.read_verified(record)).get("trails", []))

    # -- planning ------------------------------------------------------------------------

    @activity.defn
    def plan_recovery(self, input: PlanRecoveryInput) -> PlanRecoveryResult:
        """For every change, the latest of each kind and target: how it is undone."""
        latest: dict[tuple[ChangeKind, str], AttackerChange] = {}
        for change in sorted(input.changes, key=lambda c: (c.event_time, c.event_id)):
            latest[(change.kind, trail_name(change.target))] = change
        snapshot = self._snapshot(input.trail_evidence)
        snapshot_at = input.trail_evidence.captured_at if input.trail_evidence else None
        steps = []
        for change in latest.values():
            before = _change_time(change)
            trail = next(
                (t for t in snapshot if t["trail"]["Name"] == trail_name(change.target)), None
            )
            # The snapshot shows the trail as it was before this change only if taken first.
            usable = trail if snapshot_at is not None and snapshot_at < before else None
            steps.append(self._plan_one(input, change, usable))
        return PlanRecoveryResult(steps=steps)

    def _plan_one(
        self, input: PlanRecoveryInput, change: AttackerChange, trail: dict[str, Any] | None
    ) -> RecoveryStep:
        name = trail_name(change.target)
        who = f"{change.made_by} at {change.event_time}"
        snapshot_source = f"evidence {input.trail_evidence.uri}" if input.trail_evidence else None
        if change.kind is ChangeKind.LOGGING_STOPPED:
            return RecoveryStep(
                change=change,
                operation=RecoveryOperation.START_LOGGING,
                description=f"Start logging on trail {name} (stopped by {who})",
            )
        if change.kind is ChangeKind.TRAIL_DELETED:
            if trail is not None:
                return RecoveryStep(
                    change=change,
                    operation=RecoveryOperation.RECREATE_TRAIL,
                    description=f"Recreate trail {name} (deleted by {who}) as the evidence "
                    "snapshot shows it, with its event selectors, and start logging",
                    restore_to=trail,
                    source=snapshot_source,
                )
            return self._manual(
                change,
                f"Trail {name} was deleted by {who}, before any snapshot of it: recreate it "
                "from your infrastructure code (aws cloudtrail create-trail, put-event-"
                "selectors, start-logging) and check nothing else logs in its place",
            )
        if change.kind is ChangeKind.EVENT_SELECTORS:
            if trail is not None:
                selectors = {
                    "EventSelectors": trail["event_selectors"],
                    "AdvancedEventSelectors": trail["advanced_event_selectors"],
                }
                return RecoveryStep(
                    change=change,
                    operation=RecoveryOperation.RESTORE_EVENT_SELECTORS,
                    description=f"Restore the event selectors of trail {name} (changed by "
                    f"{who}) from the evidence snapshot",
                    restore_to=selectors,
                    source=snapshot_source,
                )
            prior = self._prior_call(input, change, name, {"PutEventSelectors"})
            if prior is not None:
                request = prior["requestParameters"]
                return RecoveryStep(
                    change=change,
                    operation=RecoveryOperation.RESTORE_EVENT_SELECTORS,
                    description=f"Restore the event selectors of trail {name} (changed by "
                    f"{who}) to those set before",
                    restore_to={
                        "EventSelectors": _pascal(request.get("eventSelectors") or []),
                        "AdvancedEventSelectors": _pascal(
                            request.get("advancedEventSelectors") or []
                        ),
                    },
                    source=_describe_record(prior),
                )
            return self._manual(
                change,
                f"The event selectors of trail {name} were changed by {who} and no earlier "
                "version is known: set them back from your infrastructure code (at least all "
                "management events, read and write)",
            )
        if change.kind is ChangeKind.TRAIL_UPDATED:
            if trail is not None:
                return RecoveryStep(
                    change=change,
                    operation=RecoveryOperation.RESTORE_TRAIL_SETTINGS,
                    description=f"Restore the settings of trail {name} (changed by {who}) "
                    "from the evidence snapshot",
                    restore_to={
                        ours: trail["trail"][theirs]
                        for theirs, ours in _TRAIL_SETTINGS.items()
                        if theirs in trail["trail"] and ours != "IsOrganizationTrail"
                    },
                    source=snapshot_source,
                )
            return self._manual(
                change,
                f"Trail {name} was updated by {who} and no earlier version is known: check "
                "its bucket, prefix, regions and log file validation against your "
                "infrastructure code",
            )
        if change.kind is ChangeKind.TRUST_POLICY:
            return self._plan_trust_policy(input, change)
        return self._manual(
            change,
            f"The code of function {change.target} was replaced by {who}: redeploy it from "
            "its source of record and review what it ran in the meantime (its logs)",
        )

    def _plan_trust_policy(self, input: PlanRecoveryInput, change: AttackerChange) -> RecoveryStep:
        role = change.target
        who = f"{change.made_by} at {change.event_time}"
        prior = self._prior_call(input, change, role, {"CreateRole", "UpdateAssumeRolePolicy"})
        if prior is None:
            return self._manual(
                change,
                f"The trust policy of role {role} was rewritten by {who} and no earlier "
                "version is in CloudTrail: set it back from your infrastructure code; until "
                "then, review who it lets assume the role",
            )
        request = prior["requestParameters"]
        document = request.get("policyDocument") or request.get("assumeRolePolicyDocument")
        return RecoveryStep(
            change=change,
            operation=RecoveryOperation.RESTORE_TRUST_POLICY,
            description=f"Restore the trust policy of role {role} (rewritten by {who}) to the "
            f"version set before it",
            restore_to=normalized_policy(document),
            source=_describe_record(prior),
        )

    def _prior_call(
        self, input: PlanRecoveryInput, change: AttackerChange, resource: str, events: set[str]
    ) -> dict[str, Any] | None:
        """The last call, by anyone but the attacker's credential, that set this resource's
        configuration before the attacker's change."""
        before = _change_time(change)
        query = TrailQuery(
            input.account_id,
            frozenset(),
            before - timedelta(seconds=input.lookback_seconds),
            before,
            resource_name=resource,
            event_names=frozenset(events),
        )
        earlier = [
            r
            for r in scan(self._source, query)
            if not r.get("errorCode")
            and r.get("eventID") != change.event_id
            and r.get("userIdentity", {}).get("accessKeyId") != change.made_by
            and record_time(r) < before
        ]
        return earlier[-1] if earlier else None

    @staticmethod
    def _manual(change: AttackerChange, what: str) -> RecoveryStep:
        return RecoveryStep(change=change, description=what, manual=what, outcome="manual")

    # -- restoring -----------------------------------------------------------------------

    @activity.defn
    def restore_change(self, input: RestoreChangeInput) -> RestoreChangeResult:
        operation = input.step.operation
        restorer = self._restorers.get(operation) if operation else None
        if restorer is None:
            raise ApplicationError(
                f"recovery step has no automatic restore: {input.step.description}",
                type=ERROR_INVALID_REQUEST,
                non_retryable=True,
            )
        before: EvidenceRecord | None = None
        if operation is RecoveryOperation.RESTORE_TRUST_POLICY:
            before = self._keep_trust_policy(input)
        with aws_errors(input.step.description):
            detail = restorer(input)
        outcome = "already_restored" if detail.startswith("already") else "restored"
        return RestoreChangeResult(outcome=outcome, detail=detail, evidence=before)

    def _trail_status(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(self._trail_api.get_trail_status(Name=name))
        except ClientError as exc:
            if error_code(exc) in _TRAIL_GONE:
                return None
            raise

    def _start_logging(self, input: RestoreChangeInput) -> str:
        name = trail_name(input.step.change.target)
        status = self._trail_status(name)
        if status is None:
            raise ApplicationError(
                f"trail {name} no longer exists: it must be recreated first",
                type=ERROR_INVALID_REQUEST,
                non_retryable=True,
            )
        if status.get("IsLogging"):
            return f"already logging: trail {name}"
        self._trail_api.start_logging(Name=name)
        return f"trail {name} is logging again"

    def _recreate_trail(self, input: RestoreChangeInput) -> str:
        snapshot = input.step.restore_to or {}
        trail = snapshot["trail"]
        name = trail["Name"]
        done = []
        if self._trail_status(name) is None:
            settings = {
                ours: trail[theirs]
                for theirs, ours in _TRAIL_SETTINGS.items()
                if theirs in trail and trail[theirs] not in (None, "")
            }
            self._trail_api.create_trail(Name=name, **settings)
            done.append("recreated")
        selectors = {
            "EventSelectors": snapshot.get("event_selectors") or [],
            "AdvancedEventSelectors": snapshot.get("advanced_event_selectors") or [],
        }
        if self._put_selectors(name, selectors):
            done.append("event selectors restored")
        status = self._trail_status(name) or {}
        if snapshot.get("is_logging", True) and not status.get("IsLogging"):
            self._trail_api.start_logging(Name=name)
            done.append("logging started")
        if not done:
            return f"already as before: trail {name}"
        return f"trail {name}: {', '.join(done)}"

    def _put_selectors(self, name: str, selectors: dict[str, Any]) -> bool:
        current = self._trail_api.get_event_selectors(TrailName=name)
        if selectors.get("AdvancedEventSelectors"):
            wanted = {"AdvancedEventSelectors": selectors["AdvancedEventSelectors"]}
        elif selectors.get("EventSelectors"):
            wanted = {"EventSelectors": selectors["EventSelectors"]}
        else:
            return False
        key = next(iter(wanted))
        if canonical_json(current.get(key) or []) == canonical_json(wanted[key]):
            return False
        self._trail_api.put_event_selectors(TrailName=name, **wanted)
        return True

    def _restore_event_selectors(self, input: RestoreChangeInput) -> str:
        name = trail_name(input.step.change.target)
        if self._put_selectors(name, input.step.restore_to or {}):
            return f"event selectors of trail {name} restored"
        return f"already as before: event selectors of trail {name}"

    def _restore_trail_settings(self, input: RestoreChangeInput) -> str:
        name = trail_name(input.step.change.target)
        wanted = input.step.restore_to or {}
        trails = self._trail_api.describe_trails(trailNameList=[name])["trailList"]
        if not trails:
            raise ApplicationError(
                f"trail {name} no longer exists", type=ERROR_INVALID_REQUEST, non_retryable=True
            )
        current = {ours: trails[0].get(theirs) for theirs, ours in _TRAIL_SETTINGS.items()}
        if all(current.get(k) == v for k, v in wanted.items()):
            return f"already as before: settings of trail {name}"
        self._trail_api.update_trail(Name=name, **wanted)
        return f"settings of trail {name} restored"

    def _current_trust_policy(self, role: str) -> Any:
        return normalized_policy(
            self._clients.client("iam").get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]
        )

    def _keep_trust_policy(self, input: RestoreChangeInput) -> EvidenceRecord:
        """The attacker's trust policy goes to evidence before it is overwritten."""
        role = input.step.change.target
        with aws_errors(f"read the trust policy of {role}"):
            current = self._current_trust_policy(role)
        return self._evidence.put_json(
            input.case_id,
            f"trust-policy-{role.lower()}-before-restore",
            {"role": role, "change": input.step.change.model_dump(), "document": current},
        )

    def _restore_trust_policy(self, input: RestoreChangeInput) -> str:
        role = input.step.change.target
        wanted = normalized_policy(input.step.restore_to)
        if self._current_trust_policy(role) == wanted:
            return f"already as before: trust policy of role {role}"
        self._clients.client("iam").update_assume_role_policy(
            RoleName=role, PolicyDocument=json.dumps(wanted)
        )
        return f"trust policy of role {role} restored"


def _change_time(change: AttackerChange) -> datetime:
    return datetime.fromisoformat(change.event_time.replace("Z", "+00:00"))


def _describe_record(record: dict[str, Any]) -> str:
    identity = record.get("userIdentity", {})
    who = identity.get("arn") or identity.get("accessKeyId") or "unknown"
    name, event_id, at = record.get("eventName"), record.get("eventID"), record.get("eventTime")
    return f"CloudTrail {name} {event_id} by {who} at {at}"


def _pascal(value: Any) -> Any:
    """CloudTrail's lowerCamelCase request shapes as the API's PascalCase."""
    if isinstance(value, dict):
        return {(k[:1].upper() + k[1:]): _pascal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_pascal(v) for v in value]
    return value
