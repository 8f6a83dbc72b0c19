"""Fault injection for the lab and the tests: chosen AWS calls answered with an AWS error.

The injector answers from botocore's `before-send` event with the HTTP response the service
itself would send, in its own protocol, so botocore's real parser and retry handler, and
Quench's error mapping after them, see exactly what AWS would make them see.
"""

import difflib
import io
import json
import logging
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal, get_args
from xml.sax.saxutils import escape

import botocore.session
from botocore import xform_name
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.compat import HTTPHeaders
from botocore.model import OperationModel, ServiceModel
from pydantic import BaseModel, ConfigDict, Field

logger = logging.getLogger(__name__)

SETTING = "QUENCH_LAB_FAULTS"
# What the setting takes, for the errors that refuse it.
ACCEPTED = (
    'a JSON object of service:Operation to a fault, e.g. {"iam:DeleteUser": "access_denied", '
    '"ec2:StopInstances": {"fault": "throttling", "times": 3}}'
)

Fault = Literal["access_denied", "throttling", "internal_error", "not_implemented"]
FAULTS: tuple[str, ...] = get_args(Fault)

# The protocols whose error responses the injector writes: every service Quench calls.
PROTOCOLS = ("query", "ec2", "json", "rest-json", "rest-xml")

# A request the injector answered goes on to every later before-send handler (botocore
# calls them all and takes the first answer), and an in-process fake such as moto's
# mock_aws would still carry it out. Pointed at a reserved name (RFC 6761) that nothing
# serves, it reaches no one. botocore builds a new request for each retry.
NOWHERE = "https://fault-injected.invalid/"


class FaultRule(BaseModel):
    """One operation's fault: every call fails, or only the first `times` calls."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fault: Fault
    times: int | None = Field(default=None, ge=1)

    def describe(self) -> str:
        return self.fault if self.times is None else f"{self.fault} for {self.times} calls"


FaultPlan = dict[str, FaultRule]


# -- the setting ------------------------------------------------------------------------


def parse_fault_plan(value: Any) -> FaultPlan:
    """QUENCH_LAB_FAULTS read and checked: a JSON object (or its text) that maps
    `service:Operation` (boto3's service name, botocore's operation name) to a fault name
    or to `{"fault": ..., "times": N}`. An empty text or object is no fault at all."""
    if isinstance(value, str | bytes):
        if not value.strip():
            return {}
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"{SETTING} is not JSON ({exc}); it takes {ACCEPTED}") from exc
    if not isinstance(value, Mapping):
        raise ValueError(f"{SETTING} must be {ACCEPTED}")
    plan: FaultPlan = {}
    for key, spec in value.items():
        _check_operation(key)
        plan[key] = _rule(key, spec)
    return plan


def _rule(key: str, spec: Any) -> FaultRule:
    where = f"{SETTING}: {key!r}"
    if isinstance(spec, str):
        spec = {"fault": spec}
    if not isinstance(spec, Mapping):
        raise ValueError(f'{where}: a fault name or {{"fault": ..., "times": N}}, got {spec!r}')
    unknown = sorted(set(spec) - {"fault", "times"})
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}; the keys are fault and times")
    fault, times = spec.get("fault"), spec.get("times")
    if fault not in FAULTS:
        raise ValueError(f"{where}: unknown fault {fault!r}; one of {', '.join(FAULTS)}")
    # bool is an int to Python, and 2.0 is no count of calls.
    if times is not None and (type(times) is not int or times < 1):
        raise ValueError(f"{where}: times must be a whole number of calls, 1 or more: {times!r}")
    return FaultRule(fault=fault, times=times)


@cache
def _botocore() -> botocore.session.Session:
    return botocore.session.Session()


@cache
def _service_model(service: str) -> ServiceModel:
    return _botocore().get_service_model(service)


def _check_operation(key: Any) -> None:
    where = f"{SETTING}: {key!r}"
    if not isinstance(key, str) or key.count(":") != 1:
        raise ValueError(f"{where}: name an operation as service:Operation, e.g. iam:DeleteUser")
    service, operation = key.split(":")
    services = _botocore().get_available_services()
    if service not in services:
        raise ValueError(f"{where}: no AWS service {service!r}{_did_you_mean(service, services)}")
    model = _service_model(service)
    if operation not in model.operation_names:
        # The boto3 method name (delete_user) or another case points at the real one.
        named = {xform_name(name): name for name in model.operation_names}
        named |= {name.lower(): name for name in model.operation_names}
        guess = named.get(operation) or named.get(operation.lower())
        hint = f"; did you mean {service}:{guess}?" if guess else ""
        hint = hint or _did_you_mean(operation, model.operation_names, prefix=f"{service}:")
        hint = hint or "; operations are named as in the service's API reference"
        raise ValueError(f"{where}: {service} has no operation {operation!r}{hint}")
    if model.resolved_protocol not in PROTOCOLS:
        raise ValueError(
            f"{where}: {service} speaks {model.resolved_protocol}, "
            f"and the injector writes only {', '.join(PROTOCOLS)}"
        )


def _did_you_mean(word: str, choices: list[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean {prefix}{close[0]}?" if close else ""


# -- the injector ---------------------------------------------------------------------


class FaultInjector:
    """Answers the plan's operations with their faults, on the clients it is installed on.

    A call is one request AWS would receive: botocore's own retries of an operation are
    calls too, so `times: 3` of throttling is absorbed by botocore's retries and the code
    sees success, while enough of them exhaust the retries. Counting is per operation over
    every client and thread.
    """

    def __init__(self, plan: Mapping[str, FaultRule]) -> None:
        for key in plan:
            _check_operation(key)
        self.plan = dict(plan)
        self._lock = threading.Lock()
        self._calls: dict[str, int] = {}

    def describe(self) -> str:
        return ", ".join(f"{key} {rule.describe()}" for key, rule in sorted(self.plan.items()))

    def calls(self, key: str) -> int:
        """The requests seen so far for an operation (`service:Operation`)."""
        with self._lock:
            return self._calls.get(key, 0)

    def install(self, client: Any) -> None:
        """Hooks the faults of this client's service into it. botocore calls handlers of
        the operation's own event before those of plain `before-send` (moto's), and this
        one first among them, so its answer is the one botocore takes."""
        model: ServiceModel = client.meta.service_model
        for key, rule in self.plan.items():
            service, operation = key.split(":")
            if service != model.service_name:
                continue
            client.meta.events.register_first(
                f"before-send.{model.service_id.hyphenize()}.{operation}",
                self._answer(key, rule, model.operation_model(operation)),
                unique_id=f"quench-fault-{key}",
            )

    def _answer(self, key: str, rule: FaultRule, operation: OperationModel) -> Any:
        def answer(request: AWSPreparedRequest, **_: Any) -> AWSResponse | None:
            with self._lock:
                call = self._calls[key] = self._calls.get(key, 0) + 1
            if rule.times is not None and call > rule.times:
                if call == rule.times + 1:
                    logger.info("fault spent: %s after %d calls; calls go through", key, call - 1)
                return None
            of = "" if rule.times is None else f" of {rule.times}"
            logger.warning("fault injected: %s %s (call %d%s)", key, rule.fault, call, of)
            response = fault_response(rule.fault, operation, request, key)
            request.url = NOWHERE
            return response

        return answer


# -- the responses ----------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceError:
    code: str
    status: int


# What a protocol's services answer when the operation models no error of its own.
_DEFAULT_ERRORS: dict[str, dict[str, ServiceError]] = {
    "query": {
        "access_denied": ServiceError("AccessDenied", 403),
        "throttling": ServiceError("Throttling", 400),
        "internal_error": ServiceError("InternalFailure", 500),
    },
    "ec2": {
        "access_denied": ServiceError("UnauthorizedOperation", 403),
        "throttling": ServiceError("RequestLimitExceeded", 503),
        "internal_error": ServiceError("InternalError", 500),
    },
    "rest-xml": {
        "access_denied": ServiceError("AccessDenied", 403),
        "throttling": ServiceError("SlowDown", 503),
        "internal_error": ServiceError("InternalError", 500),
    },
    "json": {
        "access_denied": ServiceError("AccessDeniedException", 400),
        "throttling": ServiceError("ThrottlingException", 400),
        "internal_error": ServiceError("InternalFailure", 500),
    },
    "rest-json": {
        "access_denied": ServiceError("AccessDeniedException", 403),
        "throttling": ServiceError("ThrottlingException", 429),
        "internal_error": ServiceError("InternalFailure", 500),
    },
}

# An error the operation models is the one its service sends: IAM's ServiceFailure, SNS's
# AuthorizationError, Lambda's TooManyRequestsException (by shape name, best first).
_MODELED_ERRORS: dict[str, tuple[str, ...]] = {
    "access_denied": ("AccessDeniedException", "AccessDenied", "AuthorizationErrorException"),
    "throttling": (
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
    ),
    "internal_error": (
        "InternalFailure",
        "InternalErrorException",
        "InternalServerException",
        "InternalServerError",
        "InternalServiceException",
        "ServiceFailureException",
        "ServiceException",
    ),
}

_MESSAGES = {
    "access_denied": "User is not authorized to perform: {action}",
    "throttling": "Rate exceeded",
    "internal_error": "We encountered an internal error. Please try again.",
}

# What an endpoint without the API answers: moto's server, for one, sends its web
# framework's 500 page for an operation it lacks.
NOT_IMPLEMENTED_PAGE = (
    b"<!doctype html>\n<html lang=en>\n<title>500 Internal Server Error</title>\n"
    b"<h1>Internal Server Error</h1>\n<p>The server encountered an internal error and was "
    b"unable to complete your request. Either the server is overloaded or there is an error "
    b"in the application.</p>\n"
)


def service_error(fault: str, operation: OperationModel) -> ServiceError:
    """The error code and HTTP status the operation's service answers a fault with."""
    modeled = {shape.name: shape for shape in operation.error_shapes}
    protocol = operation.service_model.resolved_protocol
    default = _DEFAULT_ERRORS[protocol][fault]
    for name in _MODELED_ERRORS[fault]:
        if name in modeled:
            error = modeled[name].metadata.get("error", {})
            return ServiceError(
                error.get("code", name), error.get("httpStatusCode", default.status)
            )
    return default


def fault_response(
    fault: str, operation: OperationModel, request: AWSPreparedRequest, action: str
) -> AWSResponse:
    """The HTTP response of a fault, as the operation's service would send it."""
    request_id = str(uuid.uuid4())
    if fault == "not_implemented":
        headers = {"Content-Type": "text/html; charset=utf-8"}
        return _response(request, 500, headers, NOT_IMPLEMENTED_PAGE)
    error = service_error(fault, operation)
    message = _MESSAGES[fault].format(action=action) + f" (injected by {SETTING})"
    service = operation.service_model
    protocol = service.resolved_protocol
    code, text = escape(error.code), escape(message)
    if protocol == "query":
        side = "Receiver" if error.status >= 500 else "Sender"
        namespace = escape(service.metadata.get("xmlNamespace", ""), {'"': "&quot;"})
        body = (
            f'<ErrorResponse xmlns="{namespace}"><Error><Type>{side}</Type><Code>{code}</Code>'
            f"<Message>{text}</Message></Error><RequestId>{request_id}</RequestId>"
            f"</ErrorResponse>"
        )
        headers = {"Content-Type": "text/xml", "x-amzn-RequestId": request_id}
    elif protocol == "ec2":
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{code}'
            f"</Code><Message>{text}</Message></Error></Errors>"
            f"<RequestID>{request_id}</RequestID></Response>"
        )
        headers = {"Content-Type": "text/xml;charset=UTF-8"}
    elif protocol == "rest-xml":
        host_id = uuid.uuid4().hex
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{text}</Message><RequestId>{request_id}</RequestId>"
            f"<HostId>{host_id}</HostId></Error>"
        )
        headers = {
            "Content-Type": "application/xml",
            "x-amz-request-id": request_id,
            "x-amz-id-2": host_id,
        }
    elif protocol == "json":
        version = service.metadata.get("jsonVersion", "1.0")
        body = json.dumps({"__type": error.code, "message": message})
        headers = {
            "Content-Type": f"application/x-amz-json-{version}",
            "x-amzn-RequestId": request_id,
        }
    else:  # rest-json
        body = json.dumps({"message": message})
        headers = {
            "Content-Type": "application/json",
            "x-amzn-ErrorType": error.code,
            "x-amzn-RequestId": request_id,
        }
    return _response(request, error.status, headers, body.encode())


def _response(
    request: AWSPreparedRequest, status: int, headers: dict[str, str], body: bytes
) -> AWSResponse:
    # The answer to a HEAD request has no body, an error's neither: S3's HeadObject
    # reaches the code as a bare HTTP status.
    if request.method == "HEAD":
        body = b""
    http_headers = HTTPHeaders()
    for name, value in {**headers, "Content-Length": str(len(body))}.items():
        http_headers[name] = value
    return AWSResponse(request.url, status, http_headers, _Body(body))


class _Body(io.BytesIO):
    """The raw body botocore reads an answer's content from."""

    def stream(self, **_: Any) -> Iterator[bytes]:
        while chunk := self.read(65536):
            yield chunk
