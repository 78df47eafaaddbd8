"""Kafka's default key partitioner (Java's `Utils.murmur2` + `toPositive`), to know a run's partition.

Every producer of run-keyed topics uses librdkafka's `murmur2_random` (see keel.producer), which is this
same function: a service can tell, from a run_id alone, which partition of a co-partitioned topic the
run's requests, events and commands belong to, and so whether it owns the run on the partition at hand.
"""

from __future__ import annotations

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def _to_int32(n: int) -> int:
    n &= _MASK
    return n - (1 << 32) if n & 0x80000000 else n


def murmur2(data: bytes) -> int:
    """Java's `org.apache.kafka.common.utils.Utils.murmur2`: a signed 32-bit hash, bit for bit.

    Java ints wrap at 32 bits and `>>>` shifts in zeros: both are emulated on unsigned 32-bit values.
    """
    length = len(data)
    h = (_SEED ^ length) & _MASK
    for i in range(0, length - length % 4, 4):
        k = data[i] | data[i + 1] << 8 | data[i + 2] << 16 | data[i + 3] << 24
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = (h * _M) & _MASK
        h ^= k
    tail, rest = length & ~3, length % 4
    # Java's switch falls through from case 3 to case 1.
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return _to_int32(h)


def to_positive(n: int) -> int:
    """Java's `Utils.toPositive`: clears the sign bit (not abs(): abs(MIN_VALUE) stays negative)."""
    return n & 0x7FFFFFFF


def partition_for(key: str | bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (and librdkafka's murmur2_random) gives a non-null key."""
    if partitions < 1:
        raise ValueError(f"a topic has at least one partition, not {partitions}")
    raw = key.encode() if isinstance(key, str) else key
    return to_positive(murmur2(raw)) % partitions
