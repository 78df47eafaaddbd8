"""The tracer: a run's OpenTelemetry spans, built from keel.run-events and exported over OTLP."""
