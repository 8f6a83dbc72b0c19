"""The finding webhook service (FastAPI): EventBridge deliveries of GuardDuty findings.

A finding is answered 2xx only once Temporal has durably taken it; when Temporal cannot
be reached the answer is 503 with Retry-After, so EventBridge delivers it again.
"""

import hmac
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from config.settings import Settings
from config.temporal import connect, setup_tracing
from models.finding import FindingParseError, GuardDutyEvent, finding_from_guardduty
from webhook.intake import open_or_join_case

log = logging.getLogger("quench.webhook")

MAX_BODY_BYTES = 256 * 1024  # EventBridge's own limit for one event
RETRY_AFTER_SECONDS = "5"
_UNAVAILABLE = {
    RPCStatusCode.UNAVAILABLE,
    RPCStatusCode.DEADLINE_EXCEEDED,
    RPCStatusCode.RESOURCE_EXHAUSTED,
    RPCStatusCode.UNKNOWN,
}


class CaseAccepted(BaseModel):
    outcome: str
    case_id: str
    run_id: str | None = None


class Ignored(BaseModel):
    outcome: str = "ignored"
    reason: str


class Problem(BaseModel):
    error: str
    field: str | None = None


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = Settings()
    if not settings.webhook_tokens():
        raise RuntimeError("QUENCH_WEBHOOK_TOKEN is required outside the lab")
    setup_tracing("quench-webhook")
    app.state.settings = settings
    app.state.client = await connect_lazily(settings)
    log.info("webhook ready; Temporal at %s", settings.temporal_address)
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
    lifespan=lifespan,
    responses={401: {"model": Problem}, 413: {"model": Problem}, 415: {"model": Problem}},
)


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_client(request: Request) -> Client:
    return request.app.state.client


def problem(status: int, error: str, field: str | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content=Problem(error=error, field=field).model_dump())


def authorized(request: Request, settings: Settings) -> bool:
    presented = request.headers.get(settings.webhook_token_header, "")
    # Compare against every accepted token, in constant time, so rotation works.
    matches = [
        hmac.compare_digest(presented.encode(), t.encode()) for t in settings.webhook_tokens()
    ]
    return any(matches)


async def read_json(request: Request) -> tuple[Any, JSONResponse | None]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        return None, problem(415, "content type must be application/json", "content-type")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return None, problem(413, f"body is larger than {MAX_BODY_BYTES} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return None, problem(413, f"body is larger than {MAX_BODY_BYTES} bytes")
    try:
        return json.loads(body), None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return None, problem(400, f"malformed JSON: {exc}", "body")


@app.post(
    "/v1/events/eventbridge",
    status_code=202,
    response_model=CaseAccepted,
    responses={200: {"model": Ignored}, 400: {"model": Problem}, 503: {"model": Problem}},
)
async def eventbridge_event(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    client: Annotated[Client, Depends(get_client)],
) -> JSONResponse:
    """One EventBridge event carrying a GuardDuty finding (an API destination target)."""
    if not authorized(request, settings):
        return problem(401, "missing or invalid token", settings.webhook_token_header)
    payload, error = await read_json(request)
    if error is not None:
        return error
    try:
        event = GuardDutyEvent.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        return problem(400, first["msg"], ".".join(str(p) for p in first["loc"]) or "body")
    if event.detail.get("resource", {}).get("resourceType") != "AccessKey":
        reason = "finding is not about an access key"
        return JSONResponse(status_code=200, content=Ignored(reason=reason).model_dump())
    try:
        finding = finding_from_guardduty(event.detail)
    except FindingParseError as exc:
        return problem(400, exc.problem, exc.field)
    try:
        handle = await open_or_join_case(client, settings, finding)
    except (RPCError, RuntimeError) as exc:
        # A lazy client that cannot connect raises RuntimeError; a live one, RPCError.
        if isinstance(exc, RPCError) and exc.status not in _UNAVAILABLE:
            raise
        log.warning("Temporal unavailable (%s); sender asked to retry %s", exc, finding.id)
        response = problem(503, "case store unavailable, retry later")
        response.headers["Retry-After"] = RETRY_AFTER_SECONDS
        return response
    log.info("finding %s -> case %s", finding.id, handle.id)
    accepted = CaseAccepted(outcome="accepted", case_id=handle.id, run_id=handle.result_run_id)
    return JSONResponse(status_code=202, content=accepted.model_dump())


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/readyz", responses={503: {"model": Problem}})
async def readyz(client: Annotated[Client, Depends(get_client)]) -> JSONResponse:
    try:
        await client.service_client.check_health()
    except (RPCError, RuntimeError) as exc:
        return problem(503, f"Temporal not reachable: {exc}")
    return JSONResponse({"status": "ready"})
