"""What leaves a Quench process besides its work: spans over OTLP, metrics for Prometheus,
and logs, as text or as JSON lines that carry the case id.

Spans: the standard OTEL_* variables say where (OTEL_EXPORTER_OTLP_ENDPOINT or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_SERVICE_NAME...); without an endpoint nothing is
exported. Temporal's TracingInterceptor carries the trace from the webhook's request through
the case's update, its workflow and each activity; the botocore instrumentation adds a span
for each AWS call, so one trace runs from a finding's delivery to the calls that contained it.
"""

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from temporalio import activity

# The variables that name an OTLP endpoint for spans (the exporter reads them itself).
OTLP_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def setup_tracing(service_name: str, processor: SpanProcessor | None = None) -> None:
    """This process's tracer provider, named OTEL_SERVICE_NAME or `service_name`; spans go
    to `processor` (tests) or, when an OTLP endpoint is configured, out over OTLP. Once per
    process: a provider already set is kept."""
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    name = os.environ.get("OTEL_SERVICE_NAME") or service_name
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    if processor is None and any(os.environ.get(v) for v in OTLP_ENDPOINT_VARIABLES):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        processor = BatchSpanProcessor(OTLPSpanExporter())
    if processor is not None:
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)


def instrument_aws_calls() -> None:
    """A span for each botocore call (the service, operation and request id), inside the
    activity's span."""
    from opentelemetry.instrumentation.botocore import BotocoreInstrumentor

    instrumentor = BotocoreInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()


def setup_logging(log_format: str) -> None:
    """Logs on standard error: text, or JSON lines (`json`) with the case id of the
    workflow or activity that logged, for a log store to index."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and where known the case id,
    the workflow or activity, and the trace."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(_temporal_context(record))
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            line["trace_id"] = f"{span.trace_id:032x}"
            line["span_id"] = f"{span.span_id:016x}"
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def _temporal_context(record: logging.LogRecord) -> dict[str, str]:
    """The case and the workflow or activity a record was logged in: from the SDK's
    workflow and activity loggers' extra fields, or the activity running in this thread."""
    found: dict[str, str] = {}
    for extra in ("temporal_workflow", "temporal_activity"):
        details = getattr(record, extra, None)
        if isinstance(details, dict):
            found.update({k: str(v) for k, v in details.items() if isinstance(v, str | int)})
    if "workflow_id" not in found and activity.in_activity():
        info = activity.info()
        found.update(
            workflow_id=info.workflow_id or "",
            activity_type=info.activity_type,
            attempt=str(info.attempt),
        )
    if found.get("workflow_id"):
        # A child's id is its case's and a name: case-.../investigation-....
        found["case_id"] = found["workflow_id"].split("/", 1)[0]
    return found
