"""Validation: run the expectation suites in expectations/ (Great Expectations 1.x).

A critical failure raises :class:`DataValidationError` before anything downstream runs,
after writing the rejected batch and a readable report to ``quarantine/``; warnings are
reported and the run goes on. Passing data is written to ``02_validated/<key>``, a new
folder per input hash, so a failed run never touches an earlier validated layer.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from components import lake, storage
from components.config import MIN_EVENTS_FOR_TARGETS
from components.lake import RawLayer, ValidatedLayer

SUITES_DIR = Path(__file__).resolve().parent.parent / "expectations"
MIN_TS = pd.Timestamp("1990-01-01", tz="UTC")
MAX_EXAMPLES = 5
log = logging.getLogger(__name__)


class DataValidationError(ValueError):
    """Critical expectations failed; the message names file, column, rule and examples."""


@dataclass
class Finding:
    table: str
    source: str
    severity: str
    rule: str
    column: str | None
    guards: str
    unexpected_count: int | None
    rows: int
    examples: list
    observed: object = None

    def message(self) -> str:
        where = f"column '{self.column}'" if self.column else "table"
        count = f"{self.unexpected_count} of {self.rows} rows" if self.unexpected_count is not None else ""
        seen = f"; observed {self.observed!r}" if self.observed is not None and not self.examples else ""
        ex = f"; examples: {self.examples}" if self.examples else ""
        return (
            f"[{self.severity}] {self.table} file {self.source}: {where}: rule {self.rule} "
            f"({self.guards}) failed{': ' + count if count else ''}{ex}{seen}"
        )


def load_suite(name: str):
    import great_expectations as gx

    return gx.ExpectationSuite(**json.loads((SUITES_DIR / f"{name}.json").read_text()))


def _short(v: object) -> object:
    if isinstance(v, str) and len(v) > 60:
        return v[:57] + "..."
    if isinstance(v, (pd.Timestamp, datetime)):
        return str(v)
    return v


def run_suite(name: str, df: pd.DataFrame, source: str, parameters: dict | None = None) -> list[Finding]:
    """Validate ``df`` against suite ``name``; returns one Finding per failed expectation."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = {"globally": False}
    batch = ctx.data_sources.add_pandas("src").add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
    suite = ctx.suites.add(load_suite(name))
    vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
    result = vd.run(
        batch_parameters={"dataframe": df}, expectation_parameters=parameters or {}, result_format="SUMMARY"
    )
    findings = []
    for r in result.results:
        if r.success:
            continue
        cfg = r.expectation_config
        exc = (r.exception_info or {}).get("exception_message")
        raw_examples = (r.result.get("partial_unexpected_list") or [])[:MAX_EXAMPLES]
        examples = [_short(v) for v in raw_examples]
        rows = (r.result.get("partial_unexpected_index_list") or [])[:MAX_EXAMPLES]
        if rows and all(pd.isna(v) for v in raw_examples if not isinstance(v, dict | list)):
            # A null says little: show the rows it sits in, as the source wrote them.
            cols = [c for c in ("user_id", "item_id", "ts_source", "title") if c in df.columns]
            examples = [f"data row {i}: " + ", ".join(f"{c}={_short(df.at[i, c])!r}" for c in cols) for i in rows]
        if exc and not examples:
            examples = [exc.splitlines()[0][:200]]
        findings.append(
            Finding(
                table=name,
                source=source,
                severity=str(getattr(cfg, "severity", "critical")).split(".")[-1].lower(),
                rule=cfg.type,
                column=cfg.kwargs.get("column") or (",".join(cfg.kwargs.get("column_list", [])) or None),
                guards=(cfg.meta or {}).get("guards", ""),
                unexpected_count=r.result.get("unexpected_count"),
                rows=len(df),
                examples=examples,
                observed=_short(r.result.get("observed_value")),
            )
        )
    return findings


def _report_md(findings: list[Finding], data_hash: str) -> str:
    lines = [
        f"# Validation report ({data_hash})",
        "",
        "| severity | table | file | column | rule | guards against | unexpected | examples |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f in findings:
        lines.append(
            f"| {f.severity} | {f.table} | {f.source} | {f.column or ''} | {f.rule} | {f.guards} | "
            f"{f.unexpected_count if f.unexpected_count is not None else ''} | "
            f"{', '.join(map(str, f.examples)) or f.observed} |"
        )
    return "\n".join(lines) + "\n"


def _short_histories(events: pd.DataFrame, source: str) -> list[Finding]:
    """Warn about users with fewer than MIN_EVENTS_FOR_TARGETS events: they have no
    validation or test target and only add to training. (Per-group counts have no GE
    expectation.)"""
    if events.empty or "user_id" not in events:
        return []
    per_user = events.groupby("user_id").size()
    short = per_user[per_user < MIN_EVENTS_FOR_TARGETS]
    if short.empty:
        return []
    guards = f"users with fewer than {MIN_EVENTS_FOR_TARGETS} events have no held-out target; kept for training only"
    examples = [_short(u) for u in short.index[:MAX_EXAMPLES]]
    return [
        Finding(
            "events",
            source,
            "warning",
            f"user_event_count_at_least_{MIN_EVENTS_FOR_TARGETS}",
            "user_id",
            guards,
            len(short),
            len(per_user),
            examples,
        )
    ]


def validate(raw: RawLayer, root: str, now: datetime | None = None) -> ValidatedLayer:
    """Validate the 01_raw layer ``raw``; write 02_validated (reused when complete).

    Raises DataValidationError on a critical failure after writing ``quarantine/<key>/``
    (the batch and the report).
    """
    uri = lake.validated_uri(root, raw)

    def compute(uri: str) -> dict:
        return _validate(raw, root, uri, pd.Timestamp(now or datetime.now(UTC)))

    lake.build(uri, compute)
    warnings = tuple(storage.read_json(lake.file(uri, "warnings.json")))
    return ValidatedLayer(uri=uri, raw=raw, warnings=warnings)


def _validate(raw: RawLayer, root: str, uri: str, now: pd.Timestamp) -> dict:
    events = storage.read_parquet(lake.file(raw.uri, "events.parquet"))
    items = storage.read_parquet(lake.file(raw.uri, "items.parquet"))
    findings = run_suite("items", items, raw.items_source)
    findings += run_suite(
        "events",
        events,
        raw.events_source,
        {
            "now": now,
            "min_ts": MIN_TS,
            "catalogue_item_ids": sorted(items["item_id"].dropna().astype(str).unique()),
        },
    )
    if events.empty:
        findings.append(
            Finding(
                "events",
                raw.events_source,
                "critical",
                "expect_table_row_count_to_be_above_0",
                None,
                "an empty log (nothing to learn from)",
                None,
                0,
                [],
            )
        )
    findings += _short_histories(events, raw.events_source)
    sources = {"events": raw.events_source, "items": raw.items_source}
    for table, columns in (raw.ignored_columns or {}).items():
        if columns:  # a file's columns that the spec does not map: harmless, but say so
            guards = "columns the dataset spec does not map are not used"
            findings.append(
                Finding(
                    table, sources[table], "warning", "column_mapped_by_spec", ", ".join(columns), guards, None, 0, []
                )
            )
    critical = [f for f in findings if f.severity == "critical"]
    warnings = [f.message() for f in findings if f.severity != "critical"]
    for w in warnings:
        log.warning(w)
    if critical:
        q = lake.quarantine_uri(root, lake.key(raw.uri))
        storage.write_parquet(events, lake.file(q, "events.parquet"))
        storage.write_parquet(items, lake.file(q, "items.parquet"))
        storage.write_json([f.__dict__ for f in findings], lake.file(q, "report.json"))
        storage.write_bytes(lake.file(q, "report.md"), _report_md(findings, lake.key(raw.uri)).encode())
        raise DataValidationError(
            f"{len(critical)} critical expectation(s) failed; nothing was trained or promoted. "
            f"Rejected batch and report: {q}/report.md\n" + "\n".join(f.message() for f in critical)
        )
    events = events.drop(columns=["ts_source"])
    events["value"] = events["value"].astype("float64")
    items["price"] = items["price"].astype("float64")
    storage.write_parquet(events, lake.file(uri, "events.parquet"))
    storage.write_parquet(items, lake.file(uri, "items.parquet"))
    storage.write_json(warnings, lake.file(uri, "warnings.json"))
    return {"n_events": len(events), "n_items": len(items), "validated_at": str(now)}
