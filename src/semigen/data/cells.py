"""CSV cells a spreadsheet would run: a cell that begins with =, +, -, @, a tab or a carriage
return is read by Excel and LibreOffice as a formula (CSV injection, OWASP), so a class or a
file named ``=HYPERLINK(...)`` could act when a user opens an export. Every CSV semigen writes
puts an apostrophe before such a text cell (the spreadsheet then shows it as text), and every
CSV semigen reads takes that apostrophe off again, so its own files read back unchanged."""

from __future__ import annotations

import re
from collections.abc import Iterable

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe(cell):
    """`cell` as a spreadsheet shows it and never runs it (text cells only)."""
    return "'" + cell if isinstance(cell, str) and cell.startswith(FORMULA_START) else cell


def safe_row(cells: Iterable) -> list:
    return [safe(cell) for cell in cells]


def restored(cell: str) -> str:
    """The text `safe` was given: a leading apostrophe before a formula's first character
    taken off."""
    return cell[1:] if cell[:1] == "'" and cell[1:2] and cell[1] in FORMULA_START else cell


def restored_row(row: dict) -> dict:
    """A `csv.DictReader` row with `restored` text cells."""
    return {k: restored(v) if isinstance(v, str) else v for k, v in row.items()}


# Characters no file name or class name of a user's needs, and that hide what a row says:
# control characters (NUL, line breaks) and the bidirectional overrides.
HIDDEN = re.compile("[\x00-\x1f\x7f\u200e\u200f\u202a-\u202e\u2066-\u2069\u061c]")


def visible(text: str) -> str:
    """`text` with the characters that hide what it says made visible as ``[U+202E]``: a right-
    to-left override makes a class ``abc<U+202E>gnp.exe`` read as ``abcexe.png``. What every page
    semigen writes (the report, the review page) shows of a user's names."""
    return HIDDEN.sub(lambda m: f"[U+{ord(m.group()):04X}]", text)
