"""One trace from a finding's delivery to the AWS calls its case makes: the webhook's
request, the case's update, its workflow, each activity, and each botocore call, asserted
with an in-memory exporter on the real app, a real worker and the dev server (AWS is moto,
in process). And the JSON log lines that carry the case id."""

import asyncio
import json
import logging
import uuid
from collections.abc import Callable, Iterator

import boto3
import httpx
import pytest
from moto import mock_aws
from opentelemetry import trace
from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio import activity
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

from activities.aws import AwsClients
from activities.hands_off import QuenchIdentity
from config import names
from config.settings import Settings
from config.telemetry import JsonFormatter, instrument_aws_calls, setup_tracing
from config.temporal import connect
from models.case import ApprovalInput, Phase
from stack.processes import free_port
from tests.e2e.support import wait_for, wait_for_phase
from tests.support import finding, user_key_event
from tests.workflows.test_case_workflow import FakeAws
from webhook.app import app
from webhook.intake import submit_finding
from worker import WORKFLOWS, build_worker, count_cases_by_phase
from workflows.case import CaseWorkflow

ACCOUNT = "123456789012"  # moto's
TOKEN = "a-real-webhook-secret-0123456789"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Every span this process finishes from now on, kept in memory."""
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.add_span_processor(processor)  # set by an earlier test in this process
    else:
        setup_tracing("quench-test", processor)
    instrument_aws_calls()
    state = dict(vars(app.state)["_state"])
    yield exporter
    exporter.clear()
    exporter.shutdown()  # the processor stays on the provider, exporting nothing
    BotocoreInstrumentor().uninstrument()
    vars(app.state)["_state"].clear()
    vars(app.state)["_state"].update(state)


async def test_one_trace_runs_from_the_webhook_request_to_each_aws_call(dev_server_env, spans):
    address = dev_server_env.client.service_client.config.target_host
    queue = f"traced-{uuid.uuid4()}"
    with mock_aws():
        iam = boto3.client("iam", region_name="us-east-1")
        iam.create_user(UserName="traced")
        key = iam.create_access_key(UserName="traced")["AccessKey"]["AccessKeyId"]
        s3 = boto3.client("s3", region_name="us-east-1")
        for bucket in ("evidence-traced", "trail-traced"):
            s3.create_bucket(Bucket=bucket)
        settings = Settings(
            account_id=ACCOUNT,
            temporal_address=address,
            task_queue=queue,
            scan_task_queue=queue,
            webhook_token=TOKEN,
            evidence_bucket="evidence-traced",
            cloudtrail_bucket="trail-traced",
            encrypt_payloads=False,
        )
        clients = AwsClients.from_settings(settings)
        clients.identity = QuenchIdentity.learn(clients, [])
        client = await connect(settings)  # with Temporal's tracing interceptor
        app.state.settings, app.state.client = settings, client
        async with (
            build_worker(client, settings, clients, poll_seconds=0.1),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://quench"
            ) as http,
        ):
            answer = await http.post(
                "/v1/events/eventbridge",
                json=user_key_event(
                    key, "traced", "AIDAEXAMPLETRACEDUSER", "198.51.100.9", ACCOUNT
                ),
                headers={settings.webhook_token_header: TOKEN},
            )
            assert answer.status_code == 202, answer.text
            handle = client.get_workflow_handle_for(
                CaseWorkflow.run, names.case_workflow_id(ACCOUNT, key)
            )
            await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
            await handle.terminate("test done")

    finished = spans.get_finished_spans()
    (request,) = [s for s in finished if s.name == "POST /v1/events/eventbridge" and _is_root(s)]
    in_trace = [s for s in finished if s.context.trace_id == request.context.trace_id]
    by_id = {s.context.span_id: s for s in in_trace}
    names_in_trace = {s.name for s in in_trace}
    assert "RunWorkflow:CaseWorkflow" in names_in_trace, sorted(names_in_trace)
    assert "RunActivity:resolve_principal" in names_in_trace, sorted(names_in_trace)
    # Each AWS call of an activity is a span inside that activity's span.
    aws_calls = [s for s in in_trace if (s.attributes or {}).get("rpc.system") == "aws-api"]
    assert aws_calls, sorted(names_in_trace)
    for call in aws_calls:
        assert any(a.name.startswith("RunActivity:") for a in _ancestors(call, by_id)), call.name
    assert any(_ancestors(call, by_id)[-1] is request for call in aws_calls)


def _is_root(span: ReadableSpan) -> bool:
    return span.parent is None


def _ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    """The span's parents, nearest first, as far as this trace's spans go."""
    found = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        found.append(span)
    return found


def test_a_json_log_line_carries_the_case_of_the_activity_that_logged() -> None:
    formatter = JsonFormatter()
    lines: list[str] = []

    def logs_something() -> None:
        record = logging.LogRecord(
            "quench.test", logging.INFO, __file__, 1, "removed %s", ("u",), None
        )
        lines.append(formatter.format(record))

    env = ActivityEnvironment()
    env.info = env.info.__class__(
        **{**env.info.__dict__, "workflow_id": "case-123456789012-AKIAEXAMPLE/investigation"}
    )
    env.run(activity.defn(name="logs_something")(logs_something))
    line = json.loads(lines[0])
    assert line["message"] == "removed u"
    assert line["case_id"] == "case-123456789012-AKIAEXAMPLE"
    assert line["activity_type"] == env.info.activity_type
    # Outside any workflow or activity: no case.
    record = logging.LogRecord("quench.test", logging.WARNING, __file__, 1, "plain", None, None)
    assert "case_id" not in json.loads(formatter.format(record))


async def test_case_metrics_and_the_sdks_are_served_for_prometheus(dev_server_env):
    port = free_port()
    runtime = Runtime(
        telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"127.0.0.1:{port}"))
    )
    client = await Client.connect(
        dev_server_env.client.service_client.config.target_host,
        runtime=runtime,
        data_converter=pydantic_data_converter,
    )
    queue = f"metrics-{uuid.uuid4()}"
    settings = Settings(
        task_queue=queue,
        scan_task_queue=queue,
        watch_seconds=1,
        check_every_seconds=1,
        delivery_lag_seconds=0,
    )
    key = f"ASIA{uuid.uuid4().hex[:16].upper()}"
    async with Worker(
        client, task_queue=queue, workflows=WORKFLOWS, activities=FakeAws().activities()
    ):
        accepted = await submit_finding(client, settings, finding(access_key_id=key))
        assert accepted.case_id is not None
        handle = client.get_workflow_handle_for(CaseWorkflow.run, accepted.case_id)
        waiting = await wait_for(handle, lambda s: bool(s.pending_actions()))
        counting = asyncio.create_task(count_cases_by_phase(client, runtime, every=0.2))
        try:
            before = await _scraped_once(port, lambda m: m.get("quench_cases_awaiting_approval"))
            await handle.execute_update(
                CaseWorkflow.approve_action,
                ApprovalInput(
                    action_id=waiting.pending_actions()[0].id, approver="a@example.com", reason="r"
                ),
            )
            await wait_for(handle, lambda s: any(p.phase is Phase.CONTAINED for p in s.phases))
            after = await _scraped_once(
                port, lambda m: m.get("quench_case_time_to_contain_seconds_count")
            )
        finally:
            counting.cancel()
        await handle.terminate("test done")
    # One approval asked for and waiting, counted from visibility too...
    assert before["quench_approvals_requested"] >= 1
    assert before["quench_cases_awaiting_approval"] >= 1
    # ...then settled, and the case contained once.
    assert after["quench_approvals_settled"] >= 1
    assert after["quench_case_time_to_contain_seconds_count"] == 1
    # Temporal's own, on the same endpoint.
    assert any(name.startswith("temporal_") for name in after)


async def _scraped_once(
    port: int, ready: Callable[[dict[str, float]], float | None]
) -> dict[str, float]:
    """The endpoint's samples, once `ready` finds what the test waits for in them."""
    async with asyncio.timeout(30):
        while True:
            metrics = _samples(await _scrape(port))
            if ready(metrics):
                return metrics
            await asyncio.sleep(0.2)


async def _scrape(port: int) -> str:
    async with httpx.AsyncClient(timeout=5) as http:
        return (await http.get(f"http://127.0.0.1:{port}/metrics")).text


def _samples(text: str) -> dict[str, float]:
    """Each metric's value, summed over its labels (this process runs one case of its own
    on this endpoint, and other tests' on other queues are not served here)."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name_and_labels, value = line.rsplit(" ", 1)
            name = name_and_labels.split("{", 1)[0]
            found[name] = found.get(name, 0.0) + float(value)
    return found
