"""The finding webhook service (FastAPI): GuardDuty findings, as EventBridge delivers them
straight (an API destination) or through an SNS topic's HTTPS subscription.

A finding is answered 2xx only once its case has taken it; when Temporal cannot be
reached, or the case does not answer in time, the answer is 503 with Retry-After, so
EventBridge or SNS delivers it again. A redelivery is answered `duplicate`.
"""

import asyncio
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import httpx
import pydantic_core
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from pydantic import BaseModel, ValidationError
from temporalio.client import Client, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from config.settings import Settings
from config.telemetry import setup_tracing
from config.temporal import connect
from models.finding import FindingParseError
from models.intake import FindingOutcome, IngestResult
from webhook.events import triage_event
from webhook.intake import FindingRefused, submit_finding
from webhook.openapi import EVENTBRIDGE_PATH, SNS_PATH, build_openapi
from webhook.sns import SnsGateway, SnsMessage, SnsRejected, default_gateway

log = logging.getLogger("quench.webhook")

MAX_BODY_BYTES = 256 * 1024  # EventBridge's own limit for one event
# SNS carries the event JSON-escaped inside its signed envelope.
SNS_MAX_BODY_BYTES = 2 * MAX_BODY_BYTES + 16 * 1024
RETRY_AFTER_SECONDS = "5"
_TRANSIENT = {
    RPCStatusCode.UNAVAILABLE,
    RPCStatusCode.DEADLINE_EXCEEDED,
    RPCStatusCode.RESOURCE_EXHAUSTED,
    RPCStatusCode.UNKNOWN,
    RPCStatusCode.CANCELLED,
    RPCStatusCode.ABORTED,
}
_ACCEPTED = {FindingOutcome.NEW_CASE, FindingOutcome.JOINED, FindingOutcome.UPDATED}


class Problem(BaseModel):
    error: str
    field: str | None = None


class SnsReceipt(BaseModel):
    """The answer to SNS's own messages about the subscription."""

    outcome: Literal["subscription_confirmed", "unsubscribe_noted"]
    topic_arn: str


class RequestProblem(Exception):
    def __init__(self, status: int, error: str, field: str | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.field = field


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = Settings()
    if not settings.webhook_tokens():
        raise RuntimeError("QUENCH_WEBHOOK_TOKEN is required outside the lab")
    if not settings.managed_accounts:
        # It would answer every finding "ignored": say so once, at start, instead.
        raise RuntimeError("QUENCH_ACCOUNT_ID or QUENCH_ACCOUNTS_FILE is required outside the lab")
    settings.require_payload_encryption()
    setup_tracing("quench-webhook")
    app.state.settings = settings
    app.state.client = await connect_lazily(settings)
    app.state.sns = default_gateway()
    log.info(
        "webhook ready; Temporal at %s; %d SNS topic(s) allowed",
        settings.temporal_address,
        len(settings.sns_topic_arns),
    )
    yield


async def connect_lazily(settings: Settings) -> Client:
    """Connect without failing start-up: a Temporal outage answers 503 per request."""
    try:
        return await connect(settings)
    except RuntimeError as exc:
        log.warning("Temporal not reachable yet (%s); will retry per request", exc)
        return await connect(settings, lazy=True)


app = FastAPI(
    title="Quench finding webhook",
    version="1",
    description=(
        "GuardDuty and Security Hub findings from EventBridge (an API destination) or an SNS "
        "HTTPS subscription. 202 once the finding's case has taken it, 200 for a duplicate "
        "or an ignored finding, 503 with Retry-After when it must be sent again."
    ),
    lifespan=lifespan,
)
# A span for each request, the parent of the case's update and everything it leads to.
FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_client(request: Request) -> Client:
    return request.app.state.client


def get_sns(request: Request) -> SnsGateway:
    return request.app.state.sns


def problem(status: int, error: str, field: str | None = None) -> JSONResponse:
    response = JSONResponse(
        status_code=status, content=Problem(error=error, field=field).model_dump()
    )
    if status == 503:
        response.headers["Retry-After"] = RETRY_AFTER_SECONDS
    return response


@app.exception_handler(RequestProblem)
async def _request_problem(request: Request, exc: RequestProblem) -> JSONResponse:
    return problem(exc.status, exc.error, exc.field)


def authorized(presented: str, settings: Settings) -> bool:
    """Any accepted key matches, compared in constant time (hashed first, so not even the
    length of a key shows), and every key is compared, so rotation shows nothing either."""
    offered = hashlib.sha256(presented.encode()).digest()
    matches = [
        hmac.compare_digest(offered, hashlib.sha256(token.encode()).digest())
        for token in settings.webhook_tokens()
    ]
    return any(matches)


async def read_json(request: Request, content_types: tuple[str, ...], max_bytes: int) -> Any:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in content_types:
        raise RequestProblem(
            415, f"content type must be {' or '.join(content_types)}", "content-type"
        )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise RequestProblem(413, f"body is larger than {max_bytes} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise RequestProblem(413, f"body is larger than {max_bytes} bytes")
    return loads(bytes(body), "body")


def dry_run_asked(request: Request) -> bool:
    """Whether the route asks for dry-run cases (`?dry_run=true`): one EventBridge rule or
    SNS subscription can send its findings to the dry-run URL while another acts."""
    asked = request.query_params.getlist("dry_run")
    if not asked:
        return False
    if len(asked) > 1:
        raise RequestProblem(400, "dry_run given more than once", "dry_run")
    if asked[0].lower() not in _BOOLEANS:
        raise RequestProblem(400, "dry_run must be true or false", "dry_run")
    return _BOOLEANS[asked[0].lower()]


_BOOLEANS = {"true": True, "false": False}


def loads(document: bytes, field: str) -> Any:
    """JSON from a request, or a 400 naming `field`. Strict where Python's json module is
    not: no NaN or Infinity, no lone surrogate escapes (neither could be passed on to
    Temporal), and nesting beyond its recursion limit is an error, not a RecursionError."""
    try:
        return pydantic_core.from_json(document, allow_inf_nan=False)
    except ValueError as exc:
        raise RequestProblem(400, f"malformed JSON: {exc}", field) from None


def _field_error(exc: ValidationError) -> RequestProblem:
    first = exc.errors()[0]
    return RequestProblem(400, first["msg"], ".".join(str(p) for p in first["loc"]) or "body")


async def ingest(
    payload: Any, settings: Settings, client: Client, within: str = "", dry_run: bool = False
) -> JSONResponse:
    """One EventBridge event: ignored with its reason, or handed to its case (a new one a
    dry run when `dry_run`). `within` names where the event sits in the request."""
    try:
        triage = triage_event(payload, settings)
    except FindingParseError as exc:
        raise RequestProblem(400, exc.problem, f"{within}{exc.field}") from None
    if triage.finding is None:
        log.info("finding %s ignored: %s", triage.finding_id, triage.ignored)
        ignored = IngestResult(
            outcome=FindingOutcome.IGNORED, finding_id=triage.finding_id, reason=triage.ignored
        )
        return JSONResponse(status_code=200, content=ignored.model_dump(mode="json"))
    finding = triage.finding
    try:
        async with asyncio.timeout(settings.webhook_accept_timeout_seconds):
            result = await submit_finding(client, settings, finding, dry_run)
    except FindingRefused as exc:
        raise RequestProblem(409, f"the case refused the finding: {exc}", "detail") from None
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
        log.warning("case did not take finding %s in time; sender asked to retry", finding.id)
        return problem(503, "the case did not take the finding in time, retry later")
    except (RPCError, RuntimeError, WorkflowAlreadyStartedError) as exc:
        # A lazy client that cannot connect raises RuntimeError; a live one, RPCError.
        # Whatever it is, the finding was not taken: the sender must keep it and retry.
        transient = not isinstance(exc, RPCError) or exc.status in _TRANSIENT
        log.log(
            logging.WARNING if transient else logging.ERROR,
            "Temporal did not take finding %s (%s); sender asked to retry",
            finding.id,
            exc,
        )
        return problem(503, "case store unavailable, retry later")
    log.info("finding %s -> case %s: %s", finding.id, result.case_id, result.outcome.value)
    status = 202 if result.outcome in _ACCEPTED else 200
    return JSONResponse(status_code=status, content=result.model_dump(mode="json"))


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": IngestResult, "description": "A duplicate, or a finding ignored (reason)"},
    400: {"model": Problem, "description": "Malformed JSON or a field missing or wrong"},
    413: {"model": Problem, "description": "Body too large"},
    415: {"model": Problem, "description": "Wrong content type"},
    503: {"model": Problem, "description": "Not taken; retry after Retry-After seconds"},
}


@app.post(
    EVENTBRIDGE_PATH,
    status_code=202,
    response_model=IngestResult,
    responses={**_RESPONSES, 401: {"model": Problem, "description": "Missing or wrong key"}},
)
async def eventbridge_event(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    client: Annotated[Client, Depends(get_client)],
) -> JSONResponse:
    """One EventBridge event: a GuardDuty finding or a Security Hub imported finding (an
    API destination target, with the connection's API key in the key header)."""
    if not authorized(request.headers.get(settings.webhook_token_header, ""), settings):
        return problem(401, "missing or invalid key", settings.webhook_token_header)
    payload = await read_json(request, ("application/json",), MAX_BODY_BYTES)
    return await ingest(payload, settings, client, dry_run=dry_run_asked(request))


@app.post(
    SNS_PATH,
    status_code=202,
    response_model=IngestResult,
    responses={
        **_RESPONSES,
        200: {
            "model": IngestResult | SnsReceipt,
            "description": "A duplicate or ignored finding, or the subscription confirmed",
        },
        401: {"model": Problem, "description": "Signature or signing certificate refused"},
        403: {"model": Problem, "description": "Topic not in QUENCH_SNS_TOPIC_ARNS"},
    },
)
async def sns_message(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    client: Annotated[Client, Depends(get_client)],
    sns: Annotated[SnsGateway, Depends(get_sns)],
) -> JSONResponse:
    """An SNS HTTPS subscription's message: the subscription confirmed for an allowed
    topic, or a notification carrying an EventBridge finding event. Raw message delivery
    must be off: the signed envelope is what proves the message came from SNS."""
    payload = await read_json(request, ("text/plain", "application/json"), SNS_MAX_BODY_BYTES)
    try:
        message = SnsMessage.model_validate(payload)
    except ValidationError as exc:
        raise _field_error(exc) from None
    declared = request.headers.get("x-amz-sns-message-type")
    if declared is not None and declared != message.Type:
        raise RequestProblem(400, f"header says {declared}, body says {message.Type}", "Type")
    if message.TopicArn not in settings.sns_topic_arns:
        return problem(403, "topic is not in QUENCH_SNS_TOPIC_ARNS", "TopicArn")
    try:
        await sns.verify(message)
        if message.Type == "SubscriptionConfirmation":
            await sns.confirm(message)
    except SnsRejected as exc:
        log.warning("SNS message %s refused: %s", message.MessageId, exc)
        return problem(exc.status, exc.problem, exc.field)
    except httpx.HTTPError as exc:
        log.warning("SNS unreachable for message %s (%s)", message.MessageId, exc)
        return problem(503, "SNS could not be reached to check the message, retry later")
    if message.Type == "SubscriptionConfirmation":
        log.info("confirmed the subscription to %s", message.TopicArn)
        receipt = SnsReceipt(outcome="subscription_confirmed", topic_arn=message.TopicArn)
        return JSONResponse(status_code=200, content=receipt.model_dump())
    if message.Type == "UnsubscribeConfirmation":
        log.warning("unsubscribed from %s; findings from it stop", message.TopicArn)
        receipt = SnsReceipt(outcome="unsubscribe_noted", topic_arn=message.TopicArn)
        return JSONResponse(status_code=200, content=receipt.model_dump())
    event = loads(message.Message.encode(), "Message")
    return await ingest(event, settings, client, "Message.", dry_run_asked(request))


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@app.get("/readyz", responses={503: {"model": Problem}})
async def readyz(client: Annotated[Client, Depends(get_client)]) -> JSONResponse:
    """Readiness: Temporal answers its health check."""
    try:
        await client.service_client.check_health()
    except (RPCError, RuntimeError) as exc:
        return problem(503, f"Temporal not reachable: {exc}")
    return JSONResponse({"status": "ready"})


def _openapi() -> dict[str, Any]:
    """Built on each request: the key header's name is a setting."""
    settings: Settings | None = getattr(app.state, "settings", None)
    return build_openapi(app, settings.webhook_token_header if settings else "x-quench-token")


app.openapi = _openapi  # type: ignore[method-assign]
