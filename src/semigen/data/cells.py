"""CSV cells a spreadsheet would run: a cell that begins with =, +, -, @, a tab or a carriage
return is read by Excel and LibreOffice as a formula (CSV injection, OWASP), so a class or a
file named ``=HYPERLINK(...)`` could act when a user opens an export. Every CSV semigen writes
puts an apostrophe before such a text cell (the spreadsheet then shows it as text), and every
CSV semigen reads takes that apostrophe off again, so its own files read back unchanged."""

from __future__ import annotations

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
