"""boto3 clients owned by the activity classes, and AWS errors mapped to a small taxonomy.

Throttling and transient faults are retried by Temporal; access denied and invalid requests
are not: retrying cannot fix them, so they surface on the case for a human.
"""

import contextvars
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError
from botocore.parsers import ResponseParserError
from temporalio.exceptions import ApplicationError

from activities.faults import FaultInjector
from activities.permissions import carry_call, describe_call, failed_call, track_calls
from config.settings import Settings

if TYPE_CHECKING:
    from activities.hands_off import QuenchIdentity

# Threads for reads one activity makes at once; shared by every activity, each read short.
_READS_THREAD = "quench-aws-reads"
_READS = ThreadPoolExecutor(max_workers=16, thread_name_prefix=_READS_THREAD)

ERROR_THROTTLED = "AwsThrottled"
ERROR_UNAVAILABLE = "AwsUnavailable"
ERROR_ACCESS_DENIED = "AwsAccessDenied"
ERROR_INVALID_REQUEST = "AwsInvalidRequest"
ERROR_NOT_FOUND = "AwsNotFound"
ERROR_OTHER = "AwsError"

NON_RETRYABLE_ERRORS = (ERROR_ACCESS_DENIED, ERROR_INVALID_REQUEST, ERROR_NOT_FOUND)

_THROTTLING = {
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "RequestThrottled",
    "SlowDown",
    "LimitExceededException",
}
# The services' own names for an internal failure (IAM ServiceFailure, SSM InternalServerError,
# Glue InternalServiceException, Athena InternalServerException, Lambda ServiceException).
_UNAVAILABLE = {
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalError",
    "InternalFailure",
    "RequestTimeout",
    "ServiceFailure",
    "InternalServerError",
    "InternalServerException",
    "InternalServiceException",
    "ServiceException",
}
_DENIED = {
    "AccessDenied",
    "AccessDeniedException",
    "AuthorizationError",  # SNS
    "UnauthorizedOperation",
    "AuthFailure",
    "InvalidClientTokenId",
    "ExpiredToken",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
}
# Organizations' answers that a retry cannot change: SCPs not enabled, too many attached,
# no such account in the organisation, a policy of that name already there.
_ORGANIZATION_REFUSALS = {
    "PolicyTypeNotEnabledException",
    "ConstraintViolationException",
    "TargetNotFoundException",
    "DuplicatePolicyException",
    "AWSOrganizationsNotInUseException",
}
_NOT_FOUND_SUFFIXES = (".NotFound", "NotFound", "NoSuchEntity", "NoSuchBucket", "NoSuchKey")
# An error without a body (S3's answer to a HEAD request) has only its HTTP status for a code.
_BARE_STATUSES = {
    "403": ERROR_ACCESS_DENIED,
    "404": ERROR_NOT_FOUND,
    "500": ERROR_UNAVAILABLE,
    "502": ERROR_UNAVAILABLE,
    "503": ERROR_UNAVAILABLE,
    "504": ERROR_UNAVAILABLE,
}
# The start of a web page, where the service's XML or JSON should be.
_WEB_PAGE = re.compile(rb"^\s*<(!doctype\s+html|html)[\s>]", re.IGNORECASE)


def classify(code: str) -> str:
    """The taxonomy type for an AWS error code."""
    if code in _BARE_STATUSES:
        return _BARE_STATUSES[code]
    if code in _THROTTLING:
        return ERROR_THROTTLED
    if code in _UNAVAILABLE:
        return ERROR_UNAVAILABLE
    if code in _DENIED:
        return ERROR_ACCESS_DENIED
    if code.endswith(_NOT_FOUND_SUFFIXES) or code == "NoSuchEntityException":
        return ERROR_NOT_FOUND
    if code.startswith(("Invalid", "Validation", "Malformed", "MissingParameter")):
        return ERROR_INVALID_REQUEST
    if code in {"IncorrectInstanceState", "IncorrectState", "UnsupportedOperation"}:
        return ERROR_INVALID_REQUEST
    if code in _ORGANIZATION_REFUSALS:
        return ERROR_INVALID_REQUEST
    return ERROR_OTHER


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def is_denied(exc: ClientError) -> bool:
    """Whether AWS refused the call for want of permission (whatever the service calls it)."""
    return classify(error_code(exc)) == ERROR_ACCESS_DENIED


def to_application_error(exc: ClientError, doing: str) -> ApplicationError:
    """The taxonomy's error, naming the AWS call that failed and, when it was denied, the
    IAM action it needed, so a human knows what to grant."""
    code = error_code(exc)
    call = failed_call()
    named = describe_call(*call) if call is not None and call[1] == exc.operation_name else None
    if _endpoint_lacks_operation(exc):
        return not_implemented(doing, named or exc.operation_name, code)
    kind = classify(code)
    message = str(exc.response.get("Error", {}).get("Message", ""))
    details: dict[str, str] = {"aws_error_code": code, "doing": doing}
    text = f"{doing}: {code}: {message}"
    if named is not None:
        details["call"] = named
        text += f" (call {named})"
    return ApplicationError(text, details, type=kind, non_retryable=kind in NON_RETRYABLE_ERRORS)


def not_implemented(doing: str, operation: str, code: str = "") -> ApplicationError:
    """An endpoint without the API (moto's server, a proxy, a partial emulation of AWS):
    retrying cannot help, so a human sees it on the case."""
    return ApplicationError(
        f"{doing}: the endpoint does not implement {operation}: "
        "it answered with a web page, not an AWS response",
        {"aws_error_code": code, "doing": doing},
        type=ERROR_INVALID_REQUEST,
        non_retryable=True,
    )


def _endpoint_lacks_operation(exc: ClientError) -> bool:
    """A 500 or 501 whose body is a page, not the service's XML or JSON: botocore then has
    no error code but the HTTP status."""
    metadata = exc.response.get("ResponseMetadata", {})
    status = metadata.get("HTTPStatusCode")
    content_type = str(metadata.get("HTTPHeaders", {}).get("content-type", ""))
    if status not in (500, 501) or error_code(exc) not in ("", str(status)):
        return False
    return status == 501 or content_type.startswith(("text/html", "text/plain"))


def _is_web_page(exc: ResponseParserError) -> bool:
    """botocore's XML parser names the body it could not read at the end of its message."""
    _, _, body = str(exc).partition("Further retries may succeed:\n")
    return bool(_WEB_PAGE.match(body.removeprefix("b'").removeprefix('b"').encode()))


@contextmanager
def aws_errors(doing: str) -> Iterator[None]:
    """Re-raise boto errors as the taxonomy's ApplicationErrors, naming what was being done."""
    try:
        yield
    except ClientError as exc:
        raise to_application_error(exc, doing) from exc
    except ResponseParserError as exc:
        # The query and EC2 protocols cannot read an endpoint's HTML page at all.
        if _is_web_page(exc):
            # botocore's parser error does not say which call; this thread's last does.
            call = failed_call()
            raise not_implemented(doing, describe_call(*call) if call else "the call") from exc
        raise ApplicationError(f"{doing}: {exc}", type=ERROR_OTHER) from exc
    except EndpointConnectionError as exc:
        raise ApplicationError(f"{doing}: {exc}", type=ERROR_UNAVAILABLE) from exc
    except BotoCoreError as exc:
        raise ApplicationError(f"{doing}: {exc}", type=ERROR_OTHER) from exc


class AwsClients:
    """One boto3 session and its clients, created once at worker start and shared.

    Injected into the activity classes, so moto, or an assumed role in another account,
    stands in without patching anything.
    """

    def __init__(
        self,
        session: boto3.Session,
        region: str,
        endpoint_url: str | None = None,
        faults: FaultInjector | None = None,
    ) -> None:
        self._session = session
        self.region = region
        self._endpoint_url = endpoint_url
        # The lab's injected faults (QUENCH_LAB_FAULTS), installed on every client made.
        self._faults = faults
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        # Standard retry mode backs off on throttling before Temporal's own retry sees it.
        self._config = Config(retries={"max_attempts": 5, "mode": "standard"})
        # Who Quench is (learned at worker start), so no activity ever acts on it.
        self.identity: QuenchIdentity | None = None

    @classmethod
    def from_settings(cls, settings: Settings, faults: FaultInjector | None = None) -> "AwsClients":
        return cls(
            boto3.Session(region_name=settings.aws_region),
            settings.aws_region,
            settings.aws_endpoint_url,
            faults,
        )

    def with_session(self, session: boto3.Session) -> "AwsClients":
        """The same endpoint, faults and identity, with another session's credentials."""
        clients = AwsClients(session, self.region, self._endpoint_url, self._faults)
        clients.identity = self.identity
        return clients

    def access_key_id(self) -> str | None:
        """The access key these clients sign with (never its secret)."""
        credentials = self._session.get_credentials()
        return None if credentials is None else str(credentials.access_key)

    def client(self, service: str, region: str | None = None) -> Any:
        region = region or self.region
        with self._lock:
            key = (service, region)
            if key not in self._clients:
                client = self._session.client(
                    service,  # type: ignore[call-overload]
                    region_name=region,
                    endpoint_url=self._endpoint_url,
                    config=self._config,
                )
                track_calls(client)
                if self._faults is not None:
                    self._faults.install(client)
                self._clients[key] = client
            return self._clients[key]


def at_once(*calls: Callable[[], Any]) -> list[Any]:
    """Independent AWS reads made at the same time, their results in the order given; the
    first that failed raises, as if they had been made one after another, naming its AWS
    call as this thread's last. Each runs in a copy of the caller's context: the account
    it acts in and the activity it belongs to (boto3's clients are safe to share between
    threads)."""
    if threading.current_thread().name.startswith(_READS_THREAD):
        # Already one of the reads: its own are made in turn, never waiting on a thread
        # the reads around it may all be holding.
        outcomes = [_outcome(call) for call in calls]
    else:
        futures = [_READS.submit(contextvars.copy_context().run, _outcome, call) for call in calls]
        outcomes = [future.result() for future in futures]
    for _, error, call in outcomes:
        if error is not None:
            carry_call(call)
            raise error
    return [value for value, _, _ in outcomes]


def _outcome(call: Callable[[], Any]) -> tuple[Any, BaseException | None, tuple[str, str] | None]:
    # The pool's thread last served another read: its call must not name this one's error.
    carry_call(None)
    try:
        return call(), None, None
    except BaseException as error:  # handed to the caller's thread, which raises it
        return None, error, failed_call()
