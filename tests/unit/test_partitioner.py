"""Kafka's default partitioner in Python, bit for bit: vectors from Kafka's own UtilsTest."""

from __future__ import annotations

import pytest

from keel.partitioner import murmur2, partition_for, to_positive

# org.apache.kafka.common.utils.UtilsTest#testMurmur2
KAFKA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize(("data", "expected"), KAFKA_VECTORS.items())
def test_murmur2_matches_javas(data, expected):
    assert murmur2(data) == expected


def test_to_positive_clears_the_sign_bit_as_java_does_not_abs():
    assert to_positive(-973932308) == -973932308 & 0x7FFFFFFF == 1173551340
    assert to_positive(-(2**31)) == 0  # abs() would give 2**31, outside a Java int
    assert to_positive(479470107) == 479470107


def test_partition_for_a_key_is_the_positive_hash_modulo_the_partition_count():
    assert partition_for("21", 3) == 1173551340 % 3
    assert partition_for(b"foobar", 7) == (-790332482 & 0x7FFFFFFF) % 7
    assert partition_for("é", 5) == to_positive(murmur2("é".encode())) % 5  # keys hash as UTF-8
    with pytest.raises(ValueError):
        partition_for("x", 0)
