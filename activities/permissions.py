"""The IAM actions each AWS call of the worker needs, and which call a thread is making: a
call that fails for good is reported with the action it needed, and the worker's policy
(docs/worker-iam-policy.json) is checked against the same table."""

import logging
import threading
from typing import Any

from botocore import xform_name
from temporalio import activity

# Services whose every operation is authorised by the action `<prefix>:<OperationName>`
# (botocore's operation name, as AWS spells it: ListMFADevices), by boto3 service name.
CAMELCASE_RULE = {
    "cloudtrail": "cloudtrail",
    "ec2": "ec2",
    "glue": "glue",
    "iam": "iam",
    "lambda": "lambda",
    "organizations": "organizations",
    "sns": "sns",
    "ssm": "ssm",
}

# The quirks, and every call of a service the rule above does not cover.
ACTIONS: dict[tuple[str, str], frozenset[str]] = {
    # S3 names its actions after what they grant, not after the API.
    ("s3", "get_object"): frozenset({"s3:GetObject"}),
    # HeadObject is authorised as GetObject; without ListBucket a missing key answers 403,
    # not 404, and EvidenceStore.existing could not tell "not written yet" from "denied".
    ("s3", "head_object"): frozenset({"s3:GetObject", "s3:ListBucket"}),
    ("s3", "list_objects_v2"): frozenset({"s3:ListBucket"}),
    ("s3", "put_object"): frozenset({"s3:PutObject"}),
    ("sts", "get_caller_identity"): frozenset(),  # needs no permission
    # Quench names the case as the session's source identity, which needs its own action.
    ("sts", "assume_role"): frozenset({"sts:AssumeRole", "sts:SetSourceIdentity"}),
    # Tags in TagSpecifications are authorised as CreateTags as well.
    ("ec2", "create_snapshot"): frozenset({"ec2:CreateSnapshot", "ec2:CreateTags"}),
    # A trail that delivers to CloudWatch Logs passes its role to CloudTrail.
    ("cloudtrail", "create_trail"): frozenset({"cloudtrail:CreateTrail", "iam:PassRole"}),
    ("cloudtrail", "update_trail"): frozenset({"cloudtrail:UpdateTrail", "iam:PassRole"}),
    # Athena works with the caller's own permissions: the Glue catalog for the CREATE
    # DATABASE, CREATE TABLE and SELECTs Quench runs, the trail's bucket it reads, and the
    # output location it writes results to (in multipart uploads) and reads them from.
    ("athena", "start_query_execution"): frozenset(
        {
            "athena:StartQueryExecution",
            "glue:CreateDatabase",
            "glue:CreateTable",
            "glue:GetDatabase",
            "glue:GetTable",
            "s3:AbortMultipartUpload",
            "s3:GetBucketLocation",
            "s3:GetObject",
            "s3:ListBucket",
            "s3:ListBucketMultipartUploads",
            "s3:ListMultipartUploadParts",
            "s3:PutObject",
        }
    ),
    ("athena", "get_query_execution"): frozenset({"athena:GetQueryExecution"}),
    ("athena", "get_query_results"): frozenset({"athena:GetQueryResults", "s3:GetObject"}),
}


def actions_of(service: str, operation: str) -> frozenset[str] | None:
    """The IAM actions a call (`iam`, `DeleteUser`) needs, or None when neither the table
    nor the rule knows."""
    special = ACTIONS.get((service, xform_name(operation)))
    if special is not None:
        return special
    prefix = CAMELCASE_RULE.get(service)
    return None if prefix is None else frozenset({f"{prefix}:{operation}"})


_current = threading.local()
calls_log = logging.getLogger("quench.aws.calls")


def track_calls(client: Any) -> None:
    """Remember, per thread, the call this client is making: activities run one to a
    thread, so when an error surfaces the call it came from is the thread's last."""
    service = client.meta.service_model.service_name

    def remember(model: Any, params: dict[str, Any] | None = None, **_: Any) -> None:
        _current.call = (service, model.name)
        # One line per call the code makes (botocore's own retries are not calls here),
        # with its bucket and the case's workflow: the lab's QUENCH_LAB_LOG_CALLS turns it
        # on, and the fault matrix and the dry run's tests count it.
        if calls_log.isEnabledFor(logging.DEBUG):
            bucket = (params or {}).get("Bucket")
            workflow_id = activity.info().workflow_id if activity.in_activity() else None
            calls_log.debug(
                "aws call %s:%s%s%s",
                service,
                model.name,
                f" bucket={bucket}" if bucket else "",
                f" workflow={workflow_id}" if workflow_id else "",
            )

    client.meta.events.register("before-parameter-build", remember)


def failed_call() -> tuple[str, str] | None:
    """The service and operation (`iam`, `DeleteUser`) of this thread's last AWS call."""
    return getattr(_current, "call", None)


def carry_call(call: tuple[str, str] | None) -> None:
    """Make `call` this thread's last: an error from a read made on another thread for
    this one (`activities.aws.at_once`) names the call it came from."""
    _current.call = call


def describe_call(service: str, operation: str) -> str:
    """`iam:DeleteUser`, and the IAM actions it needs when they differ from its name."""
    name = f"{service}:{operation}"
    actions = actions_of(service, operation)
    if actions is None or actions == {name}:
        return name
    return f"{name} (needs {', '.join(sorted(actions)) or 'no permission'})"
