"""Integrity checks of an identity store file: what it is, whether it is whole, whether its
tables agree (schema version, keys, one identity per record, events).

Reads only; built on the store (whose own file checks run before every open) and the
identity event kinds. ``check_store`` is ``linkage store check``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from linkage import schema
from linkage.errors import StoreError
from linkage.identity import EVENT, EVENTS, MERGED_INTO, STATUS
from linkage.store import MIGRATIONS, SCHEMA_VERSION, check_file, truncation

# Examples listed per problem.
_EXAMPLES = 5
# Columns each table must have (dynamic tables: the keys the store itself relies on).
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "meta": ("key", "value"),
    "runs": ("run_id", "kind", "started_at", "finished_at", "status", "config", "summary"),
    "records": ("rk", schema.SOURCE, schema.RECORD_ID, "run_id"),
    "key_index": ("h", "rk"),
    "links": (schema.SOURCE, schema.RECORD_ID, schema.IDENTITY_ID, "run_id", "rk"),
    "identities": (schema.IDENTITY_ID, STATUS, MERGED_INTO, "created_run", "updated_run"),
    "golden": (schema.IDENTITY_ID,),
    "pairs": (
        "source_l",
        "record_id_l",
        "source_r",
        "record_id_r",
        schema.MATCH_WEIGHT,
        schema.MATCH_PROBABILITY,
        "run_id",
    ),
    "model": ("run_id", "model"),
    "events": (
        "run_id",
        EVENT,
        schema.IDENTITY_ID,
        "other_identity",
        schema.SOURCE,
        schema.RECORD_ID,
        "event_time",
        "detail",
    ),
}
# Tables created with the first run rather than with the store.
_CREATED_LATER = ("records", "golden")


@dataclass
class CheckReport:
    """Outcome of :func:`check_store`: problems found (empty when sound) and table sizes."""

    path: Path
    schema_version: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    checks: int = 0
    # not integrity problems (exit 0), but worth fixing: e.g. a store others can read
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def format(self) -> str:
        """Human-readable report, one line per table and per problem."""
        lines = [f"store {self.path}: schema_version {self.schema_version}"]
        lines += [f"  {t:<11} {n:>12,} rows" for t, n in self.counts.items()]
        if self.ok:
            lines.append(f"ok: {self.checks} checks passed")
        else:
            lines.append(f"{len(self.problems)} problem(s):")
            lines += [f"  - {p}" for p in self.problems]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def file_mode_warnings(store: Path) -> list[str]:
    """Warnings for the store, its WAL and its default audit log when group or others may read
    them: the store holds every record and both master keys, the audit log every query."""
    out = []
    for path in (store, store.with_name(store.name + ".wal"),
                 store.with_name(store.name + ".audit.jsonl")):  # fmt: skip
        try:
            mode = path.stat().st_mode & 0o777
        except OSError:
            continue
        if mode & 0o077:
            out.append(
                f"{path} has mode {mode:04o}: group/others can read or write it; "
                f"run chmod 600 '{path}'"
            )
    return out


def _q(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


class _Checker:
    def __init__(self, con: duckdb.DuckDBPyConnection, report: CheckReport):
        self.con = con
        self.report = report
        self.tables: set[str] = set()

    def problem(self, text: str) -> None:
        self.report.problems.append(text)

    def violations(self, label: str, sql: str, tables: tuple[str, ...]) -> None:
        """Run a query listing offending rows; report their count and a few examples."""
        if not all(t in self.tables for t in tables):
            return
        self.report.checks += 1
        try:
            total = self.con.execute(f"SELECT count(*) FROM ({sql})").fetchall()[0][0]
            if total:
                rows = self.con.execute(f"SELECT * FROM ({sql}) LIMIT {_EXAMPLES}").fetchall()
                shown = "; ".join(", ".join(map(str, r)) for r in rows)
                self.problem(f"{label}: {total:,} row(s), e.g. {shown}")
        except duckdb.Error as exc:
            self.problem(f"{label}: cannot be checked ({exc})")

    def structure(self) -> bool:
        rows = self.con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
        self.tables = {r[0] for r in rows}
        if "meta" not in self.tables:
            self.problem("no meta table: not an identity store")
            return False
        got = self.con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
        version = None
        try:
            version = int(got[0][0]) if got else None
        except ValueError:
            pass
        self.report.schema_version = version
        self.report.checks += 1
        if version is None:
            self.problem("meta holds no valid schema_version")
        elif version > SCHEMA_VERSION:
            self.problem(
                f"schema_version {version} is newer than this linkage reads ({SCHEMA_VERSION})"
            )
        elif version < SCHEMA_VERSION and not all(
            v in MIGRATIONS for v in range(version, SCHEMA_VERSION)
        ):
            self.problem(f"schema_version {version} cannot be migrated to {SCHEMA_VERSION}")
        for table, columns in REQUIRED_COLUMNS.items():
            self.report.checks += 1
            if table not in self.tables:
                if table not in _CREATED_LATER:
                    self.problem(f"table '{table}' is missing")
                continue
            have = {
                r[0]
                for r in self.con.execute(
                    "SELECT column_name FROM duckdb_columns() WHERE table_name = ?", [table]
                ).fetchall()
            }
            lacking = [c for c in columns if c not in have]
            if lacking and not (version is not None and version < SCHEMA_VERSION):
                self.problem(f"table '{table}' lacks column(s) {', '.join(lacking)}")
        return True

    def readable(self) -> None:
        """Read every table in full: DuckDB verifies each block's checksum as it reads it."""
        for table in sorted(self.tables):
            self.report.checks += 1
            try:
                reader = self.con.sql(f"SELECT * FROM {_q(table)}").to_arrow_reader(100_000)
                n = sum(batch.num_rows for batch in reader)
                self.report.counts[table] = n
            except duckdb.Error as exc:
                self.problem(f"table '{table}' cannot be read: {exc}")

    def relations(self) -> None:
        v = self.violations
        v(
            "records with a null or repeated row key rk",
            "SELECT rk, count(*) AS n FROM records GROUP BY rk HAVING rk IS NULL OR count(*) > 1",
            ("records",),
        )
        v(
            "records stored more than once (source, record_id)",
            "SELECT source, record_id, count(*) AS n FROM records "
            "GROUP BY source, record_id HAVING count(*) > 1",
            ("records",),
        )
        v(
            "records with a null source or record_id",
            "SELECT rk FROM records WHERE source IS NULL OR record_id IS NULL",
            ("records",),
        )
        v(
            "records in more than one identity (repeated links)",
            "SELECT source, record_id, count(*) AS n FROM links "
            "GROUP BY source, record_id HAVING count(*) > 1",
            ("links",),
        )
        v(
            "records in no identity (no link)",
            "SELECT r.source, r.record_id FROM records r ANTI JOIN links l "
            "ON r.source = l.source AND r.record_id = l.record_id",
            ("records", "links"),
        )
        v(
            "links to records not in the store",
            "SELECT l.source, l.record_id FROM links l ANTI JOIN records r "
            "ON r.source = l.source AND r.record_id = l.record_id",
            ("records", "links"),
        )
        v(
            "links whose rk is not their record's row key",
            "SELECT l.source, l.record_id, l.rk, r.rk FROM links l JOIN records r "
            "ON r.source = l.source AND r.record_id = l.record_id WHERE l.rk IS DISTINCT FROM r.rk",
            ("records", "links"),
        )
        v(
            "identities listed more than once",
            "SELECT identity_id, count(*) AS n FROM identities "
            "GROUP BY identity_id HAVING count(*) > 1",
            ("identities",),
        )
        v(
            "links to an identity that is not active",
            "SELECT l.source, l.record_id, l.identity_id, i.status FROM links l "
            "LEFT JOIN identities i ON i.identity_id = l.identity_id "
            "WHERE i.status IS DISTINCT FROM 'active'",
            ("links", "identities"),
        )
        v(
            "active identities without records",
            "SELECT i.identity_id FROM identities i ANTI JOIN links l "
            "ON l.identity_id = i.identity_id WHERE i.status = 'active'",
            ("links", "identities"),
        )
        v(
            "identities with an unknown status or a dangling merged_into",
            "SELECT i.identity_id, i.status, i.merged_into FROM identities i "
            "LEFT JOIN identities m ON m.identity_id = i.merged_into "
            "WHERE i.status NOT IN ('active', 'merged', 'retired') "
            "OR (i.status = 'merged' AND m.identity_id IS NULL)",
            ("identities",),
        )
        v(
            "golden records repeated or of identities that are not active",
            "SELECT g.identity_id FROM golden g LEFT JOIN identities i "
            "ON i.identity_id = g.identity_id GROUP BY g.identity_id "
            "HAVING count(*) > 1 OR bool_or(i.status IS DISTINCT FROM 'active')",
            ("golden", "identities"),
        )
        v(
            "active identities without a golden record",
            "SELECT i.identity_id FROM identities i ANTI JOIN golden g "
            "ON g.identity_id = i.identity_id WHERE i.status = 'active'",
            ("golden", "identities"),
        )
        v(
            "key_index entries pointing at no record",
            "SELECT k.h, k.rk FROM key_index k ANTI JOIN records r ON r.rk = k.rk",
            ("key_index", "records"),
        )
        v(
            "runs listed more than once",
            "SELECT run_id, count(*) FROM runs GROUP BY run_id HAVING count(*) > 1",
            ("runs",),
        )
        for table in ("records", "links", "golden", "events", "pairs"):
            v(
                f"{table} rows written by a run not in the runs table",
                f"SELECT DISTINCT t.run_id FROM {_q(table)} t "
                "ANTI JOIN runs r ON r.run_id = t.run_id",
                (table, "runs"),
            )
        events = ", ".join(f"'{e}'" for e in EVENTS)  # constants of the package, not input
        v(
            "events of an unknown kind",
            f"SELECT run_id, event FROM events WHERE event NOT IN ({events})",
            ("events",),
        )
        v(
            "events naming an identity the store does not know",
            "SELECT e.run_id, e.event, e.identity_id FROM events e ANTI JOIN identities i "
            "ON i.identity_id = e.identity_id",
            ("events", "identities"),
        )
        v(
            "identities with no 'created' event",
            "SELECT i.identity_id FROM identities i ANTI JOIN events e "
            "ON e.identity_id = i.identity_id AND e.event = 'created'",
            ("events", "identities"),
        )


def check_store(path: str | os.PathLike) -> CheckReport:
    """Verify an identity store's structure and integrity without changing it.

    Checks: the file is a whole DuckDB database (magic bytes, length against the declared
    block count, every block's checksum by reading each table in full); meta's
    schema_version; every table and the columns the store relies on; row keys unique;
    every record in exactly one identity and every link to a stored record and an active
    identity; golden records one per active identity; key index, runs and events consistent.
    Raises StoreError when the path is missing or not a DuckDB file; returns a report
    listing the problems otherwise.
    """
    path = Path(path)
    if not path.exists():
        raise StoreError("identity store not found", path=str(path))
    check_file(path)
    report = CheckReport(path=path)
    report.warnings = file_mode_warnings(path)
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        report.problems.append(f"cannot be opened: {exc}")
        return report
    try:
        checker = _Checker(con, report)
        report.checks += 1
        cut = truncation(con, path)
        if cut:
            report.problems.append(cut)
        if checker.structure():
            checker.readable()
            checker.relations()
    except duckdb.Error as exc:
        report.problems.append(f"cannot be read: {exc}")
    finally:
        con.close()
    return report
