"""The definitions reader and the workflow view against the real broker."""

from __future__ import annotations

import pytest
import yaml
from definitions_topic import definitions_topic
from helpers import unique, wait_for

from keel.definitions.kinds import parse
from keel.definitions.log import apply, publish
from keel.definitions.reader import DefinitionsReader
from keel.definitions.view import WorkflowView
from keel.schemas import REPO_ROOT
from keel.workflows import Catalog, UnknownWorkflow, parse_workflow

OUTBOUND = yaml.safe_load((REPO_ROOT / "workflows" / "outbound_email.v1.yaml").read_text())


def workflow(name: str, version: int, description: str) -> dict:
    return {**OUTBOUND, "name": name, "version": version, "description": description}


def test_the_view_reads_the_topic_at_start_and_looks_again_for_an_unseen_version(stack):
    topic, name = definitions_topic(stack), unique("wf").replace("-", "_")
    apply(stack, "workflow", workflow(name, 1, "one"), source="t", applied_by="op", topic=topic)
    reader = DefinitionsReader(stack, topic)
    try:
        view = WorkflowView(Catalog({}), reader, wait_s=10)
        assert view.versions(name) == [1] and view.get(name).description == "one"
        apply(stack, "workflow", workflow(name, 2, "two"), source="t", applied_by="op", topic=topic)
        # Asked for at once: not rejected, found after reading to the topic's end.
        assert view.get(name, 2).description == "two"
        assert view.get(name).version == 2 and view.get(name, 1).description == "one"
        with pytest.raises(UnknownWorkflow, match="has no version 3"):
            view.get(name, 3)
    finally:
        reader.close()


def test_the_reader_follows_new_records_in_the_background(stack):
    topic, name = definitions_topic(stack), unique("wf").replace("-", "_")
    reader = DefinitionsReader(stack, topic)
    try:
        assert reader.records() == []
        apply(stack, "workflow", workflow(name, 1, "x"), source="t", applied_by="op", topic=topic)
        wait_for(lambda: (name, 1) in reader.definitions("workflow"), 10, "the record to be followed")
    finally:
        reader.close()


def test_a_file_that_differs_from_the_registered_version_is_refused_loudly(stack, caplog):
    topic, name = definitions_topic(stack), unique("wf").replace("-", "_")
    apply(stack, "workflow", workflow(name, 1, "registered"), source="t", applied_by="op", topic=topic)
    local = parse_workflow(workflow(name, 1, "edited file"))
    same = parse_workflow(workflow(name, 2, "only in a file"))
    reader = DefinitionsReader(stack, topic)
    try:
        view = WorkflowView(Catalog({(name, 1): local, (name, 2): same}), reader)
        assert (
            view.get(name, 1).description == "registered"
            and view.get(name, 2).description == "only in a file"
        )
        assert len(view.conflicts) == 1 and f"{name} v1" in view.conflicts[0]
        assert "the file is refused" in caplog.text
    finally:
        reader.close()


def test_a_service_without_any_registered_definition_runs_from_files(stack):
    topic = definitions_topic(stack)
    reader = DefinitionsReader(stack, topic)
    try:
        view = WorkflowView(Catalog.load(), reader, wait_s=1)
        shipped = ["lead_enrichment", "outbound_email", "support_triage"]
        assert view.names() == shipped and view.get("outbound_email").version == 1
    finally:
        reader.close()


def test_refresh_returns_once_what_the_topic_held_has_been_read(stack):
    topic, name = definitions_topic(stack), unique("wf").replace("-", "_")
    reader = DefinitionsReader(stack, topic)
    try:
        for version in (1, 2, 3):
            publish(stack, parse("workflow", workflow(name, version, "x"), "t"), "op", topic)
            assert reader.refresh(10)
            assert (name, version) in reader.definitions("workflow")
    finally:
        reader.close()
