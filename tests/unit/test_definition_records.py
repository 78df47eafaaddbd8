"""The identity of definition records and the rule that picks the one definition of a version."""

from __future__ import annotations

from keel.definitions.record import Candidate, canonical, digest, record_key, refused, verdict, winners


def cand(offset: int, content: str, name: str = "wf", version: int = 1, kind: str = "workflow") -> Candidate:
    return Candidate(kind, name, version, digest(content), offset, content)


def test_the_key_format_is_frozen():
    assert record_key("workflow", "outbound_email", 2, "sha256:ab") == "workflow/outbound_email@2/sha256:ab"


def test_canonical_json_ignores_key_order_and_digest_is_sha256_of_it():
    assert canonical({"b": 1, "a": [1, {"d": "é", "c": None}]}) == '{"a":[1,{"c":null,"d":"é"}],"b":1}'
    assert digest("{}") == "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"


def test_the_first_record_in_log_order_wins_whatever_order_they_are_given_in():
    a, b, a_again = cand(5, "A"), cand(7, "B"), cand(9, "A")
    for order in ([a, b, a_again], [a_again, b, a], [b, a_again, a]):
        assert winners(order)[("workflow", "wf", 1)] == a
    assert refused([a, b, a_again]) == [b]


def test_versions_names_and_kinds_are_judged_apart():
    records = [cand(1, "A"), cand(2, "B", version=2), cand(3, "C", name="other"), cand(4, "D", kind="tool")]
    assert len(winners(records)) == 4 and refused(records) == []


def test_verdict_created_unchanged_conflict():
    a, b, a_again = cand(5, "A"), cand(7, "B"), cand(9, "A")
    assert verdict([a], a).outcome == "created"
    assert verdict([a, b, a_again], a_again).outcome == "unchanged"
    conflict = verdict([a, b], b)
    assert conflict.outcome == "conflict" and not conflict.accepted and conflict.winner == a
    # Two concurrent applies of other content: whichever landed first is accepted, the other refused.
    assert [verdict([b, a], x).accepted for x in (a, b)] == [True, False]
