"""AWS error codes mapped to the taxonomy, and boto errors turned into ApplicationErrors."""

import contextvars
import threading
from functools import partial
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
from botocore.parsers import ResponseParserError
from botocore.stub import Stubber
from temporalio.exceptions import ApplicationError

from activities.aws import (
    ERROR_ACCESS_DENIED,
    ERROR_INVALID_REQUEST,
    ERROR_NOT_FOUND,
    ERROR_OTHER,
    ERROR_THROTTLED,
    ERROR_UNAVAILABLE,
    AwsClients,
    at_once,
    aws_errors,
    classify,
)
from activities.permissions import failed_call


def client_error(code: str, message: str = "it went wrong") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, "SomeOperation")


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("Throttling", ERROR_THROTTLED),
        ("ThrottlingException", ERROR_THROTTLED),
        ("RequestLimitExceeded", ERROR_THROTTLED),
        ("ServiceUnavailable", ERROR_UNAVAILABLE),
        ("InternalError", ERROR_UNAVAILABLE),
        ("ServiceFailure", ERROR_UNAVAILABLE),  # IAM
        ("InternalServerError", ERROR_UNAVAILABLE),  # SSM
        ("InternalServiceException", ERROR_UNAVAILABLE),  # Glue
        ("InternalServerException", ERROR_UNAVAILABLE),  # Athena
        ("ServiceException", ERROR_UNAVAILABLE),  # Lambda
        ("AccessDenied", ERROR_ACCESS_DENIED),
        ("AccessDeniedException", ERROR_ACCESS_DENIED),
        ("AuthorizationError", ERROR_ACCESS_DENIED),  # SNS
        ("UnauthorizedOperation", ERROR_ACCESS_DENIED),
        ("ExpiredToken", ERROR_ACCESS_DENIED),
        ("NoSuchEntity", ERROR_NOT_FOUND),
        ("NoSuchBucket", ERROR_NOT_FOUND),
        ("InvalidInstanceID.NotFound", ERROR_NOT_FOUND),
        ("InvalidVolume.NotFound", ERROR_NOT_FOUND),
        ("ValidationError", ERROR_INVALID_REQUEST),
        ("InvalidParameterValue", ERROR_INVALID_REQUEST),
        ("MalformedPolicyDocument", ERROR_INVALID_REQUEST),
        ("IncorrectInstanceState", ERROR_INVALID_REQUEST),
        # An error without a body, as S3 answers a HEAD request: its HTTP status alone.
        ("403", ERROR_ACCESS_DENIED),
        ("404", ERROR_NOT_FOUND),
        ("500", ERROR_UNAVAILABLE),
        ("503", ERROR_UNAVAILABLE),
        ("400", ERROR_OTHER),
        ("SomethingNobodyHasSeen", ERROR_OTHER),
        ("", ERROR_OTHER),
    ],
)
def test_classify(code: str, kind: str) -> None:
    assert classify(code) == kind


@pytest.mark.parametrize(
    ("code", "kind", "non_retryable"),
    [
        ("Throttling", ERROR_THROTTLED, False),
        ("ServiceUnavailable", ERROR_UNAVAILABLE, False),
        ("AccessDenied", ERROR_ACCESS_DENIED, True),
        ("NoSuchEntity", ERROR_NOT_FOUND, True),
        ("InvalidInstanceID.NotFound", ERROR_NOT_FOUND, True),
        ("ValidationError", ERROR_INVALID_REQUEST, True),
        ("SomethingNobodyHasSeen", ERROR_OTHER, False),
    ],
)
def test_aws_errors_turns_client_errors_into_application_errors(
    code: str, kind: str, non_retryable: bool
) -> None:
    original = client_error(code, "the details")
    with pytest.raises(ApplicationError) as raised, aws_errors("stop instance i-1"):
        raise original
    error = raised.value
    assert error.type == kind
    assert error.non_retryable is non_retryable
    assert error.message == f"stop instance i-1: {code}: the details"
    assert error.details == ({"aws_error_code": code, "doing": "stop instance i-1"},)
    assert error.__cause__ is original


def test_aws_errors_maps_an_unreachable_endpoint_to_a_retryable_unavailable() -> None:
    with pytest.raises(ApplicationError) as raised, aws_errors("describe instance i-1"):
        raise EndpointConnectionError(endpoint_url="https://ec2.us-east-1.amazonaws.com")
    assert raised.value.type == ERROR_UNAVAILABLE
    assert raised.value.non_retryable is False
    assert raised.value.message.startswith("describe instance i-1: ")


def test_aws_errors_maps_other_botocore_errors_to_a_retryable_other() -> None:
    with pytest.raises(ApplicationError) as raised, aws_errors("get role web"):
        raise NoCredentialsError()
    assert raised.value.type == ERROR_OTHER
    assert raised.value.non_retryable is False


def test_aws_errors_lets_other_exceptions_through_untouched() -> None:
    with pytest.raises(KeyError), aws_errors("read a response"):
        raise KeyError("Reservations")


def test_an_error_names_the_call_that_failed_and_the_actions_it_needed():
    clients = AwsClients(boto3.Session(region_name="us-east-1"), "us-east-1")
    iam, s3 = clients.client("iam"), clients.client("s3")
    with Stubber(iam) as iam_stub, Stubber(s3) as s3_stub:
        iam_stub.add_client_error("delete_user", "AccessDenied", "not allowed", 403)
        s3_stub.add_client_error("head_object", "AccessDenied", "Forbidden", 403)
        with pytest.raises(ApplicationError) as denied:
            with aws_errors("delete user backdoor"):
                iam.delete_user(UserName="backdoor")
        with pytest.raises(ApplicationError) as unreadable:
            with aws_errors("read evidence"):
                s3.head_object(Bucket="evidence", Key="cases/x")

    assert denied.value.type == ERROR_ACCESS_DENIED and denied.value.non_retryable
    assert denied.value.message == (
        "delete user backdoor: AccessDenied: not allowed (call iam:DeleteUser)"
    )
    assert denied.value.details[0]["call"] == "iam:DeleteUser"
    # A call authorised by other actions than its own name says which.
    assert unreadable.value.message.endswith(
        "(call s3:HeadObject (needs s3:GetObject, s3:ListBucket))"
    )


def http_error(status: int, code: str, content_type: str | None) -> ClientError:
    """A ClientError as botocore makes it from a response with this status and type."""
    headers = {"content-type": content_type} if content_type else {}
    response: Any = {
        "Error": {"Code": code, "Message": "Internal Server Error"},
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers},
    }
    return ClientError(response, "SendCommand")


@pytest.mark.parametrize(
    ("status", "code", "content_type"),
    [
        (500, "500", "text/html; charset=utf-8"),
        (500, "500", "text/plain"),
        (501, "501", "text/html"),
        (501, "501", None),
        (501, "", None),
    ],
)
def test_an_endpoint_without_the_operation_is_a_non_retryable_invalid_request(
    status: int, code: str, content_type: str | None
) -> None:
    with pytest.raises(ApplicationError) as raised, aws_errors("probe i-1"):
        raise http_error(status, code, content_type)
    assert raised.value.type == ERROR_INVALID_REQUEST
    assert raised.value.non_retryable is True
    assert raised.value.message == (
        "probe i-1: the endpoint does not implement SendCommand: "
        "it answered with a web page, not an AWS response"
    )


@pytest.mark.parametrize(
    ("status", "code", "content_type", "kind"),
    [
        # S3's answer to a HEAD that failed inside S3: no body, its usual type.
        (500, "500", "application/xml", ERROR_UNAVAILABLE),
        (500, "500", None, ERROR_UNAVAILABLE),
        # The service's own error, in an odd type, is the service's error.
        (500, "InternalError", "text/html", ERROR_UNAVAILABLE),
        (502, "502", "text/html", ERROR_UNAVAILABLE),
    ],
)
def test_a_5xx_from_the_service_stays_a_retryable_outage(
    status: int, code: str, content_type: str | None, kind: str
) -> None:
    with pytest.raises(ApplicationError) as raised, aws_errors("probe i-1"):
        raise http_error(status, code, content_type)
    assert raised.value.type == kind
    assert raised.value.non_retryable is False


def test_an_xml_parser_given_a_web_page_says_the_endpoint_lacks_the_operation() -> None:
    page = b"<!doctype html>\n<html lang=en>\n<title>500 Internal Server Error</title>\n"
    unparsed = ResponseParserError(
        "Unable to parse response (syntax error: line 1, column 0), invalid XML received. "
        f"Further retries may succeed:\n{page!r}"
    )
    with pytest.raises(ApplicationError) as raised, aws_errors("get role web"):
        raise unparsed
    assert raised.value.type == ERROR_INVALID_REQUEST
    assert raised.value.non_retryable is True
    assert raised.value.message.startswith("get role web: the endpoint does not implement")
    assert raised.value.__cause__ is unparsed


def test_an_xml_parser_given_broken_xml_is_a_retryable_other() -> None:
    with pytest.raises(ApplicationError) as raised, aws_errors("get role web"):
        raise ResponseParserError(
            "Unable to parse response (no element found: line 1, column 40), invalid XML "
            "received. Further retries may succeed:\nb'<GetRoleResponse><GetRoleResult>'"
        )
    assert raised.value.type == ERROR_OTHER
    assert raised.value.non_retryable is False


_SCOPE: contextvars.ContextVar[str] = contextvars.ContextVar("test_scope", default="none")


def test_reads_at_once_answer_in_order_on_other_threads_in_the_callers_context() -> None:
    _SCOPE.set("account 111111111111")
    caller = threading.get_ident()
    seen: list[tuple[str, bool]] = []

    def read(value: int) -> Any:
        seen.append((_SCOPE.get(), threading.get_ident() != caller))
        return value

    assert at_once(lambda: read(1), lambda: read(2), lambda: read(3)) == [1, 2, 3]
    assert seen == [("account 111111111111", True)] * 3


def test_a_read_at_once_that_fails_names_its_own_call(clients: AwsClients, iam: Any) -> None:
    """The error of a read made on another thread names that read's call, not the last
    call this thread made: a human is told which permission to grant."""
    iam.list_users()
    with pytest.raises(ApplicationError) as caught, aws_errors("capture role missing"):
        at_once(lambda: iam.list_roles(), lambda: iam.get_role(RoleName="missing"))
    assert failed_call() == ("iam", "GetRole")
    assert "(call iam:GetRole)" in str(caught.value)


def test_reads_at_once_within_reads_at_once_never_wait_on_each_other() -> None:
    """Every thread of the pool holds an outer read before any makes its own: each makes
    them in turn, so none waits for a thread its neighbours hold (a deadlock otherwise)."""
    all_held = threading.Event()
    count = [0]
    lock = threading.Lock()

    def outer(i: int) -> list[int]:
        with lock:
            count[0] += 1
            if count[0] == 16:
                all_held.set()
        all_held.wait()
        return list(at_once(lambda: i, lambda: -i))

    results: list[Any] = []
    done = threading.Thread(
        target=lambda: results.append(at_once(*(partial(outer, i) for i in range(40)))),
        daemon=True,
    )
    done.start()
    # Generous: the reads take microseconds; a deadlock never ends.
    done.join(timeout=60)
    assert results == [[[i, -i] for i in range(40)]]
