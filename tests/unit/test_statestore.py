"""ChangelogState without a broker: staged puts and deletes become visible on commit, vanish on abort."""

from keel.settings import Settings
from keel.statestore import ChangelogState


def _state() -> ChangelogState[str]:
    return ChangelogState(Settings(), "t.changelog", str.encode, bytes.decode, group="g")


def test_a_staged_delete_hides_the_key_and_produces_a_tombstone():
    s = _state()
    s.put("a", "1", 0)
    s.commit()
    out = s.delete("a", 0)
    assert (out.topic, out.key, out.value, out.partition) == ("t.changelog", "a", None, 0)
    assert s.get("a") is None and list(s.items()) == []
    s.commit()
    assert s.get("a") is None and list(s.items()) == []


def test_an_aborted_delete_leaves_the_key_in_place():
    s = _state()
    s.put("a", "1", 2)
    s.commit()
    s.delete("a", 2)
    s.abort()
    assert s.get("a") == "1" and list(s.items()) == [("a", 2, "1")]


def test_the_scheduler_changelog_rolls_so_tombstoned_runs_can_be_compacted_away():
    from keel.topics import SCHEDULER_STATE, catalogue

    [spec] = [s for s in catalogue(Settings()) if s.name == SCHEDULER_STATE]
    # The cleaner never touches the active segment: without a roll, expired runs would stay on disk and
    # be read by every restore.
    assert spec.config["cleanup.policy"] == "compact"
    assert (
        int(spec.config["segment.ms"]) <= 3_600_000 and int(spec.config["delete.retention.ms"]) <= 3_600_000
    )
