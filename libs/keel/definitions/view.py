"""The workflows a service runs: the files read at start-up plus the versions registered on the topic.

Catalog-compatible (`get`, `versions`, `names`). A registered version is immutable, so a run that pins
`workflow_version` always gets the definition it started with. A file and a registered record of the
same name@version with different content is a conflict: the registered record wins (it is what every
other process uses) and the file is refused, logged as an error each time the view is rebuilt."""

from __future__ import annotations

import json
import logging
import threading

from keel.definitions.kinds import Parsed, check_references, content_of, known_in, ref_of
from keel.definitions.problems import DefinitionInvalid
from keel.definitions.reader import DefinitionsReader
from keel.definitions.record import Candidate, digest, winners
from keel.settings import Settings
from keel.topics import DEFINITIONS
from keel.workflows import Catalog, UnknownWorkflow, WorkflowError, WorkflowSpec, parse_workflow

log = logging.getLogger(__name__)
Key = tuple[str, int]


def spec_digest(spec: WorkflowSpec) -> str:
    return digest(content_of(spec))


class WorkflowView:
    def __init__(self, files: Catalog, reader: DefinitionsReader | None = None, wait_s: float = 5.0) -> None:
        self.files, self.reader, self.wait_s = files, reader, wait_s
        self._lock = threading.Lock()
        self._generation = -1
        self._specs: dict[Key, WorkflowSpec] = {}
        self._parsed: dict[str, WorkflowSpec] = {}  # by digest: a record is parsed once
        self.conflicts: list[str] = []

    def _current(self) -> dict[Key, WorkflowSpec]:
        if self.reader is None:
            return {(n, v): self.files.get(n, v) for n in self.files.names() for v in self.files.versions(n)}
        with self._lock:
            if self.reader.generation != self._generation:
                self._generation = self.reader.generation
                self._specs = self._merge()
            return self._specs

    def _merge(self) -> dict[Key, WorkflowSpec]:
        assert self.reader is not None
        specs = {(n, v): self.files.get(n, v) for n in self.files.names() for v in self.files.versions(n)}
        conflicts = self._unknown_references(specs)
        for key, record in sorted(self.reader.definitions("workflow").items()):
            spec = self._parsed.get(record.digest)
            if spec is None:
                try:
                    spec = self._parsed[record.digest] = parse_workflow(json.loads(record.content), str(key))
                except (ValueError, WorkflowError) as exc:  # validated at apply; a newer reader may differ
                    log.error("definitions: registered workflow %s@%s cannot be read: %s", *key, exc)
                    continue
            if key in specs and spec_digest(specs[key]) != record.digest:
                conflicts.append(
                    f"the workflow file {key[0]} v{key[1]} differs from the registered {record.digest}: "
                    "the file is refused, the registered definition is used"
                )
                log.error("definitions: %s", conflicts[-1])
            specs[key] = spec
        self.conflicts = conflicts
        return specs

    def record(self, name: str, version: int) -> Candidate | None:
        """The registered record behind name@version; None for a version only a file defines."""
        return self.reader.definitions("workflow").get((name, version)) if self.reader else None

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()

    def _unknown_references(self, specs: dict[Key, WorkflowSpec]) -> list[str]:
        """Refuse (drop, loudly) the files naming a tool version neither built in nor registered."""
        assert self.reader is not None
        registered = known_in(
            (c.kind, ref_of(c.name, c.version)) for c in winners(self.reader.records()).values()
        )
        refused = []
        for key, spec in list(specs.items()):
            parsed = Parsed("workflow", spec.name, spec.version, spec, "", "")
            try:
                check_references(parsed, registered, f"workflow file {key[0]} v{key[1]}")
            except DefinitionInvalid as exc:
                del specs[key]
                refused.append(f"{exc}: the file is refused")
                log.error("definitions: %s", refused[-1])
        return refused

    def names(self) -> list[str]:
        return sorted({n for n, _ in self._current()})

    def versions(self, name: str) -> list[int]:
        return sorted(v for n, v in self._current() if n == name)

    def get(self, name: str, version: int | None = None) -> WorkflowSpec:
        """As Catalog.get; a name or version not seen yet is looked for once more after reading the
        topic to its end (bounded by `wait_s`): it may have been applied a moment ago."""
        try:
            return Catalog(self._current()).get(name, version)
        except UnknownWorkflow:
            if self.reader is None or not self.reader.refresh(self.wait_s):
                raise
            return Catalog(self._current()).get(name, version)


def live_workflows(settings: Settings, topic: str = DEFINITIONS, wait_s: float = 5.0) -> WorkflowView:
    """The files (Catalog.configured) plus the registered workflows, followed in the background."""
    return WorkflowView(Catalog.configured(), DefinitionsReader(settings, topic), wait_s)
