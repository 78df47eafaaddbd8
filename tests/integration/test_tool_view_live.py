"""Registered tools reach a running process: the tool view and the adapters' catalog follow the topic."""

from __future__ import annotations

import pytest
import yaml
from definitions_topic import definitions_topic
from helpers import unique

from keel.definitions.log import apply
from keel.definitions.reader import DefinitionsReader
from keel.definitions.tools import ToolView
from keel.schemas import REPO_ROOT
from keel.tooldefs import ToolRegistry, UnknownTool
from services.adapters import catalog

REFUND = yaml.safe_load((REPO_ROOT / "docs" / "examples" / "tools" / "refund.v1.yaml").read_text())


def test_a_tool_applied_after_start_is_known_to_the_view_and_gets_an_adapter(stack, monkeypatch):
    topic, name = definitions_topic(stack), unique("refund").replace("-", "_")
    reader = DefinitionsReader(stack, topic)
    try:
        view = ToolView(ToolRegistry.configured(), reader, wait_s=10)
        monkeypatch.setattr(catalog, "_VIEW", [])
        catalog.follow(view)
        with pytest.raises(UnknownTool):
            catalog.get_adapter(f"{name}@1")
        assert view.mode(f"{name}@1") is None  # unknown: the safe reading
        apply(stack, "tool", REFUND | {"name": name}, source="t", applied_by="op", topic=topic)
        # Asked for at once: found after reading to the topic's end, no restart.
        assert view.mode(f"{name}@1") == "provider_key"
        adapter = catalog.get_adapter(f"{name}@1")
        assert adapter.idempotency_mode == "provider_key" and catalog.get_adapter(f"{name}@1") is adapter
        assert catalog.get_adapter("email@1").idempotency_mode == view.mode("email@1")  # files still served
    finally:
        reader.close()


def test_the_scheduler_learns_the_mode_of_a_tool_registered_after_it_started(stack):
    from scheduler_topics import scheduler_topics

    from keel.definitions.view import WorkflowView
    from keel.workflows import Catalog
    from services.scheduler.service import SchedulerProcessor

    topic, name = definitions_topic(stack), unique("refund").replace("-", "_")
    workflows = WorkflowView(Catalog({}), DefinitionsReader(stack, topic), wait_s=10)
    try:
        proc = SchedulerProcessor(
            stack, workflows, topics=scheduler_topics(stack), group=unique("test-scheduler")
        )
        assert proc.tool_mode("email@1") == "provider_key"  # the files, as before
        assert proc.tool_mode(f"{name}@1") is None  # unknown: read as `none`, the safe reading
        retention = {"key_retention_s": 3600.0}
        definition = REFUND | {"name": name, "idempotency": REFUND["idempotency"] | retention}
        apply(stack, "tool", definition, source="t", applied_by="op", topic=topic)
        assert proc.tool_mode(f"{name}@1") == "provider_key"
        assert proc.key_retention(f"{name}@1") == 3600.0
    finally:
        workflows.close()
