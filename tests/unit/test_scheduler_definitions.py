"""The scheduler over registered definitions: a version applied a moment ago is looked for, not refused."""

from __future__ import annotations

import pytest
from scheduler_kit import one_step, run_id_on
from unit.test_definition_view import FakeReader
from unit.test_scheduler_shell import PARTITIONS, SilentProbe, start

from keel.definitions.view import WorkflowView
from keel.settings import Settings
from keel.txloop import Reject
from keel.workflows import Catalog
from services.scheduler.service import SchedulerProcessor


def processor(reader: FakeReader) -> SchedulerProcessor:
    view = WorkflowView(Catalog({}), reader)
    return SchedulerProcessor(Settings(), view, {}.get, probe=SilentProbe(Settings(), "unit"))


def test_a_request_for_a_version_not_seen_yet_starts_once_the_topic_is_read_to_its_end():
    reader = FakeReader([one_step()], pending=[one_step(version=2)])
    proc, run_id = processor(reader), run_id_on(0, PARTITIONS)
    start(proc, run_id, version=2)
    assert proc.states.get(run_id).workflow_version == 2 and reader.refreshes == 1


def test_a_version_still_unknown_after_the_refresh_is_refused_as_today():
    reader = FakeReader([one_step()])
    proc = processor(reader)
    with pytest.raises(Reject) as rejected:
        start(proc, run_id_on(0, PARTITIONS), version=3)
    assert rejected.value.error_class == "unknown_workflow" and reader.refreshes == 1
