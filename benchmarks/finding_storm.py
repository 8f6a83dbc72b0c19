"""A finding storm: N GuardDuty findings over M credentials, sent on loopback as fast as the
webhook takes them, then the same burst straight through the Temporal SDK.

    python -m benchmarks.finding_storm                 # 10,000 findings over 200 credentials
    python -m benchmarks.finding_storm --quick         # 500 over 20, for a look
    python -m benchmarks.finding_storm --json out.json

Real pieces: the Temporal dev server (file-backed, with the stack's SQLite pragmas), the
webhook under uvicorn, and a worker that runs case workflows only (the case's update
handler answers each finding, so nothing is accepted without one; the cases' AWS
activities are no part of taking a finding). A 503 or a refused connection is retried
with backoff, as EventBridge would; a finding is lost if its case does not hold it at the
end, which is checked by querying every case. Cases are counted through visibility.
"""

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from benchmarks.case_worker import READY_LINE
from config import names
from config.settings import Settings
from lab.guardduty import eventbridge_event, instance_role_finding
from models.finding import finding_from_guardduty
from stack.embedded import EmbeddedStack, StackConfig
from stack.processes import ManagedProcess, free_port
from webhook.intake import submit_finding
from workflows.case import CaseWorkflow

TOKEN = "finding-storm-benchmark-key-0001"
WEBHOOK_ACCOUNT = "210000000001"
SDK_ACCOUNT = "210000000002"
WARMUP_ACCOUNT = "210000000000"
MAX_ATTEMPTS = 30


@dataclass
class Burst:
    """What one burst did: every finding's fate and how long acceptance took."""

    path: str
    findings: int
    credentials: int
    accepted: int = 0
    retried: int = 0  # attempts answered 503 (or not answered) and sent again
    refused: int = 0  # answered 4xx: a finding that was never taken
    lost: int = 0  # sent, yet not in its case at the end
    cases_created: int = 0  # case executions, counted through visibility
    distinct_cases: int = 0
    seconds: float = 0.0
    findings_per_second: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list, repr=False)

    def summarise(self) -> None:
        self.findings_per_second = self.accepted / self.seconds if self.seconds else 0.0
        if self.latencies:
            ordered = sorted(self.latencies)
            self.p50_ms = statistics.median(ordered) * 1000
            self.p99_ms = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


def _key(account: str, credential: int) -> str:
    return f"ASIA{account[-4:]}{credential:012d}"


def storm(account: str, findings: int, credentials: int) -> list[dict[str, Any]]:
    """Distinct findings, credential after credential, so the first M open the cases and
    each credential's later findings join while other cases are opening."""
    start = datetime(2026, 11, 22, 7, 0, tzinfo=UTC)
    events = []
    for n in range(findings):
        credential, round_ = n % credentials, n // credentials
        seen = start + timedelta(seconds=round_)
        detail = instance_role_finding(
            account_id=account,
            region="us-east-1",
            access_key_id=_key(account, credential),
            principal_id=f"AROAEXAMPLEROLEID0001:i-{credential:017x}",
            role_name="web-app-role",
            instance_id=f"i-{credential:017x}",
            instance_profile_arn=f"arn:aws:iam::{account}:instance-profile/web-app-profile",
            instance_profile_id="AIPAEXAMPLEPROFILE01",
            remote_ip="198.51.100.23",
            api="ListUsers",
            service_name="iam.amazonaws.com",
            user_agent="aws-cli/2.15.30",
            first_seen=seen,
            last_seen=seen,
            count=1,
            finding_id=f"storm-{account}-{credential:04d}-{round_:05d}",
        )
        events.append(eventbridge_event(detail))
    return events


class _Connection:
    """One keep-alive HTTP/1.1 connection that POSTs and reads the answer: the least a
    sender can do, so that on a small machine the load generator leaves the CPU to what
    it measures (httpx cost as much CPU as the webhook itself)."""

    def __init__(self, host: str, port: int, path: str, headers: dict[str, str]) -> None:
        self._address = (host, port)
        self._head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        ).encode()
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, body: bytes) -> tuple[int, bytes]:
        if self._streams is None:
            self._streams = await asyncio.open_connection(*self._address)
        reader, writer = self._streams
        writer.write(self._head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        try:
            status = int((await reader.readline()).split()[1])
            length, close = 0, False
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
                elif name.lower() == b"connection" and value.strip().lower() == b"close":
                    close = True
            answer = await reader.readexactly(length)
        except (IndexError, ValueError, asyncio.IncompleteReadError) as exc:
            self.close()
            raise ConnectionError(f"broken answer: {exc}") from None
        if close:
            self.close()
        return status, answer

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


async def _through_webhook(
    host: str, port: int, events: list[dict[str, Any]], concurrency: int
) -> Burst:
    burst = Burst(path="webhook", findings=len(events), credentials=0)
    bodies = [json.dumps(e).encode() for e in events]
    headers = {"x-quench-token": TOKEN, "content-type": "application/json"}
    pending = iter(range(len(bodies)))
    outcomes: Counter[str] = Counter()

    async def sender() -> None:
        connection = _Connection(host, port, "/v1/events/eventbridge", headers)
        for index in pending:
            for attempt in range(MAX_ATTEMPTS):
                began = time.perf_counter()
                try:
                    status, answer = await connection.post(bodies[index])
                except OSError:
                    connection.close()
                    status, answer = 0, b""
                if 200 <= status < 300:
                    burst.latencies.append(time.perf_counter() - began)
                    outcomes[json.loads(answer)["outcome"]] += 1
                    burst.accepted += 1
                    break
                if 400 <= status < 500:
                    burst.refused += 1
                    break
                burst.retried += 1
                await asyncio.sleep(min(0.1 * 2**attempt, 2.0))
        connection.close()

    began = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(concurrency)))
    burst.seconds = time.perf_counter() - began
    burst.outcomes = dict(outcomes)
    return burst


async def _through_sdk(
    client: Client, settings: Settings, events: list[dict[str, Any]], concurrency: int
) -> Burst:
    burst = Burst(path="sdk", findings=len(events), credentials=0)
    findings = [finding_from_guardduty(e["detail"]) for e in events]
    pending = iter(findings)
    outcomes: Counter[str] = Counter()

    async def sender() -> None:
        for finding in pending:
            for attempt in range(MAX_ATTEMPTS):
                began = time.perf_counter()
                try:
                    result = await submit_finding(client, settings, finding)
                except Exception:
                    burst.retried += 1
                    await asyncio.sleep(min(0.1 * 2**attempt, 2.0))
                    continue
                burst.latencies.append(time.perf_counter() - began)
                outcomes[result.outcome.value] += 1
                burst.accepted += 1
                break

    began = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(concurrency)))
    burst.seconds = time.perf_counter() - began
    burst.outcomes = dict(outcomes)
    return burst


async def _count_cases(client: Client, account: str, expected: int) -> tuple[int, int]:
    """Case executions and distinct case ids for the account, once visibility settles."""
    query = f'WorkflowType = "CaseWorkflow" AND {names.SA_ACCOUNT_ID.name} = "{account}"'
    deadline = time.monotonic() + 60
    executions, ids = 0, 0
    while time.monotonic() < deadline:
        seen = [w.id async for w in client.list_workflows(query)]
        executions, ids = len(seen), len(set(seen))
        if executions >= expected:
            await asyncio.sleep(1)  # anything beyond `expected` would show up by now
            seen = [w.id async for w in client.list_workflows(query)]
            return len(seen), len(set(seen))
        await asyncio.sleep(0.5)
    return executions, ids


async def _count_lost(client: Client, events: list[dict[str, Any]]) -> int:
    """Findings sent that their case does not hold."""
    expected: dict[str, set[str]] = {}
    for event in events:
        detail = event["detail"]
        case_id = names.case_workflow_id(
            detail["accountId"], detail["resource"]["accessKeyDetails"]["accessKeyId"]
        )
        expected.setdefault(case_id, set()).add(detail["id"])
    lost = 0
    for case_id, finding_ids in expected.items():
        try:
            status = await client.get_workflow_handle(case_id).query(CaseWorkflow.status)
        except Exception:
            lost += len(finding_ids)
            continue
        lost += len(finding_ids - {f.id for f in status.findings})
    return lost


def machine() -> str:
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        total_kib = int(meminfo.read_text().split()[1])
        memory = f", {total_kib / 1024 / 1024:.0f} GiB"
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores{memory}, "
        f"Python {platform.python_version()}"
    )


async def run(
    findings: int = 10_000, credentials: int = 200, concurrency: int = 32, warmup: int = 100
) -> dict[str, Any]:
    state_dir = Path(tempfile.mkdtemp(prefix="quench-storm-"))
    webhook_queue, sdk_queue = "storm-webhook", "storm-sdk"
    # The storm's accounts are managed, each through a role the stub worker never assumes.
    accounts = state_dir / "accounts.toml"
    accounts.write_text(
        '[defaults]\nrole_name = "QuenchResponder"\ncloudtrail = { source = "lookup" }\n'
        + "".join(
            f'[[account]]\nid = "{account}"\n'
            for account in (WARMUP_ACCOUNT, WEBHOOK_ACCOUNT, SDK_ACCOUNT)
        )
    )
    config = StackConfig(
        state_dir=state_dir,
        temporal_port=free_port(),
        ui_port=free_port(),
        webhook_port=free_port(),
        codec_port=free_port(),
        lab=False,
        extra_env={
            "QUENCH_WEBHOOK_TOKEN": TOKEN,
            "QUENCH_TASK_QUEUE": webhook_queue,
            # Its case worker reads the cases in clear: taking a finding is what is timed.
            "QUENCH_ENCRYPT_PAYLOADS": "false",
            "QUENCH_WEBHOOK_ACCEPT_TIMEOUT_SECONDS": "30",
            "QUENCH_ACCOUNTS_FILE": str(accounts),
        },
    )
    stack = EmbeddedStack(config)
    by_name = {p.name: p for p in stack.processes}
    worker = ManagedProcess(
        "case-worker",
        [
            sys.executable,
            "-m",
            "benchmarks.case_worker",
            "--address",
            stack.temporal_address,
            "--task-queue",
            webhook_queue,
            "--task-queue",
            sdk_queue,
        ],
        ready=lambda: False,
        state_dir=state_dir,
        env=stack.child_env(),
    )
    worker.ready = lambda: READY_LINE.encode() in _read(worker.log_path)
    started: list[ManagedProcess] = []
    try:
        for process in (by_name["temporal"], worker, by_name["webhook"]):
            process.start()
            started.append(process)
        client = await Client.connect(
            stack.temporal_address, data_converter=pydantic_data_converter
        )
        host, port = config.host, config.webhook_port
        # Warm up every path (connections, caches, the worker's first tasks), on an
        # account of its own that no figure counts.
        warmup_events = storm(WARMUP_ACCOUNT, warmup, max(1, warmup // 10))
        await _through_webhook(host, port, warmup_events, 8)

        webhook_events = storm(WEBHOOK_ACCOUNT, findings, credentials)
        through_webhook = await _through_webhook(host, port, webhook_events, concurrency)
        sdk_settings = Settings(task_queue=sdk_queue)
        sdk_events = storm(SDK_ACCOUNT, findings, credentials)
        through_sdk = await _through_sdk(client, sdk_settings, sdk_events, concurrency)

        for burst, account, events in (
            (through_webhook, WEBHOOK_ACCOUNT, webhook_events),
            (through_sdk, SDK_ACCOUNT, sdk_events),
        ):
            burst.credentials = credentials
            burst.cases_created, burst.distinct_cases = await _count_cases(
                client, account, credentials
            )
            burst.lost = await _count_lost(client, events)
            burst.summarise()
    finally:
        for process in reversed(started):
            process.stop()
        shutil.rmtree(state_dir, ignore_errors=True)
    ratio = (
        through_webhook.findings_per_second / through_sdk.findings_per_second
        if through_sdk.findings_per_second
        else 0.0
    )
    return {
        "machine": machine(),
        "concurrency": concurrency,
        "webhook": _figures(through_webhook),
        "sdk": _figures(through_sdk),
        "webhook_to_sdk_ratio": ratio,
    }


def _figures(burst: Burst) -> dict[str, Any]:
    figures = asdict(burst)
    del figures["latencies"]
    return figures


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def report(figures: dict[str, Any]) -> str:
    lines = [f"Machine: {figures['machine']}; {figures['concurrency']} concurrent senders"]
    header = (
        f"{'path':8} {'findings':>8} {'accepted':>8} {'retried':>7} {'refused':>7} "
        f"{'lost':>4} {'cases':>5} {'p50 ms':>7} {'p99 ms':>7} {'findings/s':>10}"
    )
    lines.append(header)
    for path in ("webhook", "sdk"):
        b = figures[path]
        lines.append(
            f"{path:8} {b['findings']:>8} {b['accepted']:>8} {b['retried']:>7} "
            f"{b['refused']:>7} {b['lost']:>4} {b['cases_created']:>5} {b['p50_ms']:>7.1f} "
            f"{b['p99_ms']:>7.1f} {b['findings_per_second']:>10.0f}"
        )
        lines.append(f"         outcomes: {b['outcomes']}")
    lines.append(f"webhook / SDK throughput: {figures['webhook_to_sdk_ratio']:.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description="A finding storm through the webhook and straight through the SDK."
    )
    parser.add_argument("--findings", type=int, default=10_000)
    parser.add_argument("--credentials", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="500 findings over 20 credentials")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    findings, credentials = (500, 20) if args.quick else (args.findings, args.credentials)
    figures = asyncio.run(run(findings, credentials, args.concurrency))
    print(report(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    webhook, sdk = figures["webhook"], figures["sdk"]
    sound = all(b["lost"] == 0 and b["cases_created"] == credentials for b in (webhook, sdk))
    sys.exit(0 if sound else 1)


if __name__ == "__main__":
    main()
