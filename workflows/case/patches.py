"""The case workflow's patch markers: histories recorded before a step existed replay
without it. A name here is never changed or reused."""

WATCH_PATCH = "containment-watch"
USER_KEY_PATCH = "user-key-containment"
ROLE_SESSION_PATCH = "role-session-containment"
PLAN_PATCH = "eradication-plan"
ROUNDS_PATCH = "eradication-rounds"
ERADICATE_PATCH = "eradication"
TRAILS_PATCH = "trail-evidence"
RECOVERY_PATCH = "recovery"
REPORT_PATCH = "post-incident-report"
MINTED_PATCH = "minted-credential-containment"
PERMISSIONS_PATCH = "in-place-permissions"
MINTED_WATCH_PATCH = "minted-credential-watch"
DEADLINE_PATCH = "approval-deadlines"
NOTIFY_PATCH = "notifications"
INVESTIGATION_PATCH = "investigation"
# Containment starts logging again on trails found stopped, so the watch can see.
LOGGING_PATCH = "logging-before-watch"
# The investigation runs as a child workflow with a history of its own.
INVESTIGATION_CHILD_PATCH = "investigation-child-workflow"
# A step that fails for good is recorded as failed and the rest goes on; its retry is
# offered beside the case instead of holding it up.
ISOLATED_FAILURES_PATCH = "isolated-step-failures"
# Resolving the principal or keeping evidence that fails for good no longer holds up
# containment: the case acts on what it knows, and the failed step is an open item.
CONTAINMENT_FIRST_PATCH = "containment-first"
# Each case keeps its evidence in a folder of its own, apart from an earlier case's
# under the same id.
EVIDENCE_FOLDER_PATCH = "evidence-folder-per-case"
# Recovery asks nothing for a trail containment already started, and a restore that fails
# for good is offered for a retry beside the case.
RECOVERY_RETRY_PATCH = "recovery-retry-beside"
# The keys the attacker minted are deactivated, the round's first step, before anything is
# removed: a removal that fails leaves them contained.
MINTED_FIRST_PATCH = "minted-keys-deactivated-first"
# An instance or Lambda function the attacker launched is captured as evidence before its
# removal, as users and roles are.
LAUNCHED_EVIDENCE_PATCH = "launched-resource-evidence"
# The report names the EBS snapshots tagged with the case, looked up before it is written.
REPORT_SNAPSHOTS_PATCH = "report-snapshots"
# A stolen user key that cannot be deactivated: the user is denied everything instead, the
# case goes on, and the deactivation is offered for a retry beside it.
USER_DENIED_ALL_PATCH = "user-denied-everything"
# Each check of the watch also reads whether the containment is still in place (the
# revocation or token-deny policy, the key's status): an attacker with IAM write can undo it.
CONTAINMENT_IN_PLACE_PATCH = "containment-still-in-place"
# A case in an organisation Quench may act on proposes the SCP quarantine when the watch
# sees containment undone, and lifts it once done.
QUARANTINE_PATCH = "organisation-quarantine"
# A credential that is protected or Quench's own is never contained on its own: a human
# contains it by hand (manual-N), or two people approve containing a protected one anyway.
HANDS_OFF_PATCH = "hands-off-protected-and-own"
# Each kind of action is numbered on its own (round 1's removal is eradicate-1, not the
# case's second action, eradicate-2).
ACTION_IDS_BY_KIND_PATCH = "action-ids-numbered-by-kind"
# A closed case sets QuenchOutcome, so lists tell contained cases from those given up.
OUTCOME_ATTRIBUTE_PATCH = "outcome-search-attribute"
# Only what containment changes is kept before the cut-off (the principal's IAM state and
# the instance's, captured in parallel); the EBS snapshots are awaited before the stop,
# and the finding, the CloudTrail slice and the trails are kept beside containment.
CUT_OFF_FIRST_PATCH = "evidence-of-what-containment-changes-first"
