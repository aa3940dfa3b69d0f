"""CSV cells meant for spreadsheets: shown as text, never evaluated (OWASP "CSV injection").

Every CSV this runtime writes for people (predict and convert CSVs, the sort manifest) passes
its text cells through here; our own readers undo it exactly. Camtrap DP keeps exact values.
"""

from __future__ import annotations

import csv
import re
from typing import Iterator, TextIO

#: What makes a spreadsheet read a cell as a formula (OWASP "CSV injection"): =, +, -, @, and tab /
#: carriage return, which some spreadsheets strip before looking at the next character.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def spreadsheet_cell(value: object) -> object:
    """A CSV cell a spreadsheet shows as text instead of evaluating it (OWASP's rule).

    A text cell starting with a formula character gets a single quote in front; so does one
    that already starts with a quote, which keeps the rule reversible (`from_spreadsheet_cell`).
    Numbers are left alone: non-string values, and strings that are one plain number such as
    "-0.25" (a spreadsheet reads those as numbers, never as formulas).
    """
    if not isinstance(value, str) or not value:
        return value
    if value[0] in FORMULA_START or value[0] == "'":
        if _PLAIN_NUMBER.fullmatch(value):
            return value
        return "'" + value
    return value


#: Cells of our CSVs that hold numbers we formatted (confidences, box coordinates, indexes):
#: never text from a user, so never quoted (a box at x = -0.01 stays "-0.0100 ...").
NUMBER_FIELDS = frozenset({"confidence", "detection", "bbox", "sequence_confidence", "size",
                           "mtime_ns", "device", "inode", "frames_used", "frame_number",
                           "frame_time"})


def spreadsheet_row(row: dict) -> dict:
    """`spreadsheet_cell` on every text cell of a CSV row (NUMBER_FIELDS are left alone)."""
    return {k: v if k in NUMBER_FIELDS else spreadsheet_cell(v) for k, v in row.items()}


def from_spreadsheet_cell(cell: str) -> str:
    """The text `spreadsheet_cell` was given (one leading quote taken off where it added one)."""
    if cell[:1] == "'" and len(cell) > 1 and (cell[1] in FORMULA_START or cell[1] == "'"):
        return cell[1:]
    return cell


def read_spreadsheet_csv(f: TextIO) -> Iterator[dict]:
    """csv.DictReader over a CSV we wrote, every cell back to the text it stands for."""
    for row in csv.DictReader(f):
        yield {k: from_spreadsheet_cell(v) if isinstance(v, str) else v
               for k, v in row.items()}
