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
