"""`keel tools apply` against the real broker (the shared definitions topic, unique names)."""

from __future__ import annotations

from pathlib import Path

import yaml
from helpers import unique

from keel.definitions.log import read_all
from keel.schemas import REPO_ROOT
from keel.tooldefs import ToolRegistry
from keel.tooldefs.registry import TOOL_DIR
from keel_ops.cli import main

REFUND = yaml.safe_load((REPO_ROOT / "docs" / "examples" / "tools" / "refund.v1.yaml").read_text())


def write(tmp_path: Path, name: str, **changes: object) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(REFUND | {"name": name, **changes}, sort_keys=False))
    return str(path)


def test_apply_registers_once_and_refuses_other_content(stack, tmp_path, capsys):
    name = unique("clitool").replace("-", "_")
    path = write(tmp_path, name)
    assert main(["tools", "apply", path]) == 0
    assert capsys.readouterr().out.startswith(f"created   {name} v1 sha256:")
    assert main(["tools", "apply", path]) == 0
    assert capsys.readouterr().out.startswith(f"unchanged {name} v1")
    edited = write(tmp_path, name, description="Edited.")
    assert main(["tools", "apply", edited]) == 1
    assert "is registered with other content" in capsys.readouterr().out
    assert [c.kind for c in read_all(stack, "keel.definitions") if c.name == name] == ["tool"]


def test_an_invalid_tool_file_is_refused_with_file_line_and_path(stack, tmp_path, capsys):
    name = unique("clitool").replace("-", "_")
    path = write(tmp_path, name, idempotency={"mode": "provider_key"})
    assert main(["tools", "apply", path]) == 1
    out = capsys.readouterr().out
    line = next(i for i, text in enumerate(Path(path).read_text().splitlines(), 1) if "idempotency:" in text)
    assert f"{path}:{line}: $.idempotency: " in out and "needs `header`" in out
    assert all(c.name != name for c in read_all(stack, "keel.definitions"))


def test_keel_up_registers_the_tool_files_once_and_refuses_a_file_that_differs(
    stack, tmp_path, monkeypatch, capsys
):
    from definitions_topic import definitions_topic

    from keel_ops.cli_tools import apply_local_files

    topic, name = definitions_topic(stack), unique("uptool").replace("-", "_")
    local = tmp_path / "tools"
    local.mkdir()
    write(local, name)
    monkeypatch.setenv("KEEL_TOOL_DIRS", str(local))
    assert apply_local_files(stack, topic) == 0
    registered = {(c.kind, c.name, c.version, c.applied_by) for c in read_all(stack, topic)}
    files = ToolRegistry.from_dirs([TOOL_DIR])  # the built-in tools/, registered by `keel up` too
    built_in = {("tool", t.name, t.version, "keel up") for t in map(files.get, files.names())}
    assert registered == built_in | {("tool", name, 1, "keel up")}
    count = len(built_in) + 1
    assert apply_local_files(stack, topic) == 0 and len(read_all(stack, topic)) == count  # unchanged
    write(local, name, description="Edited.")
    capsys.readouterr()
    assert apply_local_files(stack, topic) == 1
    assert "REFUSED" in capsys.readouterr().out and len(read_all(stack, topic)) == count
