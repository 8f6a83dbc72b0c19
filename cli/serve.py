"""The long-running processes and the one-time setup, as commands: `quench worker`,
`quench webhook` and `quench setup`, for running Quench on a Temporal of one's own.

Each reads the same QUENCH_* settings as the embedded stack passes its children, so the
README's "Running against your AWS" and `quench up` run the same code.
"""

import argparse
import asyncio
import json
import logging
from datetime import timedelta

import uvicorn
from google.protobuf.duration_pb2 import Duration
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.api.workflowservice.v1 import (
    DescribeNamespaceRequest,
    RegisterNamespaceRequest,
)
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from codec.aesgcm import generate_key_entry
from codec.server import create_codec_app, uvicorn_config
from config import names
from config.settings import Settings, settings_or_exit
from config.telemetry import setup_logging
from config.temporal import connect, search_attributes_wanting

log = logging.getLogger("quench.setup")

DEFAULT_RETENTION_DAYS = 30
# Setup runs beside a Temporal that is still starting (compose, the README's steps).
DEFAULT_WAIT_SECONDS = 60.0
# A namespace just registered is not known to every frontend until its cache refreshes.
NAMESPACE_VISIBLE_WITHIN = timedelta(seconds=60)


class SetupError(Exception):
    """Why the namespace or a search attribute could not be made ready; nothing is undone.
    `unavailable`: Temporal answered that it cannot serve yet."""

    def __init__(self, message: str, unavailable: bool = False) -> None:
        super().__init__(message)
        self.unavailable = unavailable


def _setup_error(doing: str, exc: RPCError) -> SetupError:
    return SetupError(f"{doing}: {exc.message}", exc.status is RPCStatusCode.UNAVAILABLE)


def add_process_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    worker = commands.add_parser(
        "worker", help="run a worker: case workflows and every AWS activity (QUENCH_* settings)"
    )
    worker.add_argument(
        "--queue",
        choices=["cases", "scans", "both"],
        default="both",
        help="cases: case workflows and containment's activities; scans: CloudTrail's long "
        "reads (QUENCH_SCAN_TASK_QUEUE); both (the default)",
    )
    worker.set_defaults(process="worker")
    webhook = commands.add_parser(
        "webhook",
        help="run the finding webhook on QUENCH_WEBHOOK_HOST:QUENCH_WEBHOOK_PORT",
    )
    webhook.add_argument("--host", help="listen address (default: QUENCH_WEBHOOK_HOST)")
    webhook.add_argument("--port", type=int, help="listen port (default: QUENCH_WEBHOOK_PORT)")
    webhook.set_defaults(process="webhook")
    setup = commands.add_parser(
        "setup",
        help="make a Temporal ready for Quench: its namespace (registered when missing) and "
        "search attributes; safe to run again",
    )
    setup.add_argument(
        "--retention-days",
        type=int,
        default=DEFAULT_RETENTION_DAYS,
        help="how long a closed case's history is kept, for a namespace this registers "
        f"(default {DEFAULT_RETENTION_DAYS}); an existing namespace keeps its own",
    )
    setup.add_argument(
        "--wait",
        type=float,
        default=DEFAULT_WAIT_SECONDS,
        help=f"how long to wait for Temporal to answer (default {DEFAULT_WAIT_SECONDS:g} s)",
    )
    setup.set_defaults(process="setup")
    codec = commands.add_parser(
        "codec-server",
        help="serve the payload codec to the Web UI and `temporal --codec-endpoint`, on "
        "QUENCH_CODEC_HOST:QUENCH_CODEC_PORT (needs QUENCH_PAYLOAD_KEYS, QUENCH_CODEC_TOKEN)",
    )
    codec.set_defaults(process="codec-server")
    keygen = commands.add_parser(
        "keygen",
        help='print a new payload key as QUENCH_PAYLOAD_KEYS takes it: {"id": "base64"}',
    )
    keygen.add_argument("--key-id", help="its id (default: today's date and a random suffix)")
    keygen.set_defaults(process="keygen")


def run_process_command(args: argparse.Namespace) -> int:
    if args.process == "keygen":
        key_id, key = generate_key_entry(args.key_id)
        print(json.dumps({key_id: key}), flush=True)
        return 0
    if args.process == "codec-server":
        return run_codec_server()
    if args.process == "worker":
        import worker

        queues = worker.QUEUES if args.queue == "both" else (args.queue,)
        asyncio.run(worker.main(queues=queues))
        return 0
    if args.process == "webhook":
        return run_webhook(args.host, args.port)
    return run_setup(args.retention_days, args.wait)


def run_webhook(host: str | None = None, port: int | None = None) -> int:
    """The webhook under uvicorn, on the settings' listen address unless told another."""
    settings = settings_or_exit("webhook")
    # What the app would refuse at start-up, said before uvicorn logs a traceback of it.
    if not settings.webhook_tokens():
        raise SystemExit("webhook not started: QUENCH_WEBHOOK_TOKEN is required outside the lab")
    if not settings.managed_accounts:
        raise SystemExit(
            "webhook not started: QUENCH_ACCOUNT_ID or QUENCH_ACCOUNTS_FILE is required "
            "outside the lab (findings of any other account are ignored)"
        )
    try:
        settings.require_payload_encryption()
    except ValueError as exc:
        raise SystemExit(f"webhook not started: {exc}") from None
    setup_logging(settings.log_format)
    uvicorn.run(
        "webhook.app:app",
        # Its loggers go to the root's handler: text or JSON, as the settings say.
        log_config=None,
        host=host or settings.webhook_host,
        port=port or settings.webhook_port,
        # Behind a load balancer or API gateway, the client's address is in its headers.
        proxy_headers=True,
    )
    return 0


def run_codec_server() -> int:
    """The codec server, with the keys and token of the settings."""
    settings = settings_or_exit("codec server")
    codec = settings.payload_codec()
    if codec is None or settings.codec_token is None:
        raise SystemExit(
            "codec server not started: it needs QUENCH_PAYLOAD_KEYS (the keys that encrypt the "
            "payloads) and QUENCH_CODEC_TOKEN (`quench keygen` and `openssl rand -hex 32`)"
        )
    setup_logging(settings.log_format)
    app = create_codec_app(codec, settings.codec_token.get_secret_value(), settings.codec_origin)
    print(
        f"codec server on {settings.codec_host}:{settings.codec_port} for the Web UI at "
        f"{settings.codec_origin}",
        flush=True,
    )
    uvicorn.Server(uvicorn_config(app, settings.codec_host, settings.codec_port)).run()
    return 0


def run_setup(retention_days: int, wait_seconds: float = DEFAULT_WAIT_SECONDS) -> int:
    settings = settings_or_exit("setup")

    async def go() -> None:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + wait_seconds
        client = await _connect_within(settings, wait_seconds)
        while True:
            try:
                await ensure_namespace(client, settings.temporal_namespace, retention_days)
                await ensure_search_attributes(client, settings.temporal_namespace)
                return
            except SetupError as exc:
                # A server that accepts connections while it is still starting answers
                # UNAVAILABLE for a while: waited out like one that does not answer.
                if not exc.unavailable or loop.time() > give_up:
                    raise
                await asyncio.sleep(1)

    try:
        asyncio.run(go())
    except SetupError as exc:
        print(f"error: {exc}", flush=True)
        return 1
    except RuntimeError as exc:  # how the client says it cannot connect
        print(f"error: cannot reach Temporal at {settings.temporal_address}: {exc}", flush=True)
        return 1
    print(f"Temporal at {settings.temporal_address} is ready for Quench.", flush=True)
    return 0


async def _connect_within(settings: Settings, seconds: float) -> Client:
    """A client, once Temporal answers; RuntimeError (the client's own) after `seconds`."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + seconds
    while True:
        try:
            return await connect(settings)
        except RuntimeError:
            if loop.time() > give_up:
                raise
            await asyncio.sleep(1)


async def ensure_namespace(client: Client, namespace: str, retention_days: int) -> None:
    """Register the namespace unless it exists (an existing one is left as it is)."""
    try:
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=namespace)
        )
    except RPCError as exc:
        if exc.status is not RPCStatusCode.NOT_FOUND:
            raise _setup_error(f"cannot read namespace {namespace}", exc) from None
    else:
        print(f"namespace {namespace}: exists", flush=True)
        return
    if retention_days < 1:
        raise SetupError("--retention-days must be at least 1")
    try:
        await client.workflow_service.register_namespace(
            RegisterNamespaceRequest(
                namespace=namespace,
                workflow_execution_retention_period=Duration(seconds=retention_days * 86400),
                description="Quench: one workflow per compromised AWS credential",
            )
        )
    except RPCError as exc:
        if exc.status is not RPCStatusCode.ALREADY_EXISTS:  # registered meanwhile
            raise _setup_error(f"cannot register namespace {namespace}", exc) from None
    print(f"namespace {namespace}: registered, histories kept {retention_days} days", flush=True)


async def ensure_search_attributes(client: Client, namespace: str) -> None:
    """Add each search attribute Quench sets that the namespace lacks. One that exists with
    another type is an error to fix by hand: Quench does not remove what others may use."""
    try:
        missing, clashes = await search_attributes_wanting(
            client, namespace, wait=NAMESPACE_VISIBLE_WITHIN
        )
    except RPCError as exc:
        raise _setup_error(f"cannot list search attributes of {namespace}", exc) from None
    if clashes:
        raise SetupError(f"search attributes of another type in {namespace}: {'; '.join(clashes)}")
    if missing:
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(
                    namespace=namespace,
                    search_attributes={
                        key.name: IndexedValueType.ValueType(key.indexed_value_type.value)
                        for key in missing
                    },
                )
            )
        except RPCError as exc:
            raise _setup_error(f"cannot add search attributes to {namespace}", exc) from None
    for key in names.SEARCH_ATTRIBUTES:
        state = "added" if key in missing else "exists"
        print(f"search attribute {key.name} ({names.search_attribute_type_name(key)}): {state}")
