"""The figures the fault suite prints: faults tried and survived, bad inputs tried and handled.

Each test records its counts; the session's summary prints them as the table that
docs/reliability.md shows (pytest -s shows it, and it is written to VISIONLOOP_FAULT_REPORT
when that is set).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

ROWS: list[dict] = []


def record(kind: str, what: str, tried: int, survived: int) -> None:
    """`kind`: faults (kills, damage, full disks, down servers) or inputs (bad input files)."""
    ROWS.append({"kind": kind, "what": what, "tried": tried, "survived": survived})


def table() -> list[str]:
    lines = ["| kind | fault | tried | survived / handled |", "|---|---|---|---|"]
    lines += [f"| {r['kind']} | {r['what']} | {r['tried']} | {r['survived']} |" for r in ROWS]
    return lines


def write_if_asked() -> None:
    target = os.environ.get("VISIONLOOP_FAULT_REPORT")
    if target and ROWS:
        Path(target).write_text(json.dumps(ROWS, indent=2) + "\n")
