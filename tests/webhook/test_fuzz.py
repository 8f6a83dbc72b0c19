"""A property-based fuzz of the HTTP API from the OpenAPI document it serves (schemathesis,
positive and negative cases): whatever arrives, the webhook never answers 5xx, and a
request it refuses starts no case.

Temporal is replaced by a client that records every case the webhook asks it to open or
join, so each generated request is checked against exactly what it started. SNS
notifications are fuzzed too: generated events, signed with the test key, so they get past
the signature to everything behind it.
"""

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from config import names
from config.settings import Settings
from models.finding import Finding
from models.intake import FindingOutcome, SubmitFindingInput, SubmitFindingResult
from tests.support import ACCOUNT, finding_event
from tests.webhook.conftest import TOKEN, TOPIC_ARN, FakeSns
from tests.webhook.signing import CERT_PEM, CERT_URL, notification, sign, sns_headers
from webhook.app import app

EXAMPLES = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)


class _Health:
    async def check_health(self) -> None:
        return None


@dataclass
class RecordingTemporal:
    """Stands in for the Temporal client: every case start or join is recorded."""

    started: list[Finding] = field(default_factory=list)
    service_client: _Health = field(default_factory=_Health)

    async def execute_update_with_start_workflow(
        self, update: Any, arg: SubmitFindingInput, **_: Any
    ) -> SubmitFindingResult:
        self.started.append(arg.finding)
        key = arg.finding.access_key.access_key_id
        return SubmitFindingResult(
            outcome=FindingOutcome.NEW_CASE,
            case_id=names.case_workflow_id(arg.finding.account_id, key),
            run_id="recorded",
            findings=1,
        )


@contextlib.asynccontextmanager
async def _no_lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield


@pytest.fixture(scope="module")
def recorder() -> Iterator[RecordingTemporal]:
    temporal = RecordingTemporal()
    sns = FakeSns(certificates={CERT_URL: CERT_PEM})
    with pytest.MonkeyPatch.context() as patch:
        # The app's state is this module's: its own lifespan would read the environment.
        patch.setattr(app.router, "lifespan_context", _no_lifespan)
        # Every type routed to a case (random types would almost never be a credential
        # family), a severity threshold so that some are still ignored.
        app.state.settings = Settings(
            webhook_token=TOKEN,
            account_id=ACCOUNT,
            sns_topic_arns=[TOPIC_ARN],
            finding_types_allow=["*"],
            min_severity=2.0,
        )
        app.state.client = temporal
        app.state.sns = sns.gateway()
        yield temporal


@pytest.fixture(scope="module")
def api_schema(recorder: RecordingTemporal) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", app)


OPERATIONS = [
    ("POST", "/v1/events/eventbridge"),
    ("POST", "/v1/events/sns"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
]


def _any_case(api_schema: Any, method: str, path: str) -> st.SearchStrategy[Any]:
    """Cases that fit the schema and cases that break it (schemathesis' two modes)."""
    operation = api_schema[path][method]
    return st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )


def _check(response: Any, recorder: RecordingTemporal, before: int) -> None:
    status = response.status_code
    assert status < 500, f"{status}: {response.text}"
    started = len(recorder.started) - before
    if status >= 400:
        assert started == 0, f"refused with {status} yet started a case"
        assert response.json()["error"]
    elif status == 202:
        assert started == 1
        assert response.json()["outcome"] == "new_case"
    else:
        assert started == 0
        body = response.json()
        answered = body.get("outcome") in ("ignored", "subscription_confirmed", "unsubscribe_noted")
        assert answered or body.get("status") in ("ok", "ready"), body


def test_every_operation_of_the_document_is_fuzzed(api_schema):
    documented = {(r.ok().method.upper(), r.ok().path) for r in api_schema.get_all_operations()}
    assert documented == set(OPERATIONS)


@pytest.mark.parametrize("key", ["accepted key", "generated key"])
@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_no_5xx_and_a_refused_request_starts_nothing(api_schema, recorder, method, path, key):
    outcomes: set[int] = set()

    @EXAMPLES
    @given(case=_any_case(api_schema, method, path))
    def check(case: Any) -> None:
        before = len(recorder.started)
        response = case.call(headers={"x-quench-token": TOKEN} if key == "accepted key" else None)
        outcomes.add(response.status_code)
        _check(response, recorder, before)

    check()
    assert outcomes


def test_signed_sns_notifications_of_any_event(api_schema, recorder):
    """Events generated from the EventBridge schema, in notifications signed for real."""
    events = api_schema["/v1/events/eventbridge"]["POST"].as_strategy()
    sns = api_schema["/v1/events/sns"]["POST"]
    outcomes: set[int] = set()

    # One event known to be a credential finding, besides the generated ones: whether any
    # generated event is one is luck, and "some reached a case" must not depend on it.
    @EXAMPLES
    @example(
        case=api_schema["/v1/events/eventbridge"]["POST"].Case(body=finding_event()),
        version="1",
        subject=None,
    )
    @given(case=events, version=st.sampled_from(["1", "2"]), subject=st.none() | st.text())
    def check(case: Any, version: str, subject: str | None) -> None:
        message = sign(notification(case.body, subject=subject), version=version)
        before = len(recorder.started)
        headers = {k: v for k, v in sns_headers(message).items() if k != "content-type"}
        request = sns.Case(body=message, headers=headers, media_type="application/json")
        response = request.call()
        outcomes.add(response.status_code)
        _check(response, recorder, before)

    check()
    # The signature let them through: some reached a case, some were refused for content.
    assert 202 in outcomes
    assert outcomes & {400, 200}
