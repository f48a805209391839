"""Reading the user's text files: UTF-8, strictly, with a byte-order mark allowed.

Teacher sets, prompt files, evaluation sets, configs and exports are all read here, so a file that
is not UTF-8 gets the same one-line error everywhere, naming the file and the line of the first bad
byte (instead of a ``UnicodeDecodeError`` traceback), and a file that starts with the UTF-8 mark
(``EF BB BF``, written by Windows tools and spreadsheet exports) reads like any other.

Each function raises ``error``, the caller's own exception type, as :mod:`gad.rows` does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

BOM = b"\xef\xbb\xbf"


def read_text(path: str | Path, error: type[Exception]) -> str:
    """The whole file as text (a leading byte-order mark dropped)."""
    data = _read_bytes(Path(path), error).removeprefix(BOM)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line_start = data.rfind(b"\n", 0, e.start) + 1
        raise error(_not_utf8(path, data.count(b"\n", 0, e.start) + 1, data, e.start, line_start)) from None


def read_lines(path: str | Path, error: type[Exception]) -> Iterator[tuple[int, str | Exception]]:
    """``(number, text)`` for each line, counted from 1, without its line break (``\\n`` or ``\\r\\n``).

    A line that is not UTF-8 comes as an ``error`` in place of its text, so a reader can stop there
    or count it as a bad row and go on. The file is read a line at a time.
    """
    path = Path(path)
    check_readable(path, error)
    try:
        f = path.open("rb")
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror})") from None
    with f:
        for number, raw in enumerate(f, start=1):
            if number == 1 and raw.startswith(BOM):
                raw = raw[len(BOM):]
            raw = raw.rstrip(b"\n").removesuffix(b"\r")
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield number, error(_not_utf8(path, number, raw, e.start, 0))


def _not_utf8(path: str | Path, line: int, data: bytes, at: int, line_start: int) -> str:
    hint = " (it looks like UTF-16)" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
    return (f"{path}:{line}: not UTF-8 text (byte 0x{data[at]:02x} at column {at - line_start + 1}){hint}; "
            "save the file as UTF-8")


def check_readable(path: Path, error: type[Exception]) -> None:
    """``error`` naming ``path`` when there is no such file, or it is a folder."""
    if not path.exists():
        raise error(f"{path}: no such file")
    if path.is_dir():
        raise error(f"{path}: is a folder, not a file")


def _read_bytes(path: Path, error: type[Exception]) -> bytes:
    check_readable(path, error)
    try:
        return path.read_bytes()
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror})") from None
