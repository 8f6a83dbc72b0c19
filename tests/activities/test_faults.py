"""Fault injection against moto: each fault in each protocol, as botocore parses it and as
Quench maps it; the count of calls that fail; the setting's checks; the lab-only rule; and
an activity that meets an injected fault."""

import json
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.session
import pytest
import requests
from botocore.exceptions import ClientError
from botocore.parsers import ResponseParserError
from botocore.retries.standard import ExponentialBackoff
from moto.server import ThreadedMotoServer
from pydantic import ValidationError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.aws import (
    ERROR_ACCESS_DENIED,
    ERROR_INVALID_REQUEST,
    ERROR_THROTTLED,
    ERROR_UNAVAILABLE,
    AwsClients,
    aws_errors,
)
from activities.eradication import EradicationActivities
from activities.evidence import EvidenceStore
from activities.faults import PROTOCOLS, FaultInjector, FaultRule, parse_fault_plan
from activities.iam import IamActivities
from config.settings import Settings
from models.activities import AccessKeyInput, RemoveResourceInput
from stack.processes import free_port
from tests.activities.conftest import EVIDENCE_BUCKET
from tests.support import ACCOUNT, REGION

# AwsClients' Config(retries={"max_attempts": 5}): botocore's max_attempts counts retries,
# so a call that keeps failing is sent six times.
RETRIES = 5
CASE = f"case-{ACCOUNT}-AKIAEXAMPLEMALLORY01"
TOPIC = f"arn:aws:sns:{REGION}:{ACCOUNT}:quench-cases"

# One operation of each service Quench calls, by protocol: query (IAM, STS, SNS), ec2,
# rest-xml (S3, and a HEAD, which AWS answers without a body), json (SSM, CloudTrail,
# Glue) and rest-json (Athena, Lambda).
CALLS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "iam:DeleteUser": ("iam", "delete_user", {"UserName": "mallory"}),
    "sts:GetCallerIdentity": ("sts", "get_caller_identity", {}),
    "sns:Publish": ("sns", "publish", {"TopicArn": TOPIC, "Message": "case closed"}),
    "ec2:StopInstances": ("ec2", "stop_instances", {"InstanceIds": ["i-0a1b2c3d4e5f60718"]}),
    "s3:PutObject": ("s3", "put_object", {"Bucket": "evidence", "Key": "k", "Body": b"{}"}),
    "s3:HeadObject": ("s3", "head_object", {"Bucket": "evidence", "Key": "k"}),
    "ssm:SendCommand": (
        "ssm",
        "send_command",
        {"InstanceIds": ["i-0a1b2c3d4e5f60718"], "DocumentName": "AWS-RunShellScript"},
    ),
    "cloudtrail:LookupEvents": ("cloudtrail", "lookup_events", {}),
    "glue:GetTable": ("glue", "get_table", {"DatabaseName": "quench", "Name": "cloudtrail"}),
    "athena:GetQueryExecution": ("athena", "get_query_execution", {"QueryExecutionId": "q-1"}),
    "lambda:GetFunction": ("lambda", "get_function", {"FunctionName": "log-rotate"}),
}


@dataclass(frozen=True)
class Expected:
    exception: str  # the class botocore raises: the modeled error's, or ClientError
    code: str | None  # the parsed error code; None where botocore cannot parse the body
    status: int | None
    kind: str  # Quench's ApplicationError type


DENIED = ERROR_ACCESS_DENIED
THROTTLED = ERROR_THROTTLED
UNAVAILABLE = ERROR_UNAVAILABLE
LACKING = ERROR_INVALID_REQUEST  # the endpoint does not implement the operation

EXPECTED: dict[tuple[str, str], Expected] = {
    # access_denied: the service's own AccessDenied, never retried.
    ("iam:DeleteUser", "access_denied"): Expected("ClientError", "AccessDenied", 403, DENIED),
    ("sts:GetCallerIdentity", "access_denied"): Expected(
        "ClientError", "AccessDenied", 403, DENIED
    ),
    ("sns:Publish", "access_denied"): Expected(
        "AuthorizationErrorException", "AuthorizationError", 403, DENIED
    ),
    ("ec2:StopInstances", "access_denied"): Expected(
        "ClientError", "UnauthorizedOperation", 403, DENIED
    ),
    ("s3:PutObject", "access_denied"): Expected("AccessDenied", "AccessDenied", 403, DENIED),
    ("s3:HeadObject", "access_denied"): Expected("ClientError", "403", 403, DENIED),
    ("ssm:SendCommand", "access_denied"): Expected(
        "AccessDeniedException", "AccessDeniedException", 400, DENIED
    ),
    ("cloudtrail:LookupEvents", "access_denied"): Expected(
        "AccessDeniedException", "AccessDeniedException", 400, DENIED
    ),
    ("glue:GetTable", "access_denied"): Expected(
        "AccessDeniedException", "AccessDeniedException", 400, DENIED
    ),
    ("athena:GetQueryExecution", "access_denied"): Expected(
        "ClientError", "AccessDeniedException", 403, DENIED
    ),
    ("lambda:GetFunction", "access_denied"): Expected(
        "ClientError", "AccessDeniedException", 403, DENIED
    ),
    # throttling: botocore retries it, then Quench's AwsThrottled, retried by Temporal.
    ("iam:DeleteUser", "throttling"): Expected("ClientError", "Throttling", 400, THROTTLED),
    ("sts:GetCallerIdentity", "throttling"): Expected("ClientError", "Throttling", 400, THROTTLED),
    ("sns:Publish", "throttling"): Expected("ClientError", "Throttling", 400, THROTTLED),
    ("ec2:StopInstances", "throttling"): Expected(
        "ClientError", "RequestLimitExceeded", 503, THROTTLED
    ),
    ("s3:PutObject", "throttling"): Expected("ClientError", "SlowDown", 503, THROTTLED),
    # Without a body S3's SlowDown is a bare 503: retried all the same.
    ("s3:HeadObject", "throttling"): Expected("ClientError", "503", 503, UNAVAILABLE),
    ("ssm:SendCommand", "throttling"): Expected(
        "ThrottlingException", "ThrottlingException", 400, THROTTLED
    ),
    ("cloudtrail:LookupEvents", "throttling"): Expected(
        "ThrottlingException", "ThrottlingException", 400, THROTTLED
    ),
    ("glue:GetTable", "throttling"): Expected(
        "ThrottlingException", "ThrottlingException", 400, THROTTLED
    ),
    ("athena:GetQueryExecution", "throttling"): Expected(
        "ClientError", "ThrottlingException", 429, THROTTLED
    ),
    ("lambda:GetFunction", "throttling"): Expected(
        "TooManyRequestsException", "TooManyRequestsException", 429, THROTTLED
    ),
    # internal_error: a 500 as the operation's model names it, retried by botocore first.
    ("iam:DeleteUser", "internal_error"): Expected(
        "ServiceFailureException", "ServiceFailure", 500, UNAVAILABLE
    ),
    ("sts:GetCallerIdentity", "internal_error"): Expected(
        "ClientError", "InternalFailure", 500, UNAVAILABLE
    ),
    ("sns:Publish", "internal_error"): Expected(
        "InternalErrorException", "InternalError", 500, UNAVAILABLE
    ),
    ("ec2:StopInstances", "internal_error"): Expected(
        "ClientError", "InternalError", 500, UNAVAILABLE
    ),
    ("s3:PutObject", "internal_error"): Expected("ClientError", "InternalError", 500, UNAVAILABLE),
    ("s3:HeadObject", "internal_error"): Expected("ClientError", "500", 500, UNAVAILABLE),
    ("ssm:SendCommand", "internal_error"): Expected(
        "InternalServerError", "InternalServerError", 500, UNAVAILABLE
    ),
    ("cloudtrail:LookupEvents", "internal_error"): Expected(
        "ClientError", "InternalFailure", 500, UNAVAILABLE
    ),
    ("glue:GetTable", "internal_error"): Expected(
        "InternalServiceException", "InternalServiceException", 500, UNAVAILABLE
    ),
    ("athena:GetQueryExecution", "internal_error"): Expected(
        "InternalServerException", "InternalServerException", 500, UNAVAILABLE
    ),
    ("lambda:GetFunction", "internal_error"): Expected(
        "ServiceException", "ServiceException", 500, UNAVAILABLE
    ),
    # not_implemented: the XML protocols cannot parse the page at all (and botocore does
    # not retry that); the others take the bare status, retried as a 500.
    ("iam:DeleteUser", "not_implemented"): Expected("ResponseParserError", None, None, LACKING),
    ("sts:GetCallerIdentity", "not_implemented"): Expected(
        "ResponseParserError", None, None, LACKING
    ),
    ("sns:Publish", "not_implemented"): Expected("ResponseParserError", None, None, LACKING),
    ("ec2:StopInstances", "not_implemented"): Expected("ResponseParserError", None, None, LACKING),
    ("s3:PutObject", "not_implemented"): Expected("ClientError", "500", 500, LACKING),
    ("s3:HeadObject", "not_implemented"): Expected("ClientError", "500", 500, LACKING),
    ("ssm:SendCommand", "not_implemented"): Expected("ClientError", "500", 500, LACKING),
    ("cloudtrail:LookupEvents", "not_implemented"): Expected("ClientError", "500", 500, LACKING),
    ("glue:GetTable", "not_implemented"): Expected("ClientError", "500", 500, LACKING),
    ("athena:GetQueryExecution", "not_implemented"): Expected("ClientError", "500", 500, LACKING),
    ("lambda:GetFunction", "not_implemented"): Expected("ClientError", "500", 500, LACKING),
}


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore waits up to seconds before retrying a throttled call; the tests keep its
    retries and skip the waiting."""
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.0)


def injector(plan: dict[str, Any]) -> FaultInjector:
    return FaultInjector(parse_fault_plan(plan))


@pytest.fixture
def faulty(mocked_aws: None, boto3_session: boto3.Session) -> Callable[..., AwsClients]:
    """AwsClients with these faults injected, on moto."""

    def make(faults: FaultInjector) -> AwsClients:
        return AwsClients(boto3_session, REGION, faults=faults)

    return make


def call(clients: AwsClients, key: str, region: str | None = None) -> Any:
    service, method, arguments = CALLS[key]
    return getattr(clients.client(service, region), method)(**arguments)


def test_the_calls_cover_every_protocol_the_injector_writes() -> None:
    session = botocore.session.Session()
    protocols = {
        session.get_service_model(service).resolved_protocol for service, *_ in CALLS.values()
    }
    assert protocols == set(PROTOCOLS)
    assert {fault for _, fault in EXPECTED} == {
        "access_denied",
        "throttling",
        "internal_error",
        "not_implemented",
    }
    assert {key for key, _ in EXPECTED} == set(CALLS)


# -- each fault, parsed by botocore and mapped by Quench -------------------------------


@pytest.mark.parametrize(("key", "fault"), sorted(EXPECTED))
def test_each_fault_parses_as_aws_sends_it_and_maps_to_its_error_type(
    faulty: Callable[..., AwsClients], key: str, fault: str
) -> None:
    expected = EXPECTED[(key, fault)]
    faults = injector({key: fault})
    clients = faulty(faults)

    with pytest.raises(ApplicationError) as raised, aws_errors(f"call {key}"):
        call(clients, key)

    parsed = raised.value.__cause__
    assert type(parsed).__name__ == expected.exception
    # botocore retries throttling and 500s; an unreadable body fails before its retry handler.
    retried = 0 if fault == "access_denied" or expected.code is None else RETRIES
    if expected.code is None:
        assert isinstance(parsed, ResponseParserError)
        assert "<!doctype html>" in str(parsed)
    else:
        assert isinstance(parsed, ClientError)
        assert parsed.response["Error"]["Code"] == expected.code
        metadata = parsed.response["ResponseMetadata"]
        assert metadata["HTTPStatusCode"] == expected.status
        assert metadata["RetryAttempts"] == retried
    assert faults.calls(key) == retried + 1

    error = raised.value
    assert error.type == expected.kind
    assert error.non_retryable is (expected.kind in {DENIED, LACKING})
    assert error.message.startswith(f"call {key}: ")
    if fault == "not_implemented":
        assert f"the endpoint does not implement {key}" in error.message
        assert "<" not in error.message  # no page in the message
    elif expected.code is not None and not expected.code.isdigit():
        assert error.message.startswith(f"call {key}: {expected.code}: ")
        assert "injected by QUENCH_LAB_FAULTS" in error.message


def test_access_denied_names_the_call_that_was_denied(faulty: Callable[..., AwsClients]) -> None:
    clients = faulty(injector({"ec2:StopInstances": "access_denied"}))
    with pytest.raises(ClientError) as raised:
        call(clients, "ec2:StopInstances")
    assert "ec2:StopInstances" in raised.value.response["Error"]["Message"]


@pytest.mark.parametrize(
    ("key", "fault", "side"),
    [("iam:DeleteUser", "access_denied", "Sender"), ("sns:Publish", "internal_error", "Receiver")],
)
def test_a_query_error_says_whose_fault_it_is_and_carries_a_request_id(
    faulty: Callable[..., AwsClients], key: str, fault: str, side: str
) -> None:
    clients = faulty(injector({key: fault}))
    with pytest.raises(ClientError) as raised:
        call(clients, key)
    error: dict[str, Any] = dict(raised.value.response["Error"])
    assert error["Type"] == side
    assert len(raised.value.response["ResponseMetadata"]["RequestId"]) == 36


# -- which calls fail, and how many -----------------------------------------------------


def test_only_the_named_operation_fails(faulty: Callable[..., AwsClients]) -> None:
    clients = faulty(injector({"iam:DeleteUser": "access_denied"}))
    iam = clients.client("iam")
    iam.create_user(UserName="mallory")

    with pytest.raises(ClientError):
        iam.delete_user(UserName="mallory")

    assert iam.get_user(UserName="mallory")["User"]["UserName"] == "mallory"
    assert call(clients, "sts:GetCallerIdentity")["Account"] == ACCOUNT


def test_a_failed_call_reaches_no_one(faulty: Callable[..., AwsClients], iam: Any) -> None:
    """moto's own before-send handler comes after the injector's and sees the request too:
    it must not carry out the call the injector failed."""
    iam.create_user(UserName="mallory")
    clients = faulty(injector({"iam:DeleteUser": "access_denied"}))

    with pytest.raises(ClientError):
        call(clients, "iam:DeleteUser")

    assert [u["UserName"] for u in iam.list_users()["Users"]] == ["mallory"]


def test_without_times_every_call_fails(faulty: Callable[..., AwsClients]) -> None:
    faults = injector({"sts:GetCallerIdentity": "access_denied"})
    clients = faulty(faults)
    for _ in range(4):
        with pytest.raises(ClientError):
            call(clients, "sts:GetCallerIdentity")
    assert faults.calls("sts:GetCallerIdentity") == 4


def test_times_fails_the_first_calls_and_then_lets_them_through(
    faulty: Callable[..., AwsClients],
) -> None:
    faults = injector({"sts:GetCallerIdentity": {"fault": "access_denied", "times": 2}})
    clients = faulty(faults)
    outcomes = []
    for _ in range(4):
        try:
            outcomes.append(call(clients, "sts:GetCallerIdentity")["Account"])
        except ClientError as exc:
            outcomes.append(exc.response["Error"]["Code"])
    assert outcomes == ["AccessDenied", "AccessDenied", ACCOUNT, ACCOUNT]


def test_botocores_retries_are_calls_and_absorb_a_short_throttle(
    faulty: Callable[..., AwsClients],
) -> None:
    faults = injector({"iam:GetUser": {"fault": "throttling", "times": 3}})
    clients = faulty(faults)
    iam = clients.client("iam")
    iam.create_user(UserName="alice")

    response = iam.get_user(UserName="alice")

    assert response["User"]["UserName"] == "alice"
    assert response["ResponseMetadata"]["RetryAttempts"] == 3
    assert faults.calls("iam:GetUser") == 4


def test_a_longer_throttle_exhausts_botocores_retries_and_a_later_call_gets_through(
    faulty: Callable[..., AwsClients],
) -> None:
    faults = injector({"sts:GetCallerIdentity": {"fault": "throttling", "times": RETRIES + 3}})
    clients = faulty(faults)

    with pytest.raises(ApplicationError) as raised, aws_errors("who am i"):
        call(clients, "sts:GetCallerIdentity")
    assert raised.value.type == ERROR_THROTTLED
    assert raised.value.non_retryable is False

    # The next call, as Temporal's retry of the activity would make it, meets the rest.
    response = call(clients, "sts:GetCallerIdentity")
    assert response["ResponseMetadata"]["RetryAttempts"] == 2
    assert faults.calls("sts:GetCallerIdentity") == RETRIES + 1 + 3


def test_calls_are_counted_per_operation_across_regions(
    faulty: Callable[..., AwsClients],
) -> None:
    faults = injector({"sts:GetCallerIdentity": {"fault": "access_denied", "times": 2}})
    clients = faulty(faults)
    for region in ("us-east-1", "eu-west-1"):
        with pytest.raises(ClientError):
            call(clients, "sts:GetCallerIdentity", region)
    assert call(clients, "sts:GetCallerIdentity", "ap-southeast-2")["Account"] == ACCOUNT


def test_counting_is_exact_across_threads(faulty: Callable[..., AwsClients]) -> None:
    faults = injector({"sts:GetCallerIdentity": {"fault": "access_denied", "times": 50}})
    clients = faulty(faults)
    clients.client("sts")  # one client, shared as the worker's activity threads share it
    start = threading.Barrier(8)

    def calls(_: int) -> list[str]:
        start.wait()
        outcomes = []
        for _ in range(25):
            try:
                call(clients, "sts:GetCallerIdentity")
                outcomes.append("ok")
            except ClientError as exc:
                outcomes.append(exc.response["Error"]["Code"])
        return outcomes

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = [o for thread in pool.map(calls, range(8)) for o in thread]

    assert outcomes.count("AccessDenied") == 50
    assert outcomes.count("ok") == 150
    assert faults.calls("sts:GetCallerIdentity") == 200


def test_every_injected_fault_is_logged(
    faulty: Callable[..., AwsClients], caplog: pytest.LogCaptureFixture
) -> None:
    clients = faulty(
        injector(
            {
                "iam:DeleteUser": "access_denied",
                "sts:GetCallerIdentity": {"fault": "access_denied", "times": 2},
            }
        )
    )
    with caplog.at_level(logging.INFO, logger="activities.faults"):
        with pytest.raises(ClientError):
            call(clients, "iam:DeleteUser")
        for _ in range(3):
            try:
                call(clients, "sts:GetCallerIdentity")
            except ClientError:
                pass
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "fault injected: iam:DeleteUser access_denied (call 1)"),
        ("WARNING", "fault injected: sts:GetCallerIdentity access_denied (call 1 of 2)"),
        ("WARNING", "fault injected: sts:GetCallerIdentity access_denied (call 2 of 2)"),
        ("INFO", "fault spent: sts:GetCallerIdentity after 2 calls; calls go through"),
    ]


def test_clients_without_an_injector_are_untouched(
    faulty: Callable[..., AwsClients], clients: AwsClients
) -> None:
    faulty(injector({"sts:GetCallerIdentity": "access_denied"})).client("sts")
    assert call(clients, "sts:GetCallerIdentity")["Account"] == ACCOUNT


# -- the setting ------------------------------------------------------------------------


def test_the_setting_reads_names_and_counts() -> None:
    plan = parse_fault_plan(
        '{"iam:DeleteUser": "access_denied", '
        '"ec2:StopInstances": {"fault": "throttling", "times": 3}, '
        '"s3:PutObject": {"fault": "not_implemented"}}'
    )
    assert plan == {
        "iam:DeleteUser": FaultRule(fault="access_denied"),
        "ec2:StopInstances": FaultRule(fault="throttling", times=3),
        "s3:PutObject": FaultRule(fault="not_implemented"),
    }
    assert FaultInjector(plan).describe() == (
        "ec2:StopInstances throttling for 3 calls, iam:DeleteUser access_denied, "
        "s3:PutObject not_implemented"
    )


@pytest.mark.parametrize("empty", ["", "  ", "{}", {}])
def test_an_empty_setting_is_no_fault(empty: Any) -> None:
    assert parse_fault_plan(empty) == {}


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        (
            {"iam:DeleteUsers": "access_denied"},
            "'iam:DeleteUsers': iam has no operation 'DeleteUsers'; did you mean iam:DeleteUser?",
        ),
        (
            {"iam:delete_user": "access_denied"},
            "'iam:delete_user': iam has no operation 'delete_user'; did you mean iam:DeleteUser?",
        ),
        (
            {"ec2:StopInstance": "throttling"},
            "'ec2:StopInstance': ec2 has no operation 'StopInstance'; "
            "did you mean ec2:StopInstances?",
        ),
        (
            {"iamv2:DeleteUser": "access_denied"},
            "'iamv2:DeleteUser': no AWS service 'iamv2'",
        ),
        (
            {"DeleteUser": "access_denied"},
            "'DeleteUser': name an operation as service:Operation, e.g. iam:DeleteUser",
        ),
        (
            {"iam:DeleteUser": "denied"},
            "'iam:DeleteUser': unknown fault 'denied'; one of access_denied, throttling, "
            "internal_error, not_implemented",
        ),
        (
            {"iam:DeleteUser": {"times": 2}},
            "'iam:DeleteUser': unknown fault None",
        ),
        (
            {"iam:DeleteUser": {"fault": "throttling", "times": 0}},
            "'iam:DeleteUser': times must be a whole number of calls, 1 or more: 0",
        ),
        (
            {"iam:DeleteUser": {"fault": "throttling", "times": -1}},
            "'iam:DeleteUser': times must be a whole number of calls, 1 or more: -1",
        ),
        (
            {"iam:DeleteUser": {"fault": "throttling", "times": 2.5}},
            "'iam:DeleteUser': times must be a whole number of calls, 1 or more: 2.5",
        ),
        (
            {"iam:DeleteUser": {"fault": "throttling", "times": "3"}},
            "'iam:DeleteUser': times must be a whole number of calls, 1 or more: '3'",
        ),
        (
            {"iam:DeleteUser": {"fault": "throttling", "times": True}},
            "'iam:DeleteUser': times must be a whole number of calls, 1 or more: True",
        ),
        (
            {"iam:DeleteUser": {"fault": "throttling", "count": 3}},
            "'iam:DeleteUser': unknown key 'count'; the keys are fault and times",
        ),
        (
            {"iam:DeleteUser": ["access_denied"]},
            '\'iam:DeleteUser\': a fault name or {"fault": ..., "times": N}',
        ),
        ('["iam:DeleteUser"]', "QUENCH_LAB_FAULTS must be a JSON object"),
        ('{"iam:DeleteUser": access_denied}', "QUENCH_LAB_FAULTS is not JSON"),
    ],
)
def test_a_bad_entry_is_refused_by_name(plan: Any, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_fault_plan(plan)
    assert message in str(raised.value)
    assert str(raised.value).startswith("QUENCH_LAB_FAULTS")


def test_a_service_whose_protocol_the_injector_cannot_write_is_refused() -> None:
    session = botocore.session.Session()
    unwritable = next(
        (
            name
            for name in session.get_available_services()
            if session.get_service_model(name).resolved_protocol not in PROTOCOLS
        ),
        None,
    )
    if unwritable is None:
        pytest.skip("every service of this botocore speaks a protocol the injector writes")
    operation = session.get_service_model(unwritable).operation_names[0]
    with pytest.raises(ValueError, match="the injector writes only query, ec2, json"):
        parse_fault_plan({f"{unwritable}:{operation}": "throttling"})


def test_the_injector_checks_its_plan_too() -> None:
    with pytest.raises(ValueError, match="iam has no operation 'DeleteUsers'"):
        FaultInjector({"iam:DeleteUsers": FaultRule(fault="access_denied")})


@pytest.fixture
def quench_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> pytest.MonkeyPatch:
    """No QUENCH_* setting but the test's own, and no .env file."""
    monkeypatch.chdir(tmp_path)
    for name in ("QUENCH_LAB", "QUENCH_LAB_FAULTS"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_the_lab_reads_the_setting_from_the_environment(quench_env: pytest.MonkeyPatch) -> None:
    quench_env.setenv("QUENCH_LAB", "true")
    quench_env.setenv(
        "QUENCH_LAB_FAULTS",
        json.dumps(
            {
                "iam:DeleteUser": "access_denied",
                "ec2:StopInstances": {"fault": "throttling", "times": 3},
            }
        ),
    )
    assert Settings().lab_faults == {
        "iam:DeleteUser": FaultRule(fault="access_denied"),
        "ec2:StopInstances": FaultRule(fault="throttling", times=3),
    }


@pytest.mark.parametrize("unset", [None, "", "{}"])
def test_no_faults_is_the_default_everywhere(
    quench_env: pytest.MonkeyPatch, unset: str | None
) -> None:
    if unset is not None:
        quench_env.setenv("QUENCH_LAB_FAULTS", unset)
    assert Settings().lab_faults == {}


def test_faults_are_refused_outside_the_lab(quench_env: pytest.MonkeyPatch) -> None:
    quench_env.setenv("QUENCH_LAB_FAULTS", '{"iam:DeleteUser": "access_denied"}')
    with pytest.raises(ValidationError, match="for the lab only"):
        Settings()
    with pytest.raises(ValidationError, match="for the lab only"):
        Settings(lab=False, aws_endpoint_url="http://127.0.0.1:5055")


def test_a_bad_entry_stops_the_settings_with_its_name(quench_env: pytest.MonkeyPatch) -> None:
    quench_env.setenv("QUENCH_LAB", "true")
    quench_env.setenv(
        "QUENCH_LAB_FAULTS", '{"iam:DeleteUser": {"fault": "throttling", "times": 0}}'
    )
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert "QUENCH_LAB_FAULTS: 'iam:DeleteUser': times must be" in str(raised.value)


# -- through real activities --------------------------------------------------------------


@pytest.fixture
def mallory(iam: Any) -> str:
    """The attacker's user, with a key and an inline policy."""
    iam.create_user(UserName="mallory")
    iam.create_access_key(UserName="mallory")
    iam.put_user_policy(
        UserName="mallory",
        PolicyName="escalate",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
            }
        ),
    )
    return "mallory"


@pytest.fixture
def eradication_with(
    faulty: Callable[..., AwsClients], s3: Any
) -> Callable[[FaultInjector], EradicationActivities]:
    s3.create_bucket(Bucket=EVIDENCE_BUCKET)

    def make(faults: FaultInjector) -> EradicationActivities:
        clients = faulty(faults)
        return EradicationActivities(clients, EvidenceStore(clients, EVIDENCE_BUCKET))

    return make


def test_an_activity_denied_delete_user_fails_for_good_naming_the_call(
    eradication_with: Callable[[FaultInjector], EradicationActivities],
    mallory: str,
    iam: Any,
    activity_env: ActivityEnvironment,
) -> None:
    eradication = eradication_with(injector({"iam:DeleteUser": "access_denied"}))
    request = RemoveResourceInput(case_id=CASE, operation="delete_user", name=mallory)

    with pytest.raises(ApplicationError) as raised:
        activity_env.run(eradication.remove_resource, request)

    error = raised.value
    assert error.type == ERROR_ACCESS_DENIED
    assert error.non_retryable is True
    assert error.message == (
        "delete_user mallory: AccessDenied: User is not authorized to perform: "
        "iam:DeleteUser (injected by QUENCH_LAB_FAULTS) (call iam:DeleteUser)"
    )
    assert error.details == (
        {
            "aws_error_code": "AccessDenied",
            "doing": "delete_user mallory",
            "call": "iam:DeleteUser",
        },
    )
    # Every part before the denied DeleteUser went; the user stays, as in AWS.
    assert iam.get_user(UserName=mallory)["User"]["UserName"] == mallory
    assert iam.list_access_keys(UserName=mallory)["AccessKeyMetadata"] == []
    assert iam.list_user_policies(UserName=mallory)["PolicyNames"] == []


def test_an_activity_run_again_after_a_passing_fault_finishes_the_job(
    eradication_with: Callable[[FaultInjector], EradicationActivities],
    mallory: str,
    iam: Any,
    activity_env: ActivityEnvironment,
) -> None:
    eradication = eradication_with(
        injector({"iam:DeleteUser": {"fault": "access_denied", "times": 1}})
    )
    request = RemoveResourceInput(case_id=CASE, operation="delete_user", name=mallory)
    with pytest.raises(ApplicationError):
        activity_env.run(eradication.remove_resource, request)

    result = activity_env.run(eradication.remove_resource, request)

    assert result.outcome == "removed"
    assert [u["UserName"] for u in iam.list_users()["Users"]] == []


def test_an_activity_meeting_an_endpoint_without_the_api_says_so(
    faulty: Callable[..., AwsClients],
    evidence: EvidenceStore,
    mallory: str,
    iam: Any,
    activity_env: ActivityEnvironment,
) -> None:
    key_id = iam.list_access_keys(UserName=mallory)["AccessKeyMetadata"][0]["AccessKeyId"]
    activities = IamActivities(
        faulty(injector({"iam:UpdateAccessKey": "not_implemented"})), evidence
    )

    with pytest.raises(ApplicationError) as raised:
        activity_env.run(
            activities.deactivate_access_key,
            AccessKeyInput(user_name=mallory, access_key_id=key_id),
        )

    error = raised.value
    assert error.type == ERROR_INVALID_REQUEST
    assert error.non_retryable is True
    assert error.message == (
        f"deactivate {key_id}: the endpoint does not implement iam:UpdateAccessKey: "
        "it answered with a web page, not an AWS response"
    )
    assert iam.list_access_keys(UserName=mallory)["AccessKeyMetadata"][0]["Status"] == "Active"


# -- on moto's server, as the lab runs it -------------------------------------------------


@pytest.fixture
def lab_endpoint(aws_env: None) -> Iterator[str]:
    """moto's server, AWS over HTTP at an endpoint URL as in the lab."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    yield url
    requests.post(f"{url}/moto-api/reset", timeout=10)
    server.stop()


def test_at_a_real_endpoint_a_failed_call_is_answered_in_place_and_sent_nowhere(
    lab_endpoint: str, boto3_session: boto3.Session
) -> None:
    faults = injector({"iam:DeleteUser": "access_denied"})
    iam = AwsClients(boto3_session, REGION, lab_endpoint, faults).client("iam")
    iam.create_user(UserName="mallory")

    with pytest.raises(ApplicationError) as raised, aws_errors("delete_user mallory"):
        iam.delete_user(UserName="mallory")

    assert raised.value.type == ERROR_ACCESS_DENIED
    plain = AwsClients(boto3_session, REGION, lab_endpoint).client("iam")
    assert [u["UserName"] for u in plain.list_users()["Users"]] == ["mallory"]


def test_not_implemented_maps_as_moto_servers_own_answer_for_an_api_it_lacks(
    lab_endpoint: str, boto3_session: boto3.Session
) -> None:
    """The injected fault against the real thing: an operation moto's server lacks."""
    arn = f"arn:aws:iam::{ACCOUNT}:user/mallory"
    real = AwsClients(boto3_session, REGION, lab_endpoint).client("iam")
    with pytest.raises(Exception) as answered, aws_errors("last accessed"):
        real.generate_service_last_accessed_details(Arn=arn)
    if not isinstance(answered.value, ApplicationError) or not isinstance(
        answered.value.__cause__, ResponseParserError
    ):
        pytest.skip("this moto answers GenerateServiceLastAccessedDetails")

    faults = injector({"iam:GenerateServiceLastAccessedDetails": "not_implemented"})
    injected = AwsClients(boto3_session, REGION, lab_endpoint, faults).client("iam")
    with pytest.raises(ApplicationError) as raised, aws_errors("last accessed"):
        injected.generate_service_last_accessed_details(Arn=arn)

    assert (raised.value.type, raised.value.message, raised.value.non_retryable) == (
        answered.value.type,
        answered.value.message,
        answered.value.non_retryable,
    )
    assert type(raised.value.__cause__) is type(answered.value.__cause__)
