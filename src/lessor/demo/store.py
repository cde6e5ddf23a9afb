"""The demo's reminder store: one SQLite file that every worker process opens.

Three tables:

* ``reminders``: the work. ``id`` is a random 8-byte key in hex (16 digits, so text order is
  key order and a partition's ``query_bounds(8)`` selects it); ``done`` is set by the fenced
  write that processes it; ``fence`` is the fencing token of that write.
* ``processings``: one row per reminder a worker processed: who (``worker``, ``dc``), under
  which lease (``token``), from ``start`` (the batch was handed over under the lease) to
  ``end`` (the fenced write was issued, inside the transaction that makes it), and whether
  the fence ``accepted`` the write. Times are :func:`time.monotonic`, which on Linux is one
  clock for every process of a host: the demo runs all of its processes on one.
* ``leases``: one row per lease a worker was granted: ranges, token, when it was asked for,
  granted, its deadline, and when it was given back (logged just before the give-back, when
  its holder stopped relying on it; NULL if its holder died holding it).

WAL mode lets the display read while workers write; every write is one short ``BEGIN
IMMEDIATE`` transaction, and a busy database is waited for (the busy timeout), never failed on
at once. ``synchronous=NORMAL``: a demo's store need not survive a power cut.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lessor.context import Context
from lessor.partition import Partition, SortedPartitions

__all__ = ["KEY_SPACE_BYTES", "LeaseRow", "Processing", "Progress", "ReminderStore"]

KEY_SPACE_BYTES = 8
"""Reminder ids are random keys of this many bytes."""

_SCHEMA = """
CREATE TABLE reminders (
    id TEXT PRIMARY KEY,
    done INTEGER NOT NULL DEFAULT 0,
    fence INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX undone ON reminders(id) WHERE done = 0;
CREATE TABLE processings (
    item TEXT NOT NULL,
    worker TEXT NOT NULL,
    dc TEXT NOT NULL,
    token INTEGER NOT NULL,
    start REAL NOT NULL,
    end REAL NOT NULL,
    accepted INTEGER NOT NULL
);
CREATE TABLE leases (
    worker TEXT NOT NULL,
    dc TEXT NOT NULL,
    token INTEGER NOT NULL,
    ranges TEXT NOT NULL,
    requested REAL NOT NULL,
    granted REAL NOT NULL,
    deadline REAL NOT NULL,
    released REAL
);
"""


@dataclass(frozen=True, slots=True)
class Processing:
    """One row of ``processings``."""

    item: str
    worker: str
    dc: str
    token: int
    start: float
    end: float
    accepted: bool


@dataclass(frozen=True, slots=True)
class LeaseRow:
    """One row of ``leases``; ``released`` is None when its holder never gave it back."""

    worker: str
    dc: str
    token: int
    ranges: SortedPartitions
    requested: float
    granted: float
    deadline: float
    released: float | None

    @property
    def end(self) -> float:
        """When its holder stopped relying on it: given back, or its deadline."""
        return self.deadline if self.released is None else min(self.released, self.deadline)


@dataclass(frozen=True, slots=True)
class Progress:
    """What the display shows: accepted processings per dc since the last look."""

    per_dc: dict[str, int]
    left: int


class ReminderStore:
    """A connection to the store at ``path``; one per process (SQLite connections are not
    shared between threads here)."""

    def __init__(self, path: str | Path, *, busy_timeout: float = 10.0) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"no reminder store at {str(self.path)!r}")
        # isolation_level=None: transactions are begun and ended here, explicitly.
        self._db = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None)
        self._busy_ms = int(busy_timeout * 1000)
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._last_rowid = 0

    @classmethod
    def create(cls, path: str | Path, rows: int, rng: random.Random | None = None) -> ReminderStore:
        """A new store at ``path`` (which must not exist) with ``rows`` random reminders."""
        if rows < 1:
            raise ValueError(f"a store needs at least 1 reminder, got {rows}")
        path = Path(path)
        if path.exists():
            raise FileExistsError(f"{str(path)!r} exists: the demo makes a new store")
        rng = rng or random.Random()
        db = sqlite3.connect(path, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.executescript(_SCHEMA)
            ids: set[str] = set()
            while len(ids) < rows:  # random keys collide rarely; a set makes them distinct
                ids.add(f"{rng.getrandbits(KEY_SPACE_BYTES * 8):0{KEY_SPACE_BYTES * 2}x}")
            db.execute("BEGIN")
            db.executemany("INSERT INTO reminders (id) VALUES (?)", ((i,) for i in sorted(ids)))
            db.execute("COMMIT")
        finally:
            db.close()
        return cls(path)

    def close(self) -> None:
        self._db.close()

    # -- what a worker does ------------------------------------------------------------------

    def scan(self, part: Partition, limit: int) -> list[str]:
        """Up to ``limit`` ids of reminders not yet done in ``part``, in key order."""
        low, high = part.query_bounds(KEY_SPACE_BYTES)
        rows = self._db.execute(
            "SELECT id FROM reminders WHERE done = 0 AND id >= ? AND id < ? ORDER BY id LIMIT ?",
            (low, high, limit),
        ).fetchall()
        return [r[0] for r in rows]

    def undone(self, ids: Sequence[str]) -> list[str]:
        """Those of ``ids`` that are still not done, in the given order."""
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        found = {
            r[0]
            for r in self._db.execute(
                f"SELECT id FROM reminders WHERE done = 0 AND id IN ({marks})", list(ids)
            )
        }
        return [i for i in ids if i in found]

    def process(
        self, ctx: Context, ids: Sequence[str], *, worker: str, dc: str, token: int, start: float
    ) -> int | None:
        """Mark ``ids`` done with fencing ``token`` and log each processing, in one
        transaction; the number of writes the fence accepted.

        Returns None, writing nothing, when ``ctx`` (the lease's) is done before the write
        lock is held: past the lease's deadline another holder may own these ids. Waiting for
        the lock is bounded by what is left of ``ctx``.
        """
        wait_ms = max(1, min(self._busy_ms, int(ctx.remaining() * 1000)))
        self._db.execute(f"PRAGMA busy_timeout = {wait_ms}")
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            if ctx.done():
                return None
            raise
        try:
            if ctx.done():
                self._db.execute("ROLLBACK")
                return None
            end = time.monotonic()
            rows = []
            accepted = 0
            for item in ids:
                cursor = self._db.execute(
                    "UPDATE reminders SET done = 1, fence = ? WHERE id = ? AND fence < ?",
                    (token, item, token),
                )
                rows.append((item, worker, dc, token, start, end, cursor.rowcount))
                accepted += cursor.rowcount
            self._db.executemany("INSERT INTO processings VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        finally:
            self._db.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
        return accepted

    def record_lease(
        self,
        *,
        worker: str,
        dc: str,
        token: int,
        ranges: SortedPartitions,
        requested: float,
        granted: float,
        deadline: float,
    ) -> int:
        """Log a granted lease; its row id, for :meth:`record_release`."""
        cursor = self._db.execute(
            "INSERT INTO leases VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
            (worker, dc, token, " ".join(ranges.to_strings()), requested, granted, deadline),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def record_release(self, row: int, released: float) -> None:
        self._db.execute("UPDATE leases SET released = ? WHERE rowid = ?", (released, row))

    # -- what the display and the checks read ------------------------------------------------

    def left(self) -> int:
        """How many reminders are not done."""
        return int(self._db.execute("SELECT count(*) FROM reminders WHERE done = 0").fetchone()[0])

    def total(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM reminders").fetchone()[0])

    def progress(self) -> Progress:
        """Accepted processings per dc since the previous call, and how many are left."""
        newest = self._db.execute("SELECT max(rowid) FROM processings").fetchone()[0] or 0
        per_dc = dict(
            self._db.execute(
                "SELECT dc, count(*) FROM processings WHERE rowid > ? AND rowid <= ? "
                "AND accepted = 1 GROUP BY dc",
                (self._last_rowid, newest),
            ).fetchall()
        )
        self._last_rowid = newest
        return Progress(per_dc, self.left())

    def processings(self) -> list[Processing]:
        return [
            Processing(item, worker, dc, token, start, end, bool(accepted))
            for item, worker, dc, token, start, end, accepted in self._db.execute(
                "SELECT item, worker, dc, token, start, end, accepted FROM processings "
                "ORDER BY rowid"
            )
        ]

    def leases(self) -> list[LeaseRow]:
        return [
            LeaseRow(w, dc, token, SortedPartitions.from_strings(r.split()), req, g, dl, rel)
            for w, dc, token, r, req, g, dl, rel in self._db.execute(
                "SELECT worker, dc, token, ranges, requested, granted, deadline, released "
                "FROM leases ORDER BY rowid"
            )
        ]

    def ids_in(self, parts: Iterable[Partition]) -> list[str]:
        """Every reminder id, done or not, inside ``parts``."""
        ids: list[str] = []
        for p in parts:
            low, high = p.query_bounds(KEY_SPACE_BYTES)
            ids.extend(
                r[0]
                for r in self._db.execute(
                    "SELECT id FROM reminders WHERE id >= ? AND id < ? ORDER BY id", (low, high)
                )
            )
        return ids


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lessor.demo.store create --path P --rows N``: make a store for workers that
    run elsewhere (deploy/compose.yaml's seed service)."""
    parser = argparse.ArgumentParser(
        prog="python -m lessor.demo.store",
        description="The lessor demo's SQLite reminder store.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    create = commands.add_parser(
        "create",
        help="make a new store of random reminders",
        description="Make a new store of random reminders (refuses an existing file).",
    )
    create.add_argument("--path", required=True, type=Path, help="the SQLite file to create")
    create.add_argument(
        "--rows", type=int, default=100_000, help="reminders to create (default 100000)"
    )
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error(f"--rows must be at least 1, got {args.rows}")
    try:
        ReminderStore.create(args.path, args.rows).close()
    except (OSError, sqlite3.Error) as e:
        print(f"lessor.demo.store: {e}", file=sys.stderr)
        return 1
    print(f"created {args.path} with {args.rows} reminders")
    return 0


if __name__ == "__main__":
    sys.exit(main())
