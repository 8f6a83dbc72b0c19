"""What every lab scenario shares: real calls against the lab's AWS, each written to
CloudTrail as it is made, and the report a scenario leaves (which holds no secret)."""

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import boto3
from botocore import xform_name
from pydantic import BaseModel

from lab.cloudtrail import Actor, TrailRecorder
from lab.world import REGION, client


class ScenarioReport(BaseModel):
    """What an attack did, for the lab's operator and tests; it holds no secret."""

    scenario: str
    started_at: datetime
    finished_at: datetime
    log_files: list[str]
    records_delivered: int
    records_not_logged: int
    finding: dict[str, Any]


class Clock:
    """Event times for the story: a call every `step` from `start`."""

    def __init__(self, start: datetime, step: timedelta = timedelta(seconds=70)) -> None:
        self._times: Iterator[datetime] = (start + step * i for i in range(10**6))

    def next(self) -> datetime:
        return next(self._times)


class Caller:
    """Makes real calls as one actor and writes each into CloudTrail.

    A call given `denied` is not made: it is recorded as AWS records a refused call.
    """

    def __init__(
        self,
        recorder: TrailRecorder,
        actor: Actor,
        session: boto3.Session,
        endpoint_url: str,
        clock: Clock,
    ) -> None:
        self._recorder = recorder
        self.actor = actor
        self._session = session
        self._endpoint = endpoint_url
        self._clock = clock

    def __call__(
        self, service: str, operation: str, denied: str | None = None, **params: Any
    ) -> dict[str, Any]:
        at = self._clock.next()
        response: dict[str, Any] = {}
        if denied is None:
            api = client(self._session, service, self._endpoint)
            response = getattr(api, xform_name(operation))(**params)
        self._recorder.record(
            self.actor,
            service=service,
            operation=operation,
            region=REGION,
            at=at,
            request=params or None,
            response=response,
            error_code=denied,
            error_message=f"User: {self.actor.identity['arn']} is not authorized to perform: "
            f"{service}:{operation}"
            if denied
            else None,
        )
        return response


def key_session(access_key: dict[str, Any]) -> boto3.Session:
    """A session on a long-term key as CreateAccessKey returned it (kept in memory only)."""
    return boto3.Session(
        aws_access_key_id=access_key["AccessKeyId"],
        aws_secret_access_key=access_key["SecretAccessKey"],
        region_name=REGION,
    )
