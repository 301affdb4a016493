"""The validation report: one self-contained HTML page per validate run, and an index.

Files in data.validation.report_dir (beside the stage's results.json and summary.json):

- runs/<UTC time>-<data>.html  one run's outcome: every expectation, the class counts
- runs/<UTC time>-<data>.json  the same run's summary, read back to build the index
- index.html                   every run, newest first: outcome, counts, warnings, a link

`<data>` is the first 8 hex digits of the sha256 of the manifest and class map, so runs on
the same data share it. The history is outside the stage's DVC outputs (DVC deletes those
before the stage runs) and is never pruned; delete old pages by hand. The pages work
offline: see visionloop.artifacts.html_page.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from visionloop.artifacts.html_page import (
    Html,
    badge,
    figure,
    join,
    link,
    number,
    table,
    tag,
    write_page,
)
from visionloop.atomic import write_json_atomic

log = logging.getLogger(__name__)
INDEX_FILE = "index.html"
RUNS_DIR = "runs"
CHECK_HEADERS = ("expectation", "table", "on failure", "outcome", "unexpected rows")
CHECK_HEADERS += ("observed", "sample of unexpected values")
SAMPLE_CHARS = 80  # a sample value longer than this is cut: the page must stay readable


def index_path(report_dir: Path) -> Path:
    return report_dir / INDEX_FILE


def write_run(
    report_dir: Path,
    results: dict[str, Any],
    classes: list[dict[str, Any]],
    data_digest: str,
    when: datetime,
) -> Path:
    """Write this run's page and record, then the index; return the page's path.

    `results` is what the stage writes to results.json (success, images, classes,
    expectations, failed_blocking, warnings, checks); `classes` rows have label, count and
    imbalance; `when` is timezone-aware.
    """
    when = when.astimezone(UTC)
    runs = report_dir / RUNS_DIR
    run_id = _new_run_id(runs, when, data_digest)
    record = {
        "run": run_id,
        "time": when.isoformat(timespec="seconds"),
        "data": data_digest,
        "page": f"{RUNS_DIR}/{run_id}.html",
        **{key: results[key] for key in ("success", "images", "classes", "expectations")},
        "failed_blocking": list(results["failed_blocking"]),
        "warnings": list(results["warnings"]),
    }
    page = write_page(
        runs / f"{run_id}.html", _title(record), run_page_body(record, results, classes)
    )
    write_json_atomic(runs / f"{run_id}.json", record)  # last: the index lists complete runs
    write_index(report_dir)
    return page


def read_runs(report_dir: Path) -> list[dict[str, Any]]:
    """Every run's record, newest first; an unreadable record is skipped with a warning."""
    records = []
    for path in sorted((report_dir / RUNS_DIR).glob("*.json")):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError) as error:
            log.warning("validation history: skipped %s (%s)", path, error)
    return sorted(records, key=lambda r: (r.get("time", ""), r.get("run", "")), reverse=True)


def write_index(report_dir: Path) -> Path:
    runs = read_runs(report_dir)
    return write_page(index_path(report_dir), "Validation runs", index_body(runs))


def index_body(runs: list[dict[str, Any]]) -> Html:
    rows = [
        [
            link(r["page"], _shown_time(r)),
            _outcome(r),
            number(r["images"]),
            number(r["classes"]),
            number(r["expectations"]),
            ", ".join(r["failed_blocking"]) or "none",
            ", ".join(r["warnings"]) or "none",
            tag("code", r["data"]),
        ]
        for r in runs
    ]
    headers = ["run", "outcome", "images", "classes", "expectations"]
    headers += ["blocking failures", "warnings", "data"]
    return join(
        [
            tag("h1", "Validation runs"),
            tag(
                "p",
                f"{len(runs)} runs of the validate stage, newest first. "
                "data: the first digits of the manifest's and class map's sha256.",
                class_="meta",
            ),
            table(headers, rows) if runs else tag("p", "No validate run yet."),
        ]
    )


def run_page_body(
    record: dict[str, Any], results: dict[str, Any], classes: list[dict[str, Any]]
) -> Html:
    checks = results["checks"]
    return join(
        [
            tag("h1", join(["Validation ", _outcome(record)])),
            tag(
                "p",
                join(
                    [
                        f"Run {_shown_time(record)} on data {record['data']}. ",
                        link("../index.html", "All validation runs"),
                    ]
                ),
                class_="meta",
            ),
            tag(
                "div",
                join(
                    [
                        figure("images", f"{record['images']:,}"),
                        figure("classes", f"{record['classes']:,}"),
                        figure("expectations", record["expectations"]),
                        figure("blocking failures", len(record["failed_blocking"])),
                        figure("warnings", len(record["warnings"])),
                    ]
                ),
                class_="headline",
            ),
            tag("h2", "Expectations"),
            table(
                CHECK_HEADERS,
                [_check_row(check) for check in checks],
            ),
            tag("h2", f"Classes ({len(classes)})"),
            table(
                ["class", "images", "imbalance (largest / this)"],
                [[c["label"], number(c["count"]), number(c["imbalance"], 2)] for c in classes],
            ),
        ]
    )


def _check_row(check: dict[str, Any]) -> list[Any]:
    if check["success"]:
        outcome = badge("passed", "passed")
    else:
        outcome = badge("failed", "failed") if check["blocking"] else badge("warning", "warning")
    sample = ", ".join(_cut(value) for value in check["sample"])
    observed = "" if check["observed"] is None else _cut(check["observed"])
    return [
        check["name"],
        check["table"],
        "stop" if check["blocking"] else "warn",
        outcome,
        number(check["unexpected_count"]),
        observed,
        sample,
    ]


def _outcome(record: dict[str, Any]) -> Html:
    if not record["success"]:
        return badge("failed", "failed")
    if record["warnings"]:
        count = len(record["warnings"])
        return badge(f"passed, {count} warning{'s' if count > 1 else ''}", "warning")
    return badge("passed", "passed")


def _title(record: dict[str, Any]) -> str:
    outcome = "passed" if record["success"] else "FAILED"
    return f"Validation {outcome}: {_shown_time(record)}"


def _shown_time(record: dict[str, Any]) -> str:
    return datetime.fromisoformat(record["time"]).strftime("%Y-%m-%d %H:%M:%S UTC")


def _cut(value: Any) -> str:
    text = str(value)
    return text if len(text) <= SAMPLE_CHARS else text[: SAMPLE_CHARS - 1] + "…"


def _new_run_id(runs: Path, when: datetime, data_digest: str) -> str:
    """<UTC time>-<data>, with -2, -3, ... when a run already took that name (same second)."""
    base = f"{when.strftime('%Y%m%dT%H%M%SZ')}-{data_digest}"
    run_id, n = base, 1
    while (runs / f"{run_id}.json").exists() or (runs / f"{run_id}.html").exists():
        n += 1
        run_id = f"{base}-{n}"
    return run_id
