"""The floor under a containment's time: a workflow started and one activity that makes the
single IAM call containment makes (PutRolePolicy of the session revocation), on the same
server. Nothing Quench does before or around that call: what remains is Temporal's and
AWS's own cost, which no case can beat.
"""

import json
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    import boto3
    from pydantic import BaseModel

    from activities.iam import revoke_sessions_policy
    from config import names

FLOOR_TASK_QUEUE = "quench-contain-floor"


class FloorInput(BaseModel):
    role_name: str


class FloorActivities:
    def __init__(self, aws_url: str, region: str) -> None:
        session = boto3.Session(
            aws_access_key_id="AKIATESTFLOOR0000001",
            aws_secret_access_key="floor",  # noqa: S106 - the lab's floor, no secret
            region_name=region,
        )
        self._iam = session.client("iam", endpoint_url=aws_url)

    @activity.defn(name="ContainFloor.put_revocation")
    def put_revocation(self, input: FloorInput) -> None:
        cutoff = activity.info().scheduled_time
        self._iam.put_role_policy(
            RoleName=input.role_name,
            PolicyName=names.REVOKE_SESSIONS_POLICY_NAME,
            PolicyDocument=json.dumps(revoke_sessions_policy(cutoff)),
        )


@workflow.defn(name="ContainFloor")
class ContainFloorWorkflow:
    @workflow.run
    async def run(self, input: FloorInput) -> None:
        await workflow.execute_activity_method(
            FloorActivities.put_revocation,
            input,
            start_to_close_timeout=timedelta(minutes=1),
            retry_policy=RetryPolicy(maximum_attempts=3),
        )
