"""The `validate` stage: a Great Expectations suite over the manifest and its class counts.

Two tables are checked: the manifest (one row per stored image, plus two computed
columns: `file_present`, its member is where the row says in its drop's shard, and
`label_conflict`) and the class table (one row per class of the class map: `count`,
`imbalance` = largest class / this class). Each expectation has a
name (data.validation.blocking lists the ones that stop the pipeline; the rest warn).
Results go to `<report_dir>/results.json`, a small `summary.json` (DVC metrics), this
run's page of the report history (visionloop.artifacts.validation_report: one
self-contained HTML page per run and an index, readable offline) and GX Data Docs HTML
under `<report_dir>/data_docs/` (kept for GX users; its pages fetch CSS/JS from the
internet, so offline they are unstyled and its index is blank).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

from visionloop.artifacts import raw_store as store
from visionloop.artifacts import validation_report
from visionloop.atomic import write_json_atomic
from visionloop.config import Config, ExpectationName
from visionloop.errors import VisionloopError

log = logging.getLogger(__name__)
EXPECTATION_NAMES: tuple[str, ...] = get_args(ExpectationName)
RESULTS_FILE = "results.json"
SUMMARY_FILE = "summary.json"  # a DVC metric, and what the reports show
SHA256_PATTERN = r"^[0-9a-f]{64}$"


class ValidationFailed(VisionloopError):
    """A blocking expectation failed; the message lists them and where the report is."""

    exit_code = 4


@dataclass(frozen=True)
class Check:
    """One named expectation's outcome."""

    name: str
    table: str
    blocking: bool
    success: bool
    unexpected_count: int
    sample: list[Any]
    observed: Any

    def describe(self) -> str:
        if self.unexpected_count:
            shown = ", ".join(str(v)[:20] for v in self.sample[:3])
            return f"{self.name} ({self.unexpected_count} rows, e.g. {shown})"
        if self.observed is not None:
            return f"{self.name} (observed {self.observed})"
        return self.name


def run(config: Config) -> dict[str, Any]:
    """Run the suite, write results JSON and the reports; ValidationFailed on a blocking miss."""
    raw_dir, rules = config.data.raw_dir, config.data.validation
    if not (raw_dir / store.MANIFEST).is_file():
        raise ValidationFailed(
            f"nothing to validate: no {raw_dir / store.MANIFEST}; "
            f"take drops in first with `visionloop data ingest`"
        )
    manifest, classes = manifest_frames(raw_dir)
    report_dir = rules.report_dir
    report_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    checks, raw_results = _run_suites(config, manifest, classes, report_dir)
    failed = [c for c in checks if c.blocking and not c.success]
    warnings = [c for c in checks if not c.blocking and not c.success]
    summary = {
        "success": not failed,
        "images": len(manifest),
        "classes": len(classes),
        "expectations": len(checks),
        "failed_blocking": [c.name for c in failed],
        "warnings": [c.name for c in warnings],
    }
    results = {**summary, "checks": [c.__dict__ for c in checks]}
    page = validation_report.write_run(
        report_dir, results, _class_rows(classes), data_digest(raw_dir), started
    )
    summary |= {"report": str(page), "history": str(validation_report.index_path(report_dir))}
    write_json_atomic(
        report_dir / RESULTS_FILE,
        {**results, **summary, "great_expectations": raw_results},
    )
    write_json_atomic(
        report_dir / SUMMARY_FILE,
        {k: summary[k] for k in ("success", "images", "classes", "expectations")}
        | {"failed_blocking": len(failed), "warnings": len(warnings)},
    )
    for check in warnings:
        log.warning("validation warning: %s", check.describe())
    log.info(
        "validation: %d expectations on %d images, %d blocking failures, %d warnings; report %s",
        len(checks),
        summary["images"],
        len(failed),
        len(warnings),
        summary["report"],
    )
    if failed:
        raise ValidationFailed(
            "validation failed (blocking): "
            + "; ".join(c.describe() for c in failed)
            + f"; see {summary['report']} (or results.json), fix the data and ingest again"
        )
    return summary


def read_summary(report_dir: Path) -> dict[str, Any] | None:
    path = report_dir / SUMMARY_FILE
    return json.loads(path.read_text()) if path.exists() else None


def data_digest(raw_dir: Path) -> str:
    """The first 8 hex digits of the sha256 of the manifest and class map: names the data."""
    digest = hashlib.sha256()
    for name in (store.MANIFEST, store.CLASSES):
        with (raw_dir / name).open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:8]


def manifest_frames(raw_dir: Path):
    """The manifest with computed columns, and the per-class table, as pandas DataFrames."""
    import pandas as pd

    rows = store.read_manifest(raw_dir)
    _, class_names = store.read_classes(raw_dir)
    _, ledger = store.read_ledger(raw_dir)
    labels_per_sha: dict[str, set[str]] = {}
    for row in rows:
        labels_per_sha.setdefault(row["sha256"], set()).add(row["label"])
    manifest = pd.DataFrame(rows, columns=list(store.MANIFEST_COLUMNS))
    for column in ("width", "height"):
        manifest[column] = pd.to_numeric(manifest[column], errors="coerce")
    manifest["file_present"] = store.rows_present(raw_dir, rows)
    manifest["label_conflict"] = [
        r["sha256"] in ledger or len(labels_per_sha[r["sha256"]]) > 1 for r in rows
    ]
    counts = Counter(row["label"] for row in rows)
    largest = max((counts[c] for c in class_names), default=0)
    classes = pd.DataFrame(
        {
            "label": class_names,
            "count": [counts[c] for c in class_names],
            "imbalance": [largest / max(counts[c], 1) for c in class_names],
        }
    )
    return manifest, classes


def _class_rows(classes) -> list[dict[str, Any]]:
    return [
        {"label": str(label), "count": int(count), "imbalance": float(imbalance)}
        for label, count, imbalance in zip(
            classes["label"], classes["count"], classes["imbalance"], strict=True
        )
    ]


def _expectations(config: Config, classes: list[str]) -> dict[str, list[tuple[str, Any]]]:
    """Per table, (name, GX expectation) pairs."""
    import great_expectations as gx

    e = gx.expectations
    rules, ingest = config.data.validation, config.data.ingest
    columns = list(store.MANIFEST_COLUMNS)
    return {
        "manifest": [
            ("columns", e.ExpectTableColumnsToMatchSet(column_set=columns, exact_match=False)),
            ("not_empty", e.ExpectTableRowCountToBeBetween(min_value=1)),
            (
                "sha256_format",
                e.ExpectColumnValuesToMatchRegex(column="sha256", regex=SHA256_PATTERN),
            ),
            ("sha256_unique", e.ExpectColumnValuesToBeUnique(column="sha256")),
            (
                "labels_in_class_map",
                e.ExpectColumnValuesToBeInSet(column="label", value_set=classes),
            ),
            (
                "no_label_conflicts",
                e.ExpectColumnValuesToBeInSet(column="label_conflict", value_set=[False]),
            ),
            (
                "files_present",
                e.ExpectColumnValuesToBeInSet(column="file_present", value_set=[True]),
            ),
            (
                "width_in_bounds",
                e.ExpectColumnValuesToBeBetween(
                    column="width", min_value=ingest.min_side, max_value=ingest.max_side
                ),
            ),
            (
                "height_in_bounds",
                e.ExpectColumnValuesToBeBetween(
                    column="height", min_value=ingest.min_side, max_value=ingest.max_side
                ),
            ),
            (
                "allowed_modes",
                e.ExpectColumnValuesToBeInSet(column="mode", value_set=list(rules.allowed_modes)),
            ),
        ],
        "classes": [
            (
                "min_per_class",
                e.ExpectColumnValuesToBeBetween(column="count", min_value=rules.min_per_class),
            ),
            (
                "max_imbalance",
                e.ExpectColumnValuesToBeBetween(column="imbalance", max_value=rules.max_imbalance),
            ),
        ],
    }


def _run_suites(config: Config, manifest, classes, report_dir: Path):
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # GX logs each temporary folder it makes at INFO: noise in the flow-run log
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    docs_tmp = report_dir / ".data_docs.tmp"
    shutil.rmtree(docs_tmp, ignore_errors=True)
    context.add_data_docs_site(
        site_name="visionloop",
        site_config={
            "class_name": "SiteBuilder",
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs_tmp),
            },
        },
    )
    source = context.data_sources.add_pandas("visionloop")
    frames = {"manifest": manifest, "classes": classes}
    blocking = set(config.data.validation.blocking)
    checks, raw = [], {}
    for table, pairs in _expectations(config, list(classes["label"])).items():
        suite = context.suites.add(gx.ExpectationSuite(name=f"visionloop_{table}"))
        for name, expectation in pairs:
            expectation.meta = {"name": name, "blocking": name in blocking}
            suite.add_expectation(expectation)
        batch = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe("all")
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"visionloop_{table}", data=batch, suite=suite)
        )
        result = definition.run(
            batch_parameters={"dataframe": frames[table]}, result_format="SUMMARY"
        ).to_json_dict()
        raw[table] = result
        checks.extend(_checks(table, result, blocking))
    context.build_data_docs(site_names=["visionloop"])
    _replace_folder(docs_tmp, report_dir / "data_docs")
    return checks, raw


def _checks(table: str, result: dict[str, Any], blocking: set[str]) -> list[Check]:
    checks = []
    for item in result["results"]:
        name = item["expectation_config"]["meta"]["name"]
        details = item.get("result") or {}
        checks.append(
            Check(
                name=name,
                table=table,
                blocking=name in blocking,
                success=bool(item["success"]),
                unexpected_count=int(details.get("unexpected_count") or 0),
                sample=list(details.get("partial_unexpected_list") or [])[:10],
                observed=details.get("observed_value"),
            )
        )
    return sorted(checks, key=lambda c: EXPECTATION_NAMES.index(c.name))


def _replace_folder(new: Path, target: Path) -> None:
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)
