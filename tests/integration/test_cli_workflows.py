"""`keel workflows apply|versions` against the real broker (the shared definitions topic, unique names)."""

from __future__ import annotations

from pathlib import Path

from helpers import unique

from keel.definitions.log import read_all
from keel.schemas import REPO_ROOT
from keel_ops.cli import main

OUTBOUND = (REPO_ROOT / "workflows" / "outbound_email.v1.yaml").read_text()


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text.replace("name: outbound_email", f"name: {name}", 1))
    return str(path)


def test_apply_registers_once_refuses_other_content_and_lists_versions(stack, tmp_path, capsys):
    name = unique("cli").replace("-", "_")
    path = write(tmp_path, name, OUTBOUND)
    assert main(["workflows", "apply", path]) == 0
    assert capsys.readouterr().out.startswith(f"created   {name} v1 sha256:")
    assert main(["workflows", "apply", path]) == 0
    assert capsys.readouterr().out.startswith(f"unchanged {name} v1")
    edited = write(tmp_path, name, OUTBOUND.replace("subject: ", "subject: Edited ", 1))
    assert main(["workflows", "apply", edited]) == 1
    assert "is registered with other content" in capsys.readouterr().out
    assert main(["workflows", "versions", name]) == 0
    assert "registered by cli:" in capsys.readouterr().out


def test_an_invalid_file_is_refused_with_file_line_and_path_and_never_registered(stack, tmp_path, capsys):
    name = unique("cli").replace("-", "_")
    path = write(tmp_path, name, OUTBOUND.replace("tool: email@1", "tool: email@3"))
    assert main(["workflows", "apply", path]) == 1
    out = capsys.readouterr().out
    line = next(i for i, text in enumerate(Path(path).read_text().splitlines(), 1) if "email@3" in text)
    assert f"{path}:{line}: $.steps[2].tool: unknown tool 'email@3'" in out
    assert all(c.name != name for c in read_all(stack, "keel.definitions"))


def test_keel_up_registers_the_files_once_and_refuses_a_file_that_differs(
    stack, tmp_path, monkeypatch, capsys
):
    from definitions_topic import definitions_topic

    from keel_ops.cli_workflows import apply_local_files

    topic, name = definitions_topic(stack), unique("up").replace("-", "_")
    local = tmp_path / "flows"
    local.mkdir()
    (local / f"{name}.v1.yaml").write_text(OUTBOUND.replace("name: outbound_email", f"name: {name}", 1))
    monkeypatch.setenv("KEEL_WORKFLOW_DIRS", str(local))
    assert apply_local_files(stack, topic) == 0
    registered = {(c.name, c.version, c.applied_by) for c in read_all(stack, topic)}
    assert registered == {
        ("outbound_email", 1, "keel up"),
        ("lead_enrichment", 1, "keel up"),
        ("support_triage", 1, "keel up"),
        (name, 1, "keel up"),
    }
    assert (
        apply_local_files(stack, topic) == 0 and len(read_all(stack, topic)) == 4
    )  # unchanged: nothing written
    edited = OUTBOUND.replace("name: outbound_email", f"name: {name}", 1).replace(
        "subject: ", "subject: X ", 1
    )
    (local / f"{name}.v1.yaml").write_text(edited)
    capsys.readouterr()
    assert apply_local_files(stack, topic) == 1
    assert "REFUSED" in capsys.readouterr().out and len(read_all(stack, topic)) == 4
