"""`keel credentials set | list | delete | rotate` against the real PostgreSQL."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from credstore_db import CredDb, credential_db, keyring, new_key

from keel_ops.cli import main

pytestmark = pytest.mark.integration
K1, K2 = new_key(), new_key()
SECRET = "sk_live_never-printed"


@pytest.fixture
def cdb(stack, monkeypatch) -> Iterator[CredDb]:
    for found in credential_db(stack):
        monkeypatch.setenv("DATABASE_URL", found.url)
        monkeypatch.setenv("KEEL_CREDENTIAL_KEYS", json.dumps({"k1": K1}))
        monkeypatch.setenv("KEEL_CREDENTIAL_KEY_ID", "k1")
        yield found


def keel(monkeypatch, *argv: str, stdin: str = "") -> int:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    return main(["credentials", *argv])


def value(cdb: CredDb, tenant: str, name: str, keys: dict[str, str] | None = None) -> str | None:
    ring = keyring(keys or {"k1": K1}, next(iter(keys or {"k1": K1})))
    return cdb.store(ring, ttl_s=0).lookup(tenant, name)


def test_set_reads_the_value_from_stdin_or_a_variable_never_an_argument(cdb, monkeypatch, capsys):
    assert keel(monkeypatch, "set", "acme", "stripe", stdin=SECRET + "\n") == 0
    assert value(cdb, "acme", "stripe") == SECRET  # the newline `echo` adds is not part of it
    monkeypatch.setenv("GLOBEX_STRIPE", "sk_globex")
    assert keel(monkeypatch, "set", "globex", "stripe", "--from-env", "GLOBEX_STRIPE") == 0
    assert value(cdb, "globex", "stripe") == "sk_globex"
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err and "sk_globex" not in out.out + out.err
    with pytest.raises(SystemExit) as exit_:
        keel(monkeypatch, "set", "acme", "email", "sk_in_shell_history")
    assert exit_.value.code == 2
    assert value(cdb, "acme", "email") is None


def test_set_refuses_an_empty_value_or_a_missing_variable(cdb, monkeypatch, capsys):
    assert keel(monkeypatch, "set", "acme", "stripe", stdin="\n") == 1
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    assert keel(monkeypatch, "set", "acme", "stripe", "--from-env", "NOT_SET_ANYWHERE") == 1
    err = capsys.readouterr().err
    assert "empty" in err and "NOT_SET_ANYWHERE is not set" in err
    assert cdb.rows() == []


def test_list_shows_names_and_key_ids_never_values(cdb, monkeypatch, capsys):
    keel(monkeypatch, "set", "acme", "stripe", stdin=SECRET)
    keel(monkeypatch, "set", "acme", "email", stdin="em_secret")
    keel(monkeypatch, "set", "globex", "crm", stdin="crm_secret")
    capsys.readouterr()
    assert keel(monkeypatch, "list") == 0
    everything = capsys.readouterr().out
    assert keel(monkeypatch, "list", "acme") == 0
    acme = capsys.readouterr().out
    for secret in (SECRET, "em_secret", "crm_secret"):
        assert secret not in everything + acme
    assert "globex" in everything and "crm" in everything
    assert "globex" not in acme and "stripe" in acme and "email" in acme and "k1" in acme


def test_delete(cdb, monkeypatch, capsys):
    keel(monkeypatch, "set", "acme", "stripe", stdin=SECRET)
    assert keel(monkeypatch, "delete", "acme", "stripe") == 0
    assert value(cdb, "acme", "stripe") is None
    assert keel(monkeypatch, "delete", "acme", "stripe") == 1  # nothing to delete is said, not hidden
    assert "no credential 'stripe' for tenant 'acme'" in capsys.readouterr().err


def test_rotate_step_by_step(cdb, monkeypatch, capsys):
    keel(monkeypatch, "set", "acme", "stripe", stdin=SECRET)
    keel(monkeypatch, "set", "globex", "stripe", stdin="sk_globex")
    # Add k2 and make it current, keeping k1: list marks the rows still under k1.
    monkeypatch.setenv("KEEL_CREDENTIAL_KEYS", json.dumps({"k1": K1, "k2": K2}))
    monkeypatch.setenv("KEEL_CREDENTIAL_KEY_ID", "k2")
    capsys.readouterr()
    keel(monkeypatch, "list")
    assert capsys.readouterr().out.count("rotate") == 2
    assert keel(monkeypatch, "rotate") == 0
    assert "resealed 2 of 2" in capsys.readouterr().out
    assert {key_id for _, _, key_id, _, _ in cdb.rows()} == {"k2"}
    # Drop k1: everything still reads.
    monkeypatch.setenv("KEEL_CREDENTIAL_KEYS", json.dumps({"k2": K2}))
    assert value(cdb, "acme", "stripe", {"k2": K2}) == SECRET
    assert value(cdb, "globex", "stripe", {"k2": K2}) == "sk_globex"
    keel(monkeypatch, "list")
    assert "rotate" not in capsys.readouterr().out


def test_list_flags_a_row_whose_key_is_gone(cdb, monkeypatch, capsys):
    keel(monkeypatch, "set", "acme", "stripe", stdin=SECRET)
    monkeypatch.setenv("KEEL_CREDENTIAL_KEYS", json.dumps({"k2": K2}))
    monkeypatch.setenv("KEEL_CREDENTIAL_KEY_ID", "k2")
    capsys.readouterr()
    assert keel(monkeypatch, "list") == 0
    assert "key k1 not configured" in capsys.readouterr().out
    assert keel(monkeypatch, "rotate") == 1
    assert "key id 'k1'" in capsys.readouterr().err


def test_a_missing_key_configuration_is_a_clear_error(cdb, monkeypatch, capsys):
    monkeypatch.delenv("KEEL_CREDENTIAL_KEYS")
    assert keel(monkeypatch, "set", "acme", "stripe", stdin=SECRET) == 1
    assert "KEEL_CREDENTIAL_KEYS is not set" in capsys.readouterr().err


@pytest.mark.parametrize("action", [[], ["set"], ["list"], ["delete"], ["rotate"]])
def test_every_action_has_help(monkeypatch, capsys, action):
    with pytest.raises(SystemExit) as exit_:
        main(["credentials", *action, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "usage: keel credentials" in out
    if action == ["set"]:
        assert "stdin" in out and "--from-env" in out


def test_the_keel_command_reads_a_piped_value(cdb):
    env = {**os.environ, "DATABASE_URL": cdb.url, "KEEL_CREDENTIAL_KEYS": json.dumps({"k1": K1})}
    env.pop("KEEL_CREDENTIAL_KEY_ID", None)  # one key: it is the current one
    done = subprocess.run(
        [sys.executable, "-m", "keel_ops.cli", "credentials", "set", "acme", "stripe"],
        input=SECRET + "\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout + done.stderr
    assert value(cdb, "acme", "stripe") == SECRET


def test_the_readme_commands_run_as_written(cdb):
    """The README's `keel credentials` block, line by line, through the installed command's code."""
    from keel.schemas import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text()
    block = readme.split("Then, with the table in place (`keel migrate`):\n\n```\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]
    # The prompt (a terminal without echo) is the one line a test cannot type into.
    commands = [c for c in commands if c != "keel credentials set acme stripe"]
    assert len(commands) == 4, commands
    env = {
        **os.environ,
        "DATABASE_URL": cdb.url,
        "KEEL_CREDENTIAL_KEYS": json.dumps({"k1": K1}),
        "KEEL_CREDENTIAL_KEY_ID": "k1",
        "ACME_STRIPE_KEY": SECRET,
        "SHARED_CRM_TOKEN": "shared-crm",
    }
    outputs = []
    for command in commands:
        shell = command.replace("keel credentials", f"{sys.executable} -m keel_ops.cli credentials")
        done = subprocess.run(
            ["bash", "-c", shell.replace("[acme]", "acme")],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert done.returncode == 0, (command, done.stderr)
        outputs.append(done.stdout + done.stderr)
    assert SECRET not in "".join(outputs) and "shared-crm" not in "".join(outputs)
    assert "stripe" in outputs[2]  # list, before the delete
    assert value(cdb, "acme", "stripe") is None  # deleted by the last line
    assert value(cdb, "globex", "crm") == "shared-crm"  # the shared row serves a tenant without one
