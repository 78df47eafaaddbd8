"""Tell a schema registry that cannot be reached from bytes that can never decode.

A message whose schema the registry cannot serve *right now* (connection refused, timeout, 5xx) is a
good message waiting for the registry: it is retried, never dead-lettered. Only what can never decode
(bad magic byte, truncated Avro, a schema id the registry answers 404 for) becomes a dead letter.
"""

from __future__ import annotations

import httpx
from confluent_kafka.schema_registry.error import SchemaRegistryError

try:  # the registry client speaks through its own copy of httpx (httpx2) when one is installed
    from confluent_kafka.schema_registry.common._httpx_compat import httpx as _client_httpx

    _TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
        httpx.TransportError,
        _client_httpx.TransportError,
    )
except ImportError:  # pragma: no cover - older clients use httpx itself
    _TRANSPORT_ERRORS = (httpx.TransportError,)


class RegistryUnavailable(RuntimeError):
    """The schema registry could not answer; the batch must be retried later, not dead-lettered."""


def _from_registry_client(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        if "schema_registry" in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False


def registry_unavailable(exc: BaseException) -> bool:
    """True when `exc` (or its cause) says the registry could not answer, not that the bytes are bad.

    A 404 (unknown subject or schema id) is an answer: the message can never decode. Any other registry
    error status (5xx, 408, 429, and 401/403, which is our configuration, not the message's fault) and
    any network error raised inside the registry client mean "not now".
    """
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, RegistryUnavailable):
            return True
        if isinstance(cur, SchemaRegistryError):
            return cur.http_status_code != 404
        if isinstance(cur, _TRANSPORT_ERRORS) and _from_registry_client(cur):
            return True
        cur = cur.__cause__ or cur.__context__
    return False
