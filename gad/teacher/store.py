"""The resumable, append-only response store: one JSONL line per finished response.

Why this shape: a line is written with a single ``write`` on an ``O_APPEND`` descriptor the moment
its response arrives, so a kill -9 loses at most the responses still in flight, never one already
paid for. On open, the ids already present are the resume state (no separate state file to drift),
a torn last line (power loss, full disk) is cut off, and an exclusive lock keeps a second process
from writing the same file and creating duplicates.

Responses kept out of the teacher set (``--drop-truncated``) go to a ``.dropped.jsonl`` sidecar, so
a rerun counts them as done instead of paying for them again. Requests the server refused for
reasons of their own (too long for its context, a content policy) go to a ``.rejected.jsonl``
sidecar with the reason: a rerun does not send them again unless asked (``retry_rejected``). That
file is a log: a request refused again is appended again, and one answered later counts as answered.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

from gad.errors import UserError


class StoreError(UserError, RuntimeError):
    pass


def sidecar(path: str | Path, suffix: str) -> Path:
    """``teacher.jsonl`` -> ``teacher<suffix>`` (e.g. ``.summary.json``), beside it."""
    path = Path(path)
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return path.with_name(stem + suffix)


class JsonlFile:
    """An append-only JSONL file that knows its ids and survives being killed mid-write."""

    def __init__(self, path: str | Path, fsync_interval_s: float = 1.0, unique: bool = True):
        self.path = Path(path)
        self.fsync_interval_s = fsync_interval_s
        self.unique = unique
        """False for a log where an id may come back (the rejected sidecar)."""
        self.ids: set[str] = set()
        self.fingerprints: set[str] = set()
        self.repaired_bytes = 0
        self._fd: int | None = None
        self._last_sync = 0.0

    # -- reading -----------------------------------------------------------------------------------
    def scan(self, repair: bool) -> None:
        """Load ids; a torn or unparsable *last* line is cut off (``repair``) or ignored. A bad line
        anywhere else is not something gad wrote, so it stops with the line number."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        pos = good_end = lineno = 0
        missing_newline = False
        while pos < len(data):
            nl = data.find(b"\n", pos)
            end = len(data) if nl == -1 else nl + 1
            raw, lineno = data[pos:end], lineno + 1
            if raw.strip():
                row = _parse(raw)
                if row is None:
                    if end == len(data):
                        break  # torn tail: cut from `pos` on
                    raise StoreError(f"{self.path}:{lineno}: not a valid JSON row; gad never writes "
                                     "such a line, so the file was edited or damaged: fix or remove it")
                missing_newline = nl == -1  # complete row, cut just before its newline: keep it
                self.ids.add(str(row["id"]))
                fp = (row.get("meta") or {}).get("settings")
                if fp:
                    self.fingerprints.add(fp)
            good_end = pos = end
        self.repaired_bytes = len(data) - good_end
        if repair and (self.repaired_bytes or missing_newline):
            with open(self.path, "r+b") as f:
                f.truncate(good_end)
                if missing_newline:
                    f.seek(good_end)
                    f.write(b"\n")
                os.fsync(f.fileno())

    # -- writing -----------------------------------------------------------------------------------
    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(f"{self.path} is being written by another process; wait for it or "
                             "choose another --out") from None
        self._fd = fd
        self.scan(repair=True)  # under the lock, so nobody appends while we cut a torn tail

    def append(self, row: dict[str, Any]) -> None:
        assert self._fd is not None, "open() first"
        rid = str(row["id"])
        if self.unique and rid in self.ids:
            raise StoreError(f"{self.path}: id {rid!r} is already stored (refusing a duplicate)")
        line = (json.dumps(row, ensure_ascii=False) + "\n").encode()
        size = os.fstat(self._fd).st_size
        try:
            written = os.write(self._fd, line)
            if written != len(line):
                raise OSError(f"short write ({written} of {len(line)} bytes): disk full?")
        except OSError as exc:
            os.ftruncate(self._fd, size)  # leave no half line behind
            raise StoreError(f"could not append to {self.path}: {exc}") from None
        self.ids.add(rid)
        now = time.monotonic()
        if now - self._last_sync >= self.fsync_interval_s:
            os.fsync(self._fd)  # kill -9 is covered by the page cache; this is for power loss
            self._last_sync = now

    def close(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)  # releases the lock
            self._fd = None


class ResponseStore:
    """Where collected responses go: the main file plus the dropped and rejected sidecars.

    Rows: ``{"id", "messages", <response_field>, "meta": {...}, **request.extra}``; the teacher set
    uses ``response_field="teacher_response"``, a judge may use its own. Rejected rows:
    ``{"id", "messages", "reason", "meta": {...}, **request.extra}``.

    ``retry_rejected``: rejected requests are not done, so a collection sends them again.
    """

    def __init__(self, path: str | Path, response_field: str = "teacher_response", *, retry_rejected: bool = False):
        self.main = JsonlFile(path)
        self.dropped = JsonlFile(sidecar(path, ".dropped.jsonl"))
        self.rejected = JsonlFile(sidecar(path, ".rejected.jsonl"), unique=False)
        self.response_field = response_field
        self.retry_rejected = retry_rejected

    @property
    def path(self) -> Path:
        return self.main.path

    @property
    def answered_ids(self) -> set[str]:
        return self.main.ids | self.dropped.ids

    @property
    def rejected_ids(self) -> set[str]:
        """Requests refused and not answered since."""
        return self.rejected.ids - self.main.ids - self.dropped.ids

    @property
    def done_ids(self) -> set[str]:
        """What a collection does not send again."""
        return self.answered_ids if self.retry_rejected else self.answered_ids | self.rejected.ids

    @property
    def fingerprints(self) -> set[str]:
        return self.main.fingerprints | self.dropped.fingerprints

    @property
    def repaired_bytes(self) -> int:
        return self.main.repaired_bytes + self.dropped.repaired_bytes + self.rejected.repaired_bytes

    def scan(self) -> ResponseStore:
        """Read-only look (for --dry-run): no lock, no repair."""
        for file in (self.main, self.dropped, self.rejected):
            file.scan(repair=False)
        return self

    def open(self) -> ResponseStore:
        self.main.open()
        try:
            for side in (self.dropped, self.rejected):  # opened (locked) when there, else on first use
                side.open() if side.path.exists() else side.scan(repair=False)
        except BaseException:
            self.close()
            raise
        overlap = self.main.ids & self.dropped.ids
        if overlap:
            raise StoreError(f"{len(overlap)} ids are both in {self.main.path} and {self.dropped.path}")
        return self

    def append(self, row: dict[str, Any], dropped: bool = False) -> None:
        rid = str(row["id"])
        if rid in self.main.ids or rid in self.dropped.ids:  # not done_ids: no set union per line
            raise StoreError(f"id {row['id']!r} is already stored (refusing a duplicate)")
        target = self.dropped if dropped else self.main
        if dropped and target._fd is None:
            target.open()
        target.append(row)

    def reject(self, row: dict[str, Any]) -> None:
        """Log a refused request (``row["reason"]`` says why); it may have been refused before."""
        if str(row["id"]) in self.main.ids or str(row["id"]) in self.dropped.ids:
            raise StoreError(f"id {row['id']!r} is already answered (refusing to log it as rejected)")
        if self.rejected._fd is None:
            self.rejected.open()
        self.rejected.append(row)

    def close(self) -> None:
        self.main.close()
        self.dropped.close()
        self.rejected.close()

    def __enter__(self) -> ResponseStore:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The complete rows of a store file (a torn last line is skipped, as on resume)."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for raw in path.read_bytes().split(b"\n"):
        if raw.strip():
            row = _parse(raw)
            if row is not None:
                rows.append(row)
    return rows


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        row = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return row if isinstance(row, dict) and "id" in row else None
