"""Keel's spans as the OpenTelemetry SDK's ReadableSpan, and the OTLP exporter the tracer sends them to.

Spans are built whole (explicit ids, parents and times from the log), not started and ended through a
Tracer: a live tracer would pick its own ids and clock. The exporter is called directly, not through a
BatchSpanProcessor: the processor drops a batch the collector refused and reports nothing, while the
tracer must know, to commit its offsets only after the collector accepted the spans.
"""

from __future__ import annotations

import os

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from keel.tracing import SpanData

SCOPE = InstrumentationScope("keel.tracer", "1")
_KINDS = {"internal": SpanKind.INTERNAL, "client": SpanKind.CLIENT}
_STATUS = {"unset": StatusCode.UNSET, "ok": StatusCode.OK, "error": StatusCode.ERROR}
ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def _context(trace_id: int, span_id: int) -> SpanContext:
    return SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))


def readable(span: SpanData, resource: Resource) -> ReadableSpan:
    parent = _context(span.trace_id, span.parent_span_id) if span.parent_span_id is not None else None
    code = _STATUS[span.status]
    return ReadableSpan(
        name=span.name,
        context=_context(span.trace_id, span.span_id),
        parent=parent,
        resource=resource,
        attributes=dict(span.attributes),
        events=[Event(e.name, dict(e.attributes), e.time_ns) for e in span.events],
        kind=_KINDS[span.kind],
        # The SDK keeps a description only with ERROR.
        status=Status(code, span.status_description if code is StatusCode.ERROR else None),
        start_time=span.start_ns,
        end_time=span.end_ns,
        instrumentation_scope=SCOPE,
    )


def export(exporter: SpanExporter, spans: list[SpanData], resource: Resource) -> bool:
    """True when the exporter accepted every span (an empty list is accepted)."""
    if not spans:
        return True
    return exporter.export([readable(s, resource) for s in spans]) is SpanExportResult.SUCCESS


def endpoint_configured() -> str | None:
    """The OTLP endpoint the standard variables name, if any: without one the tracer does not start."""
    return next((os.environ[v] for v in ENDPOINT_VARS if os.environ.get(v)), None)


def otlp_exporter() -> SpanExporter:
    """OTLP over HTTP/protobuf, configured by the standard OTEL_EXPORTER_OTLP_* variables."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def resource() -> Resource:
    """service.name `keel` unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES say otherwise."""
    return Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or "keel"})
