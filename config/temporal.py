"""How every Quench process connects to Temporal: pydantic payloads and OpenTelemetry spans."""

import asyncio
from datetime import timedelta

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import RPCError, RPCStatusCode, TLSConfig

from codec.aesgcm import encrypting_data_converter
from config import names
from config.settings import Settings


async def connect(settings: Settings, lazy: bool = False, runtime: Runtime | None = None) -> Client:
    """A client with Quench's payloads (encrypted when the settings have keys) and spans;
    `runtime`: the worker's, which serves its metrics."""
    codec = settings.payload_codec()
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        tls=_tls(settings),
        api_key=(
            settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None
        ),
        data_converter=encrypting_data_converter(codec) if codec else pydantic_data_converter,
        interceptors=[TracingInterceptor()],
        lazy=lazy,
        runtime=runtime,
    )


def _tls(settings: Settings) -> TLSConfig | bool:
    """TLS to Temporal: a client certificate (mTLS), or the server's alone; an API key
    needs TLS too."""
    if settings.temporal_tls_cert is not None and settings.temporal_tls_key is not None:
        return TLSConfig(
            client_cert=settings.temporal_tls_cert.read_bytes(),
            client_private_key=settings.temporal_tls_key.read_bytes(),
        )
    return settings.temporal_tls or settings.temporal_api_key is not None


def metrics_runtime(settings: Settings) -> Runtime | None:
    """With QUENCH_PROMETHEUS_BIND, a runtime serving Temporal's SDK metrics and Quench's
    case metrics (workflow.metric_meter) for Prometheus at that address; else None."""
    if not settings.prometheus_bind:
        return None
    return Runtime(
        telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=settings.prometheus_bind))
    )


async def search_attributes_wanting(
    client: Client, namespace: str, wait: timedelta = timedelta(0)
) -> tuple[list[SearchAttributeKey], list[str]]:
    """The search attributes Quench sets that the namespace lacks, and those it has with
    another type (described). A namespace not found yet (just registered, not yet known to
    every frontend) is waited for up to `wait`; RPCError when it cannot be read."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + wait.total_seconds()
    while True:
        try:
            listed = await client.operator_service.list_search_attributes(
                ListSearchAttributesRequest(namespace=namespace)
            )
            break
        except RPCError as exc:
            if exc.status is not RPCStatusCode.NOT_FOUND or loop.time() > give_up:
                raise
            await asyncio.sleep(1)
    existing = dict(listed.custom_attributes)
    missing, clashes = [], []
    for key in names.SEARCH_ATTRIBUTES:
        kind = IndexedValueType.ValueType(key.indexed_value_type.value)
        if key.name not in existing:
            missing.append(key)
        elif existing[key.name] != kind:
            clashes.append(
                f"{key.name} is {_type_name(existing[key.name])}, Quench needs {_type_name(kind)}"
            )
    return missing, clashes


def _type_name(kind: IndexedValueType.ValueType) -> str:
    """Keyword, Int...: as the server and `temporal operator search-attribute` name them."""
    enum_name = IndexedValueType.Name(kind).removeprefix("INDEXED_VALUE_TYPE_")
    return names.SEARCH_ATTRIBUTE_TYPE_NAMES.get(enum_name, enum_name)
