"""Applying definitions against the real broker: idempotent, refused on conflict, one winner under races."""

from __future__ import annotations

import threading

import pytest
import yaml
from definitions_topic import definitions_topic
from helpers import unique

from keel.definitions.kinds import parse
from keel.definitions.log import apply, apply_text, publish, read_all, read_back
from keel.definitions.problems import DefinitionInvalid
from keel.definitions.record import Candidate, verdict, winners
from keel.schemas import REPO_ROOT

OUTBOUND = (REPO_ROOT / "workflows" / "outbound_email.v1.yaml").read_text()


def workflow(name: str, description: str = "", version: int = 1) -> dict:
    data = yaml.safe_load(OUTBOUND)
    return {**data, "name": name, "version": version, "description": description}


def test_apply_is_idempotent_and_other_content_under_a_version_is_refused(stack):
    topic, name = definitions_topic(stack), unique("wf").replace("-", "_")
    first = apply(stack, "workflow", workflow(name, "a"), source="t", applied_by="op", topic=topic)
    assert (first.outcome, first.written) == ("created", True)
    again = apply(stack, "workflow", workflow(name, "a"), source="t", applied_by="op", topic=topic)
    assert (again.outcome, again.written, again.winner.digest) == ("unchanged", False, first.parsed.digest)
    other = apply(stack, "workflow", workflow(name, "b"), source="t", applied_by="op", topic=topic)
    assert (other.outcome, other.written, other.winner.digest) == ("conflict", False, first.parsed.digest)
    v2 = apply(stack, "workflow", workflow(name, "b", 2), source="t", applied_by="op", topic=topic)
    assert v2.outcome == "created"
    assert [(c.version, c.applied_by) for c in read_all(stack, topic)] == [(1, "op"), (2, "op")]


def test_an_invalid_definition_never_reaches_the_topic(stack):
    topic = definitions_topic(stack)
    text = OUTBOUND.replace("tool: email@1", "tool: email@7").replace("needs: [draft_email]", "nedds: [x]")
    with pytest.raises(DefinitionInvalid) as exc:
        apply_text(stack, "workflow", text, source="bad.yaml", applied_by="op", topic=topic)
    assert any(p.path.endswith(".nedds") and p.line for p in exc.value.problems)
    valid_but_unknown_tool = OUTBOUND.replace("tool: email@1", "tool: email@7")
    with pytest.raises(DefinitionInvalid, match=r"bad.yaml:\d+: \$.steps\[2\].tool: unknown tool 'email@7'"):
        apply_text(stack, "workflow", valid_but_unknown_tool, source="bad.yaml", applied_by="op", topic=topic)
    assert read_all(stack, topic) == []


def test_concurrent_applies_of_different_content_accept_exactly_one(stack):
    topic, name = definitions_topic(stack), unique("wf").replace("-", "_")
    start, results = threading.Barrier(2), {}

    def one(description: str) -> None:
        start.wait()
        results[description] = apply(
            stack,
            "workflow",
            workflow(name, description),
            source=description,
            applied_by=description,
            topic=topic,
        )

    threads = [threading.Thread(target=one, args=(d,)) for d in ("left", "right")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    accepted = [d for d, r in results.items() if r.accepted]
    assert len(results) == 2 and len(accepted) == 1
    [winner] = winners(read_all(stack, topic)).values()
    assert winner.digest == results[accepted[0]].parsed.digest  # every reader picks the accepted one


def test_a_record_that_landed_second_is_judged_a_conflict_on_read_back(stack):
    """The race itself, made certain: two publishes of other content under one version, each judged
    by reading the topic back to its own record."""
    topic, name = definitions_topic(stack), unique("wf").replace("-", "_")
    a, b = (parse("workflow", workflow(name, d), d) for d in ("a", "b"))
    at_a, at_b = publish(stack, a, "x", topic), publish(stack, b, "y", topic)
    mine_a = Candidate("workflow", name, 1, a.digest, at_a)
    mine_b = Candidate("workflow", name, 1, b.digest, at_b)
    assert verdict(read_back(stack, topic, at_a), mine_a).outcome == "created"
    judged = verdict(read_back(stack, topic, at_b), mine_b)
    assert judged.outcome == "conflict" and judged.winner.digest == a.digest
