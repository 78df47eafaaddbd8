"""The generic HTTP adapter: one tool served from its definition (tools/*.yaml), no code per tool."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from keel.tooldefs import Contract, ToolDefinition
from keel.tooldefs.output import check_output, value_at
from keel.tooldefs.templates import KEY, render
from keel.vocab import FailureClass
from services.adapters.base import Adapter, ContractViolation, Effect, HttpCall, Json
from services.adapters.classify import classify_http, parse_retry_after


class HttpToolAdapter(Adapter):
    """Everything a definition declares, applied to one call: the input and output contracts both ways,
    the request built from its templates, credentials by name for the call's tenant, the idempotency
    mechanism, classification rules before Keel's defaults, Retry-After and the timeout."""

    def __init__(self, definition: ToolDefinition) -> None:
        if definition.request is None:
            raise ValueError(f"{definition.tool} is served by worker group {definition.worker!r}, not HTTP")
        self.definition, self.spec = definition, definition.request
        self.name, self.version = definition.name, definition.version
        self.provider = definition.provider_name
        self.default_base_url = definition.base_url
        self.requires_approval = definition.requires_approval
        self.fee_usd = definition.fee_usd
        spec = definition.idempotency
        self.idempotency_mode = spec.mode
        self.key_header = spec.header
        self.input_contract = Contract(definition.input_schema)
        self.output_contract = Contract(definition.output_schema)

    def check_input(self, payload: Any) -> Json:
        breaks = self.input_contract.violations(payload)
        if breaks:
            raise ContractViolation("; ".join(breaks))
        filled: Json = self.input_contract.with_defaults(payload)
        return filled

    def check_output(self, raw: Any) -> Json:
        return check_output(self.definition, raw, self.output_contract)

    def request(self, payload: Json, idempotency_key: str, effect: Effect) -> HttpCall:
        spec = self.spec
        body: Json | None = None
        if spec.body == "input":
            body = self.tagged(payload, effect) if spec.metadata_field else dict(payload)
        return HttpCall(
            spec.method,
            render(spec.path, payload, url_part=True),
            body,
            self.key_headers(idempotency_key),
            {k: render(v, payload) for k, v in spec.query.items()},
        )

    def tagged(self, body: Json, effect: Effect) -> Json:
        field = self.spec.metadata_field or "metadata"
        return {**body, field: effect.metadata()}

    def auth_headers(self, credential: Callable[[str], str]) -> dict[str, str]:
        headers = self.spec.headers
        return {name: render(value, {}, credential) for name, value in headers.items()}

    def external_id(self, output: Json) -> str:
        return str(value_at(output, self.definition.external_id))

    def classify(self, status: int, error_type: str | None, body: str) -> FailureClass:
        for rule in self.definition.failures.rules:
            if rule.status is not None and rule.status != status:
                continue
            if rule.error_type is not None and rule.error_type != error_type:
                continue
            if rule.body_contains is not None and rule.body_contains not in body:
                continue
            return rule.failure_class
        return classify_http(status, error_type)

    def retry_after_ms(self, headers: Mapping[str, str]) -> int | None:
        failures = self.definition.failures
        if not failures.honour_retry_after:
            return None
        return parse_retry_after(headers.get(failures.retry_after_header.lower()))

    def timeout_s(self, ceiling_s: float) -> float:
        own = self.definition.timeout_s
        return ceiling_s if own is None else min(own, ceiling_s)

    def lookup_call(self, idempotency_key: str, payload: Json) -> HttpCall:
        lookup = self.definition.idempotency.lookup
        if lookup is None:
            return super().lookup_call(idempotency_key, payload)
        values = {**payload, KEY: idempotency_key}
        return HttpCall(
            lookup.method,
            render(lookup.path, values, url_part=True),
            params={k: render(v, values) for k, v in lookup.query.items()},
        )

    def is_not_found(self, status: int) -> bool:
        lookup = self.definition.idempotency.lookup
        return status in (lookup.not_found_status if lookup else [404])

    def found_output(self, status: int, body: Any) -> Any | None:
        if self.is_not_found(status):
            return None
        lookup = self.definition.idempotency.lookup
        return value_at(body, lookup.record_path) if lookup and lookup.record_path else body
