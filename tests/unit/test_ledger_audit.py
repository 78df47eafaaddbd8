"""The chaos proof reads the compacted ledger topic only while its cleaner cannot have run."""

from ledger_audit import compaction_possible

WEEK_MS, GIB = 7 * 24 * 3_600_000, 1 << 30


def test_a_topic_whose_segment_never_rolled_cannot_have_been_compacted():
    assert compaction_possible(WEEK_MS, GIB, 200_000) is None


def test_a_segment_that_may_have_rolled_by_time_or_size_is_named():
    assert "segment.ms" in (compaction_possible(60_000, GIB, 200_000) or "")
    assert "segment.bytes" in (compaction_possible(WEEK_MS, 100_000, 200_000) or "")
