"""The codec server: Temporal's remote codec protocol over HTTP, so that the Web UI and the
`temporal` CLI (`--codec-endpoint`) show the payloads the AES-GCM codec encrypted.

POST `{endpoint}/encode` and `{endpoint}/decode` take and answer a Payloads message in
protobuf's JSON form: `{"payloads": [{"metadata": {"encoding": "<base64>"}, "data":
"<base64>"}]}`. Every one of them needs the server's token.
"""

import base64
import binascii
import hmac
import logging
import re
import secrets
from collections.abc import Sequence
from typing import Annotated, Any

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from google.protobuf import json_format
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
)
from pydantic_core import PydanticCustomError
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from codec.aesgcm import PayloadDecryptionError

log = logging.getLogger("quench.codec")

# Where the Web UI's routes live: `{UI_PATH}/<token>/decode`; see require_path_token.
UI_PATH = "/ui"
_UI_TOKEN_PATH = re.compile(rf"^({re.escape(UI_PATH)}/)[^/?#]+")
# URL-safe, since the Web UI's token is a path segment, and long enough not to be guessed.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{32,}")
_ORIGIN = re.compile(r"https?://[^/?#\s]+")
# The headers the Web UI and the CLI send; a browser asks first (a preflight) for each.
_CORS_HEADERS = ["Authorization", "Content-Type", "X-Namespace"]


def _from_base64(value: object) -> bytes:
    # Protobuf's JSON form writes standard base64 with padding, and reads URL-safe base64
    # or no padding too. Python's protobuf parser skips what is not base64, and Python's
    # base64 takes excess padding: this refuses both.
    if not isinstance(value, str):
        raise PydanticCustomError("base64", "must be a base64 string")
    unpadded = value.rstrip("=")
    padding = len(value) - len(unpadded)
    if padding and (padding > 2 or len(value) % 4):
        raise PydanticCustomError("base64", "not valid base64 (wrong padding)")
    text = unpadded.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise PydanticCustomError("base64", "not valid base64") from None


def _to_base64(value: bytes) -> str:
    return base64.b64encode(value).decode()


WireBytes = Annotated[bytes, BeforeValidator(_from_base64), PlainSerializer(_to_base64)]


class WirePayload(BaseModel):
    """One Payload in protobuf's JSON form."""

    # Payload fields read by nobody here (externalPayloads) pass through unchanged.
    model_config = ConfigDict(extra="allow")

    metadata: dict[str, WireBytes] = {}
    data: WireBytes = b""

    def to_proto(self) -> Payload:
        payload = Payload(metadata=self.metadata, data=self.data)
        if self.model_extra:
            json_format.ParseDict(self.model_extra, payload, ignore_unknown_fields=True)
        return payload

    @classmethod
    def from_proto(cls, payload: Payload) -> "WirePayload":
        return cls.model_validate(json_format.MessageToDict(payload))


class WirePayloads(BaseModel):
    # `{}` is an empty list in protobuf's JSON: the CLI sends it for a query without input.
    payloads: list[WirePayload] = Field(default_factory=list)

    def to_protos(self) -> list[Payload]:
        return [payload.to_proto() for payload in self.payloads]

    @classmethod
    def from_protos(cls, payloads: Sequence[Payload]) -> "WirePayloads":
        return cls(payloads=[WirePayload.from_proto(payload) for payload in payloads])


class Problem(BaseModel):
    error: str
    field: str | None = None


class CodecRequestError(Exception):
    def __init__(self, status: int, error: str, field: str | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.field = field


def generate_token() -> str:
    return secrets.token_urlsafe(32)


def check_token(token: str) -> None:
    if not _TOKEN.fullmatch(token):
        raise ValueError(
            "the codec server's token must be at least 32 letters, digits, '-' or '_' "
            "(it may be part of a URL)"
        )


async def _problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CodecRequestError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(
        Problem(error=exc.error, field=exc.field).model_dump(),
        status_code=exc.status,
        headers=headers,
    )


def get_codec(request: Request) -> PayloadCodec:
    return request.app.state.codec


def _is_the_token(request: Request, offered: str) -> bool:
    return hmac.compare_digest(offered.encode(), request.app.state.token.encode())


_bearer = HTTPBearer(auto_error=False)


def require_bearer_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """What `temporal ... --codec-auth 'Bearer <token>'` sends."""
    if credentials is None or not _is_the_token(request, credentials.credentials):
        log.warning("codec request refused: no or wrong bearer token")
        raise CodecRequestError(401, "a bearer token is required, and this is not it")


def require_path_token(request: Request, token: str) -> None:
    """The Web UI cannot send our token in a header: it sends `Authorization` only as its
    own signed-in user's access token (`passAccessToken`, over HTTPS) or cookies
    (`includeCredentials`), and the dev server's UI has no sign-in. What it does send is
    the endpoint it was given, so the token is a segment of that endpoint's path. Anyone
    who can open the UI can read that endpoint from it, and can decode through the UI
    anyway; the token keeps out whoever reaches this server but not the UI."""
    if not _is_the_token(request, token):
        # The path holds the token offered: never logged.
        log.warning("codec request refused: wrong token in the Web UI path")
        raise CodecRequestError(401, "the token in this path is not the codec server's")


async def _read_payloads(request: Request) -> list[Payload]:
    try:
        return WirePayloads.model_validate_json(await request.body()).to_protos()
    except ValidationError as exc:
        # The reason and the place, never the input: it may be a payload.
        first = exc.errors(include_input=False, include_url=False)[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        raise CodecRequestError(400, first["msg"], field) from None
    except json_format.ParseError as exc:
        raise CodecRequestError(400, f"not a Temporal payload: {exc}") from None


async def encode(
    request: Request, codec: Annotated[PayloadCodec, Depends(get_codec)]
) -> WirePayloads:
    return WirePayloads.from_protos(await codec.encode(await _read_payloads(request)))


async def decode(
    request: Request, codec: Annotated[PayloadCodec, Depends(get_codec)]
) -> WirePayloads:
    payloads = await _read_payloads(request)
    try:
        decoded = await codec.decode(payloads)
    except PayloadDecryptionError as exc:
        # The key id and the reason: no key, no payload.
        log.warning("decode refused: %s", exc)
        raise CodecRequestError(400, str(exc)) from None
    return WirePayloads.from_protos(decoded)


def _codec_routes(router: APIRouter, prefix: str) -> APIRouter:
    router.add_api_route(f"{prefix}/encode", encode, methods=["POST"])
    router.add_api_route(f"{prefix}/decode", decode, methods=["POST"])
    return router


for_the_cli = _codec_routes(APIRouter(dependencies=[Depends(require_bearer_token)]), "")
for_the_web_ui = _codec_routes(
    APIRouter(dependencies=[Depends(require_path_token)]), f"{UI_PATH}/{{token}}"
)

health = APIRouter()


@health.get("/healthz")
async def healthz() -> dict[str, Any]:
    return {"status": "ok"}


def create_codec_app(codec: PayloadCodec, token: str, ui_origin: str | None = None) -> FastAPI:
    """The codec server for `codec`. The CLI sends `Authorization: Bearer <token>` to
    `/encode` and `/decode`; with `ui_origin`, the Web UI at that origin (and no other) may
    call it too, with the endpoint `<this server>/ui/<token>`."""
    check_token(token)
    app = FastAPI(
        title="Quench codec server",
        # Nothing to browse: every useful route needs the token.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.codec = codec
    app.state.token = token
    app.add_exception_handler(CodecRequestError, _problem)
    app.include_router(health)
    app.include_router(for_the_cli)
    if ui_origin is not None:
        if not _ORIGIN.fullmatch(ui_origin):
            raise ValueError(
                f"the Web UI's origin is scheme://host[:port] with no path, not {ui_origin!r}"
            )
        app.include_router(for_the_web_ui)
        app.add_middleware(
            CORSMiddleware,
            allow_origins=[ui_origin],
            allow_methods=["POST"],
            allow_headers=_CORS_HEADERS,
        )
    return app


class HideWebUiToken(logging.Filter):
    """Rewrites `/ui/<token>/...` in a log record's arguments as `/ui/<token hidden>/...`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _UI_TOKEN_PATH.sub(r"\1<token hidden>", arg) if isinstance(arg, str) else arg
                for arg in record.args
            )
        return True


def uvicorn_config(app: FastAPI, host: str, port: int) -> uvicorn.Config:
    """How to serve the app: the Web UI's requests carry the token in their path, so there
    is no access log, and should one come back its lines hide the token."""
    config = uvicorn.Config(app, host=host, port=port, access_log=False)
    # uvicorn's access_log=False only empties the access logger's handlers: any handler
    # added to it later (a deployment's logging set-up) turns access logging back on.
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(known, HideWebUiToken) for known in access.filters):
        access.addFilter(HideWebUiToken())
    return config
