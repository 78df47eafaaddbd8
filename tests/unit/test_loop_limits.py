"""Pure parts of the loop's guards: limits that agree, batch splitting, registry outages vs bad bytes."""

import httpx
from confluent_kafka import KafkaError
from confluent_kafka.schema_registry.error import SchemaRegistryError

from keel.producer import producer_config
from keel.registryerrors import registry_unavailable
from keel.settings import Settings
from keel.splitting import Splitter, is_rejection
from keel.topics import catalogue


def test_every_topic_accepts_what_the_producers_send():
    settings = Settings(max_message_bytes=300_000)
    sent = producer_config(settings)["message.max.bytes"]
    for spec in catalogue(settings):
        if spec.name.startswith("keel.") and spec.name != "keel.instance-leases":
            assert int(spec.config["max.message.bytes"]) == sent, spec.name


def test_a_rejected_batch_is_halved_down_to_one_message_then_settled_by_reference():
    s = Splitter(after=2)
    batch = [("t", 0, o) for o in range(8)]
    s.rejected(batch, "too large")
    assert s.limit(500) == 500  # one rejection could be bad luck
    s.rejected(batch, "too large")
    assert s.limit(500) == 4
    s.rejected(batch[:4], "too large")
    s.rejected(batch[:4], "too large")
    s.rejected(batch[:2], "too large")
    s.rejected(batch[:2], "too large")
    assert s.limit(500) == 1
    s.rejected(batch[:1], "too large")
    s.rejected(batch[:1], "too large")
    assert s.poisoned == {("t", 0, 0): "too large"}
    s.committed(batch[:1], 500)
    assert s.poisoned == {} and s.limit(500) == 2  # the cap relaxes once the message is settled
    assert s.splits == 3


def test_only_verdicts_on_the_records_count_as_rejections():
    assert is_rejection(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    assert not is_rejection(KafkaError(KafkaError._TRANSPORT))
    assert not is_rejection(KafkaError(KafkaError._MSG_TIMED_OUT))


def test_a_registry_that_cannot_answer_is_not_a_bad_message():
    assert registry_unavailable(SchemaRegistryError(503, 50301, "unavailable"))
    assert registry_unavailable(SchemaRegistryError(500, 50001, "store error"))
    assert not registry_unavailable(SchemaRegistryError(404, 40403, "schema not found"))
    assert not registry_unavailable(ValueError("Invalid magic byte"))
    # A network error counts only when it comes out of the registry client, not from a processor's call.
    assert not registry_unavailable(httpx.ConnectError("model server down"))


def test_the_registry_clients_own_connection_errors_count_as_an_outage():
    from keel.serde import Serde, registry_client

    serde = Serde(registry_client("http://127.0.0.1:1"))
    try:
        serde.decode("keel.run-requests", b"\x00\x00\x00\x00\x01abc")
    except Exception as exc:
        assert registry_unavailable(exc), type(exc)
    else:
        raise AssertionError("decoding with an unreachable registry cannot succeed")
