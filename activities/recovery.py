"""Recovery (playbook 4): the trails as the case found them, and undoing what the attacker
changed in things it did not make: logging stopped, a trail deleted or narrowed, a role's
trust policy rewritten, a user's or role's policies replaced, deleted or detached, a
managed policy given a new default version.

Planning only reads. A configuration is restored only to a version Quench can show the
origin of: the case's own evidence snapshot, taken before the change, or the last call
that set it in CloudTrail before the attacker's. Anything else goes to a human with what
to do. Each restore checks first and writes nothing when AWS already matches.
"""

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import unquote

from botocore.exceptions import ClientError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.aws import (
    ERROR_INVALID_REQUEST,
    AwsClients,
    aws_errors,
    error_code,
    is_denied,
    to_application_error,
)
from activities.cloudtrail import CloudTrailSource, TrailQuery, record_time, scan
from activities.evidence import EvidenceStore, canonical_json
from activities.hands_off import refuse_if_hands_off
from activities.liveness import heartbeating
from models.activities import (
    CaptureTrailsInput,
    CaptureTrailsResult,
    FindPriorStateInput,
    FindPriorStateResult,
    PlanRecoveryInput,
    PlanRecoveryResult,
    PriorState,
    RestoreChangeInput,
    RestoreChangeResult,
    StartTrailsLoggingInput,
    StartTrailsLoggingResult,
)
from models.case import EvidenceRecord, RecoveryOperation, RecoveryStep
from playbook.classify import AttackerChange, AttackerResource, ChangeKind, ResourceKind

TRAILS_EVIDENCE_NAME = "trails"
_TRAIL_GONE = {"TrailNotFoundException", "TrailNotFound"}
_IAM_GONE = {"NoSuchEntity"}
_USER_KINDS = {
    ResourceKind.USER_INLINE_POLICY,
    ResourceKind.USER_POLICY_ATTACHMENT,
    ChangeKind.USER_POLICY,
    ChangeKind.USER_POLICY_DETACHED,
}
_INLINE_KINDS = {
    ResourceKind.USER_INLINE_POLICY,
    ResourceKind.ROLE_INLINE_POLICY,
    ChangeKind.USER_POLICY,
    ChangeKind.ROLE_POLICY,
}
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


# Restores that change a user or a role (the change's target names it).
_PRINCIPAL_RESTORES = frozenset(
    {
        RecoveryOperation.RESTORE_TRUST_POLICY,
        RecoveryOperation.RESTORE_INLINE_POLICY,
        RecoveryOperation.REATTACH_POLICY,
    }
)


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
            RecoveryOperation.RESTORE_INLINE_POLICY: self._restore_inline_policy,
            RecoveryOperation.REATTACH_POLICY: self._reattach_policy,
            RecoveryOperation.RESTORE_POLICY_VERSION: self._restore_policy_version,
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
    @heartbeating
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
    @heartbeating
    def plan_recovery(self, input: PlanRecoveryInput) -> PlanRecoveryResult:
        """For every change, the latest of each kind and target: how it is undone. A
        user's or role's permissions go back to how they were before the first change."""
        latest: dict[tuple[ChangeKind, str, str], AttackerChange] = {}
        first: dict[tuple[ChangeKind, str, str], AttackerChange] = {}
        made_versions: dict[str, list[str]] = {}
        for change in sorted(input.changes, key=lambda c: (c.event_time, c.event_id)):
            key: tuple[ChangeKind, str, str] = (
                change.kind,
                trail_name(change.target),
                # A policy's versions are undone together.
                "" if change.kind is ChangeKind.POLICY_VERSION else change.detail,
            )
            if change.kind is ChangeKind.POLICY_VERSION and change.detail:
                made_versions.setdefault(change.target, []).append(change.detail)
            latest[key] = change
            first.setdefault(key, change)
        snapshot = self._snapshot(input.trail_evidence)
        snapshot_at = input.trail_evidence.captured_at if input.trail_evidence else None
        steps = []
        for key, change in latest.items():
            if change.kind in _PERMISSION_CHANGES:
                # A user's or role's permissions as they were before the attacker's first
                # change to them.
                steps.append(
                    self._plan_permissions(input, first[key], made_versions.get(change.target))
                )
                continue
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

    # -- permissions: what was there before the attacker wrote -----------------------

    @activity.defn
    @heartbeating
    def find_prior_state(self, input: FindPriorStateInput) -> FindPriorStateResult:
        """For each policy the attacker put on or attached to a user or role it did not
        make: whether that policy was there before, from CloudTrail and the principal's
        age. Only reads."""
        attacker = frozenset(input.attacker_keys) | {r.made_by for r in input.resources}
        # One read of CloudTrail for each user or role, however many of its policies: with
        # the S3 source a look-back reads every log file of the window.
        histories: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for (noun, owner), times in _windows(input.resources).items():
            earliest, latest = min(times), max(times)
            histories[(noun, owner)] = self._calls_before(
                input.account_id,
                owner,
                {f"{verb}{noun}Policy" for verb in ("Put", "Delete", "Attach", "Detach")}
                | {f"Create{noun}"},
                latest,
                input.lookback_seconds + int((latest - earliest).total_seconds()),
                attacker,
            )
        states = []
        for resource in input.resources:
            owner = resource.owner or ""
            state, source, _ = self._policy_before(
                input.account_id,
                resource.kind,
                owner,
                resource.name,
                _resource_time(resource),
                input.lookback_seconds,
                attacker,
                history=histories[(_noun(resource.kind), owner)],
            )
            states.append(PriorState(resource=resource, state=state, source=source))
        return FindPriorStateResult(states=states)

    def _policy_before(
        self,
        account_id: str,
        kind: str,
        owner: str,
        policy: str,
        before: datetime,
        lookback_seconds: int,
        attacker_keys: frozenset[str],
        history: list[dict[str, Any]] | None = None,
    ) -> tuple[Literal["existed", "absent", "unknown"], str, dict[str, Any] | None]:
        """Whether a user's or role's inline policy (by name) or managed policy (by ARN)
        was there just before `before`: the last call by anyone but the attacker that put,
        attached, deleted or detached it, or made the user or role; failing those, the
        principal's creation date. Returns the state, what it rests on, and the record.
        `history` is the principal's calls already read, if they were."""
        noun = _noun(kind)
        inline = kind in _INLINE_KINDS
        added, removed = ("Put", "Delete") if inline else ("Attach", "Detach")
        field = "policyName" if inline else "policyArn"
        created = f"Create{noun}"
        events = {f"{added}{noun}Policy", f"{removed}{noun}Policy", created}
        window_start = before - timedelta(seconds=lookback_seconds)
        if history is None:
            history = self._calls_before(
                account_id, owner, events, before, lookback_seconds, attacker_keys
            )
        relevant = [
            r
            for r in history
            if r.get("eventName") in events
            and window_start <= record_time(r) < before
            and (
                r.get("eventName") == created
                or (r.get("requestParameters") or {}).get(field) == policy
            )
        ]
        if relevant:
            last = relevant[-1]
            state: Literal["existed", "absent"] = (
                "existed" if str(last.get("eventName", "")).startswith(added) else "absent"
            )
            return state, _describe_record(last), last
        iam = self._clients.client("iam")
        try:
            if noun == "User":
                made = iam.get_user(UserName=owner)["User"]["CreateDate"]
            else:
                made = iam.get_role(RoleName=owner)["Role"]["CreateDate"]
        except ClientError as exc:
            if error_code(exc) in _IAM_GONE:
                return "absent", f"{noun.lower()} {owner} no longer exists", None
            if not is_denied(exc):
                raise
            # One denied read leaves this policy unknown, not the whole round waiting.
            denied = to_application_error(exc, f"read when {noun.lower()} {owner} was made")
            return "unknown", denied.message, None
        days = lookback_seconds // 86400
        if made >= window_start:
            return (
                "absent",
                f"{noun.lower()} {owner} was made {made.isoformat()}, inside the {days}-day "
                "window, and nobody else gave it this policy since",
                None,
            )
        return (
            "unknown",
            f"{noun.lower()} {owner} is older than the {days}-day CloudTrail window searched",
            None,
        )

    def _plan_permissions(
        self, input: PlanRecoveryInput, change: AttackerChange, made_versions: list[str] | None
    ) -> RecoveryStep:
        who = f"{change.made_by} at {change.event_time}"
        attacker = frozenset(input.attacker_keys) | {change.made_by}
        if change.kind is ChangeKind.POLICY_VERSION:
            return self._plan_policy_version(input, change, made_versions or [], attacker)
        noun = _noun(change.kind).lower()
        owner, policy = change.target, change.detail
        inline = change.kind in _INLINE_KINDS
        what = (
            f"inline policy {policy} of {noun} {owner}"
            if inline
            else f"managed policy {policy} on {noun} {owner}"
        )
        state, source, record = self._policy_before(
            input.account_id,
            change.kind,
            owner,
            policy,
            _change_time(change),
            input.lookback_seconds,
            attacker,
        )
        if state == "absent":
            return RecoveryStep(
                change=change,
                description=f"Nothing to restore: {what} was not there before {who} ({source})",
                source=source,
                outcome="not_needed",
            )
        if not inline:
            # The attacker's detach shows the policy was attached; others' history agrees,
            # or goes back too little to say who attached it.
            return RecoveryStep(
                change=change,
                operation=RecoveryOperation.REATTACH_POLICY,
                description=f"Attach {what} again (detached by {who})",
                source=source,
            )
        if state == "unknown" or record is None:
            return self._manual(
                change,
                f"The {what} was replaced or deleted by {who}, and its earlier version is not "
                f"in CloudTrail ({source}): put it back from your infrastructure code",
            )
        document = (record.get("requestParameters") or {}).get("policyDocument")
        return RecoveryStep(
            change=change,
            operation=RecoveryOperation.RESTORE_INLINE_POLICY,
            description=f"Restore {what} (replaced or deleted by {who}) to the version set "
            "before it",
            restore_to={"document": normalized_policy(document)},
            source=source,
        )

    def _plan_policy_version(
        self,
        input: PlanRecoveryInput,
        change: AttackerChange,
        made_versions: list[str],
        attacker: frozenset[str],
    ) -> RecoveryStep:
        """A managed policy's default version back to the one before the attacker's first
        change; the versions the attacker made are deleted."""
        arn, who = change.target, f"{change.made_by} at {change.event_time}"
        before = _change_time(change)
        earlier = [
            r
            for r in self._calls_before(
                input.account_id,
                arn,
                {"CreatePolicyVersion", "SetDefaultPolicyVersion"},
                before,
                input.lookback_seconds,
                attacker,
            )
            if _default_version_set(r)
        ]
        if earlier:
            default, source = _default_version_set(earlier[-1]), _describe_record(earlier[-1])
        else:
            try:
                versions = self._clients.client("iam").list_policy_versions(PolicyArn=arn)
            except ClientError as exc:
                if error_code(exc) in _IAM_GONE:
                    return RecoveryStep(
                        change=change,
                        description=f"Nothing to restore: policy {arn} no longer exists",
                        outcome="not_needed",
                    )
                raise
            theirs = [
                v["VersionId"] for v in versions["Versions"] if v["VersionId"] not in made_versions
            ]
            if len(theirs) != 1:
                return self._manual(
                    change,
                    f"The default version of policy {arn} was changed by {who}, and which "
                    f"version was the default before is not in CloudTrail: choose among "
                    f"{', '.join(theirs) or 'no remaining version'} with your "
                    "infrastructure code, and delete "
                    f"{', '.join(made_versions) or 'nothing else'}",
                )
            default, source = theirs[0], f"the only version of {arn} the attacker did not make"
        return RecoveryStep(
            change=change,
            operation=RecoveryOperation.RESTORE_POLICY_VERSION,
            description=f"Make {default} the default version of policy {arn} again (changed "
            f"by {who})"
            + (
                f" and delete the versions the attacker made ({', '.join(made_versions)})"
                if made_versions
                else ""
            ),
            restore_to={"default_version": default, "delete_versions": made_versions},
            source=source,
        )

    def _prior_call(
        self, input: PlanRecoveryInput, change: AttackerChange, resource: str, events: set[str]
    ) -> dict[str, Any] | None:
        """The last call, by anyone but the attacker's credentials, that set this
        resource's configuration before the attacker's change."""
        earlier = self._calls_before(
            input.account_id,
            resource,
            events,
            _change_time(change),
            input.lookback_seconds,
            frozenset({change.made_by, *input.attacker_keys}),
        )
        return earlier[-1] if earlier else None

    def _calls_before(
        self,
        account_id: str,
        resource: str,
        events: set[str],
        before: datetime,
        lookback_seconds: int,
        attacker_keys: frozenset[str],
    ) -> list[dict[str, Any]]:
        """The successful calls of `events` on a resource, by anyone but the attacker, in
        the window searched before `before`, oldest first."""
        query = TrailQuery(
            account_id,
            frozenset(),
            before - timedelta(seconds=lookback_seconds),
            before,
            resource_name=resource,
            event_names=frozenset(events),
        )
        return [
            r
            for r in scan(self._source, query)
            if not r.get("errorCode")
            and r.get("userIdentity", {}).get("accessKeyId") not in attacker_keys
            and record_time(r) < before
        ]

    @staticmethod
    def _manual(change: AttackerChange, what: str) -> RecoveryStep:
        return RecoveryStep(change=change, description=what, manual=what, outcome="manual")

    # -- restoring -----------------------------------------------------------------------

    @activity.defn
    @heartbeating
    def restore_change(self, input: RestoreChangeInput) -> RestoreChangeResult:
        operation = input.step.operation
        restorer = self._restorers.get(operation) if operation else None
        if restorer is None:
            raise ApplicationError(
                f"recovery step has no automatic restore: {input.step.description}",
                type=ERROR_INVALID_REQUEST,
                non_retryable=True,
            )
        if operation in _PRINCIPAL_RESTORES:
            # A user's or role's policies put back: never Quench's own, nor a protected one.
            target = input.step.change.target
            refuse_if_hands_off(
                self._clients,
                input,
                f"restore {operation.value}",
                user_name=target,
                role_name=target,
            )
        before: EvidenceRecord | None = None
        if operation is RecoveryOperation.RESTORE_TRUST_POLICY:
            before = self._keep_trust_policy(input)
        elif operation is RecoveryOperation.RESTORE_INLINE_POLICY:
            before = self._keep_inline_policy(input)
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

    def _logging_status(self, name: str) -> dict[str, Any] | None:
        """The trail's status before starting it, or None when it is gone. A denied read
        gives an unknown status: StartLogging on a trail that logs already changes nothing,
        so a trail is never left off for want of reading whether it is on."""
        try:
            return self._trail_status(name)
        except ClientError as exc:
            if not is_denied(exc):
                raise
            return {"IsLogging": None}

    def _start(self, name: str) -> bool:
        """StartLogging; False when the trail is gone."""
        try:
            self._trail_api.start_logging(Name=name)
        except ClientError as exc:
            if error_code(exc) in _TRAIL_GONE:
                return False
            raise
        return True

    @activity.defn
    @heartbeating
    def start_trails_logging(self, input: StartTrailsLoggingInput) -> StartTrailsLoggingResult:
        """Logging started again on trails found stopped, before the containment watch reads
        their files (a trail off writes nothing). One already logging, or gone, is said so."""
        result = StartTrailsLoggingResult()
        for name in input.trail_names:
            with aws_errors(f"start logging on trail {name}"):
                status = self._logging_status(name)
                if status is None:
                    result.missing.append(name)
                elif status.get("IsLogging"):
                    result.already_logging.append(name)
                elif self._start(name):
                    result.started.append(name)
                else:
                    result.missing.append(name)
        return result

    def _start_logging(self, input: RestoreChangeInput) -> str:
        name = trail_name(input.step.change.target)
        status = self._logging_status(name)
        if status is not None and status.get("IsLogging"):
            return f"already logging: trail {name}"
        if status is None or not self._start(name):
            raise ApplicationError(
                f"trail {name} no longer exists: it must be recreated first",
                type=ERROR_INVALID_REQUEST,
                non_retryable=True,
            )
        if status.get("IsLogging") is None:
            return f"trail {name} is logging (its status could not be read; started anyway)"
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

    # -- permissions ----------------------------------------------------------------

    def _inline_policy(self, kind: ChangeKind, owner: str, policy: str) -> Any | None:
        iam = self._clients.client("iam")
        try:
            if kind in _USER_KINDS:
                document = iam.get_user_policy(UserName=owner, PolicyName=policy)
            else:
                document = iam.get_role_policy(RoleName=owner, PolicyName=policy)
        except ClientError as exc:
            if error_code(exc) in _IAM_GONE:
                return None
            raise
        return normalized_policy(document["PolicyDocument"])

    def _keep_inline_policy(self, input: RestoreChangeInput) -> EvidenceRecord | None:
        """The attacker's version of an inline policy goes to evidence before it is
        overwritten; a deleted one has none to keep."""
        change = input.step.change
        with aws_errors(f"read inline policy {change.detail} of {change.target}"):
            current = self._inline_policy(change.kind, change.target, change.detail)
        if current is None:
            return None
        return self._evidence.put_json(
            input.case_id,
            f"{change.kind.value}-{change.target.lower()}-{change.detail.lower()}-before-restore",
            {
                "owner": change.target,
                "policy": change.detail,
                "change": change.model_dump(),
                "document": current,
            },
        )

    def _restore_inline_policy(self, input: RestoreChangeInput) -> str:
        change = input.step.change
        owner, policy = change.target, change.detail
        wanted = normalized_policy((input.step.restore_to or {})["document"])
        if self._inline_policy(change.kind, owner, policy) == wanted:
            return f"already as before: inline policy {policy} of {owner}"
        iam = self._clients.client("iam")
        if change.kind in _USER_KINDS:
            iam.put_user_policy(
                UserName=owner, PolicyName=policy, PolicyDocument=json.dumps(wanted)
            )
        else:
            iam.put_role_policy(
                RoleName=owner, PolicyName=policy, PolicyDocument=json.dumps(wanted)
            )
        return f"inline policy {policy} of {owner} restored"

    def _reattach_policy(self, input: RestoreChangeInput) -> str:
        change = input.step.change
        owner, arn = change.target, change.detail
        iam = self._clients.client("iam")
        if change.kind in _USER_KINDS:
            attached = iam.list_attached_user_policies(UserName=owner)["AttachedPolicies"]
        else:
            attached = iam.list_attached_role_policies(RoleName=owner)["AttachedPolicies"]
        if any(p["PolicyArn"] == arn for p in attached):
            return f"already as before: {arn} attached to {owner}"
        if change.kind in _USER_KINDS:
            iam.attach_user_policy(UserName=owner, PolicyArn=arn)
        else:
            iam.attach_role_policy(RoleName=owner, PolicyArn=arn)
        return f"{arn} attached to {owner} again"

    def _restore_policy_version(self, input: RestoreChangeInput) -> str:
        arn = input.step.change.target
        wanted = input.step.restore_to or {}
        default, made = wanted["default_version"], list(wanted.get("delete_versions") or [])
        iam = self._clients.client("iam")
        versions = {v["VersionId"]: v for v in iam.list_policy_versions(PolicyArn=arn)["Versions"]}
        done = []
        if not versions.get(default, {}).get("IsDefaultVersion"):
            iam.set_default_policy_version(PolicyArn=arn, VersionId=default)
            done.append(f"{default} is the default again")
        for version in made:
            if version not in versions or version == default:
                continue
            document = iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]
            self._evidence.put_json(
                input.case_id,
                f"policy-version-{_slug(arn)}-{version.lower()}",
                {"policy": arn, "version": version, "document": document.get("Document")},
            )
            iam.delete_policy_version(PolicyArn=arn, VersionId=version)
            done.append(f"{version} deleted")
        if not done:
            return f"already as before: policy {arn}"
        return f"policy {arn}: {', '.join(done)}"


_PERMISSION_CHANGES = frozenset(
    {
        ChangeKind.USER_POLICY,
        ChangeKind.ROLE_POLICY,
        ChangeKind.USER_POLICY_DETACHED,
        ChangeKind.ROLE_POLICY_DETACHED,
        ChangeKind.POLICY_VERSION,
    }
)


def _default_version_set(record: dict[str, Any]) -> str | None:
    """The version a CreatePolicyVersion (as default) or SetDefaultPolicyVersion made the
    default, if it did."""
    request = record.get("requestParameters") or {}
    if record.get("eventName") == "SetDefaultPolicyVersion":
        return request.get("versionId")
    if str(request.get("setAsDefault")).lower() == "true":
        version = (record.get("responseElements") or {}).get("policyVersion") or {}
        return version.get("versionId")
    return None


def _noun(kind: str) -> str:
    """`User` or `Role`: whose policy a resource or change of this kind is."""
    return "User" if kind in _USER_KINDS else "Role"


def _windows(resources: list[AttackerResource]) -> dict[tuple[str, str], list[datetime]]:
    """When the attacker wrote each user's and role's policies."""
    windows: dict[tuple[str, str], list[datetime]] = {}
    for resource in resources:
        key = (_noun(resource.kind), resource.owner or "")
        windows.setdefault(key, []).append(_resource_time(resource))
    return windows


def _resource_time(resource: AttackerResource) -> datetime:
    return datetime.fromisoformat(resource.event_time.replace("Z", "+00:00"))


def _slug(value: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in value.lower())[:100]


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
