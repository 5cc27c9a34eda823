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
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

from components import lake, storage
from components.behaviour import PAD_TYPE, Behaviour, sequence_order, type_codes
from components.config import MIN_EVENTS_FOR_TARGETS
from components.lake import RawLayer, ValidatedLayer

SUITES_DIR = Path(__file__).resolve().parent.parent / "expectations"
MIN_TS = pd.Timestamp("1990-01-01", tz="UTC")
MAX_EXAMPLES = 5
OUTSIDE_CATALOGUE = "item_id_outside_catalogue"  # derived for the suite: the item id where the catalogue lacks it
BATCH_ROWS_ENV = "INTERESTFLOW_VALIDATION_BATCH_ROWS"
BATCH_ROWS = 1_000_000
"""Events per Great Expectations batch (whole partitions, $INTERESTFLOW_VALIDATION_BATCH_ROWS): a
run costs about 0.1 s whatever its size, so one a day would take minutes over a long history."""
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
    at_rows: list = field(default_factory=list)
    """The data rows of the first unexpected values (GE's partial index list)."""
    partitions: list = field(default_factory=list)
    """The partitions of the layers (``day=2014-03-02``) those rows are in."""

    def message(self) -> str:
        where = f"column '{self.column}'" if self.column else "table"
        count = f"{self.unexpected_count} of {self.rows} rows" if self.unexpected_count is not None else ""
        seen = f"; observed {self.observed!r}" if self.observed is not None and not self.examples else ""
        ex = f"; examples: {self.examples}" if self.examples else ""
        return (
            f"[{self.severity}] {self.table} file {self.source}: {where}: rule {self.rule} "
            f"({self.guards}) failed{': ' + count if count else ''}{ex}{seen}{self.where_in_lake()}"
        )

    def where_in_lake(self) -> str:
        """Where the examples lie: "; in partition day=2014-03-02"."""
        if not self.partitions:
            return ""
        names = ", ".join(self.partitions[:MAX_EXAMPLES])
        more = f" and {len(self.partitions) - MAX_EXAMPLES} more" if len(self.partitions) > MAX_EXAMPLES else ""
        return f"; in partition{'s' if len(self.partitions) > 1 else ''} {names}{more}"


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
        column = (cfg.meta or {}).get("column") or cfg.kwargs.get("column")  # a derived column's contract column
        if cfg.type == "expect_column_values_to_be_in_type_list" and column in df.columns:
            examples = _not_numbers(df[column]) or examples
        if exc and not examples:
            examples = [exc.splitlines()[0][:200]]
        findings.append(
            Finding(
                table=name,
                source=source,
                severity=str(getattr(cfg, "severity", "critical")).split(".")[-1].lower(),
                rule=cfg.type,
                column=column or (",".join(cfg.kwargs.get("column_list", [])) or None),
                guards=(cfg.meta or {}).get("guards", ""),
                unexpected_count=r.result.get("unexpected_count"),
                rows=len(df),
                examples=examples,
                observed=_short(r.result.get("observed_value")),
                at_rows=[int(i) for i in rows if isinstance(i, int | np.integer)],
            )
        )
    return findings


def batches(partitions: dict[str, int], budget: int) -> list[list[str]]:
    """A layer's partitions (storage.partitions: name -> rows) in batches of whole partitions,
    in time order, of up to ``budget`` rows each (a larger partition is a batch of its own)."""
    out: list[list[str]] = []
    rows = 0
    for name, n in sorted(partitions.items()):
        if not out or (rows and rows + n > budget):
            out.append([])
            rows = 0
        out[-1].append(name)
        rows += n
    return out


def plan(raw: RawLayer) -> list[list[str]]:
    """The batches of 01_raw's partitions the events suite runs over (:func:`check_batch` each):
    $INTERESTFLOW_VALIDATION_BATCH_ROWS events a batch at most, whole partitions."""
    parts = storage.partitions(lake.file(raw.uri, lake.EVENTS))
    return batches(parts, int(os.environ.get(BATCH_ROWS_ENV, BATCH_ROWS)))


def pending(raw: RawLayer, root: str) -> list[list[str]] | None:
    """The batches of :func:`plan` still to check, or None when 02_validated for ``raw`` is
    complete (validate will reuse it)."""
    return None if lake.done(lake.validated_uri(root, raw), lake.EVENTS_LAYOUT) else plan(raw)


def check_batch(raw: RawLayer, names: list[str], now: datetime | None = None) -> list[Finding]:
    """The events suite on one batch of 01_raw's partitions (days or months), read from the
    lake on its own (the flow submits each batch as a task: on Dask, a worker reads them itself)."""
    uri = lake.file(raw.uri, lake.EVENTS)
    events = storage.read_partitioned(uri, names=names, data_rows=True)
    catalogue = storage.read_parquet(lake.file(raw.uri, "items.parquet"), columns=["item_id"])["item_id"]
    when = pd.Timestamp(now or datetime.now(UTC))
    return _check_events(events, catalogue, raw.events_source, when, storage.partitioned_by(uri))


def _check_events(events: pd.DataFrame, catalogue: pd.Series, source: str, now: pd.Timestamp, by: str) -> list[Finding]:
    """The events suite on ``events`` (indexed by data row) with the referential rule's derived
    column (added for the suite, then dropped); each finding names the partitions (``by`` day
    or month) of its example rows."""
    # Polars' hash set: pandas' isin on Arrow strings builds a Python list of the catalogue's
    # ids per call (x50: 58 s of the 84).
    ids = pl.from_pandas(events["item_id"].astype("string"))
    inside = ids.is_in(pl.from_pandas(catalogue.dropna().astype("string")).implode())
    events[OUTSIDE_CATALOGUE] = events["item_id"].where(~inside.fill_null(True).to_numpy())  # a null id: its own rule
    found = run_suite("events", events, source, {"now": now, "min_ts": MIN_TS})
    events.drop(columns=[OUTSIDE_CATALOGUE], inplace=True)
    for f in found:
        codes = storage.partition_codes(events.loc[f.at_rows, "ts"], by)
        f.partitions = sorted({storage.partition_name(c, by) for c in codes})
    return found


def merge(batches: list[list[Finding]], rows: int) -> list[Finding]:
    """The findings of every batch as one per failed rule: counts added, the first examples,
    every partition named; ``rows``: the events of all batches."""
    merged: dict[tuple, Finding] = {}
    for found in batches:
        for f in found:
            m = merged.setdefault((f.rule, f.column), replace(f, rows=rows, unexpected_count=None, examples=[]))
            if f.unexpected_count is not None:
                m.unexpected_count = (m.unexpected_count or 0) + f.unexpected_count
            m.examples = (m.examples + f.examples)[:MAX_EXAMPLES]
            m.at_rows = sorted({*m.at_rows, *f.at_rows})
            m.partitions = sorted({*m.partitions, *f.partitions})
    return list(merged.values())


def _not_numbers(values: pd.Series) -> list[str]:
    """The first values of a numeric column that are not numbers, with their data rows."""
    bad = (
        values.notna() & pd.to_numeric(values.where(~values.map(lambda v: isinstance(v, bool))), errors="coerce").isna()
    )
    return [f"data row {i}: {_short(v)!r}" for i, v in values[bad].head(MAX_EXAMPLES).items()]


def _ts_unit_check(events: pd.DataFrame, raw: RawLayer, now: pd.Timestamp) -> list[Finding]:
    """Numeric timestamps that the declared unit puts outside 1990 .. now, when another unit
    would put them inside: the message names that unit (epoch milliseconds read as seconds)."""
    from components.events import UNITS_PER_SECOND

    ts = events["ts"]
    outside = ts.isna() | (ts < MIN_TS) | (ts > now)
    if not raw.ts_unit or not outside.any():
        return []
    num = pd.to_numeric(events["ts_source"], errors="coerce")
    bad = num.notna() & outside
    if not bad.any():
        return []
    span = (MIN_TS.timestamp(), now.timestamp())
    in_range = {u: int((num[bad] / per_s).between(*span).sum()) for u, per_s in UNITS_PER_SECOND.items()}
    best = max(in_range, key=in_range.get)
    fits_all = int((num.dropna() / UNITS_PER_SECOND[best]).between(*span).sum())
    if best == raw.ts_unit or not in_range[best] or fits_all < 0.9 * num.notna().sum():
        return []  # no one unit fits the file (mixed units?): the suite's null and range rules report the rows
    examples = [f"data row {i}: ts_source={v!r}" for i, v in events.loc[bad, "ts_source"].head(MAX_EXAMPLES).items()]
    guards = (
        f"numeric timestamps read as ts_unit '{raw.ts_unit}' fall outside 1990..now; read as '{best}', "
        f"{in_range[best]} of these {int(bad.sum())} fit: set events.ts_unit: {best}"
    )
    return [
        Finding(
            "events",
            raw.events_source,
            "critical",
            "ts_in_declared_unit",
            "ts",
            guards,
            int(bad.sum()),
            len(events),
            examples,
        )
    ]


def _id_checks(raw: RawLayer, rows: dict[str, int]) -> list[Finding]:
    """What ingest found in the ids (components/events.py:clean_ids): null-like values
    (critical) and surrounding whitespace (stripped with a warning, or critical)."""
    out = []
    sources = {"events": raw.events_source, "items": raw.items_source}
    for where, found in sorted((raw.id_fixes or {}).items()):
        table, column = where.split(".")
        if "null_like" in found:
            examples = [f"data row {i}: {v!r}" for i, v in found["null_like"].items()]
            guards = "ids written as empty, whitespace or a null word ('null', 'None', 'NaN', '-') are missing ids"
            n = found["null_like_rows"]
            out.append(
                Finding(table, sources[table], "critical", "id_not_null_like", column, guards, n, rows[table], examples)
            )
        if "padded" in found:
            p = found["padded"]
            same = f", {p['merged']} of them the same as an id without it" if p["merged"] else ""
            if raw.id_whitespace == "strip":
                severity, guards = "warning", f"{p['ids']} ids with surrounding whitespace{same}: stripped"
            else:
                severity, guards = (
                    "critical",
                    f"{p['ids']} ids with surrounding whitespace{same} (ids.whitespace: reject)",
                )
            out.append(
                Finding(
                    table,
                    sources[table],
                    severity,
                    "id_without_surrounding_whitespace",
                    column,
                    guards,
                    p["rows"],
                    rows[table],
                    p["examples"],
                )
            )
    return out


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


@dataclass(frozen=True)
class _Users:
    """What the per-user checks below count from, by Polars (x50: pandas' groupby took 6 s of
    these counts): the events, and their users' sequences (components/behaviour.py:
    sequence_order: the user ids, the rows' positions, each user's offsets; a null id is the
    suite's to report)."""

    frame: pl.DataFrame
    ids: pl.Series
    order: pl.Series
    offsets: np.ndarray

    @classmethod
    def of(cls, events: pd.DataFrame) -> _Users:
        frame = pl.from_pandas(events[["user_id", "ts", "seq", "event_type"]].astype({"event_type": "string"}))
        return cls(frame, *sequence_order(frame.with_row_index("_row")))

    @cached_property
    def counts(self) -> pl.DataFrame:
        """``user_id``, ``len``: each user's events, in user id order."""
        return pl.DataFrame({"user_id": self.ids, "len": np.diff(self.offsets)})

    def per_hour(self) -> pl.DataFrame:
        """Events per user and clock hour (``user_id``, ``ts``: the hour, ``len``) in user id
        then hour order: the runs of one hour in each user's sequence, where times ascend
        (missing ones last, left out), in one pass (x50: a group-by on user id and hour took
        3.2 s)."""
        ts = self.frame["ts"][self.order]
        known = ts.is_not_null().to_numpy()
        hour = ts.filter(known).dt.truncate("1h")
        owner = np.repeat(np.arange(len(self.ids)), np.diff(self.offsets))[known]
        ns = hour.to_physical().to_numpy()
        first = np.flatnonzero(np.r_[True, (owner[1:] != owner[:-1]) | (ns[1:] != ns[:-1])][: len(ns)])
        return pl.DataFrame(
            {
                "user_id": self.ids.gather(owner[first]),
                "ts": hour.gather(first),
                "len": np.diff(np.r_[first, len(ns)]).astype(np.int64),
            }
        )


def _short_histories(users: _Users, source: str, behaviour: Behaviour) -> list[Finding]:
    """Warn about users without two target events (with one event type: fewer than
    MIN_EVENTS_FOR_TARGETS events): they have no validation or test target and only add to
    training. (Per-group counts have no GE expectation.) The leave-one-out rule itself runs
    over every user at once (Behaviour.target_positions)."""
    per_user = users.counts
    if per_user.is_empty():
        return []
    if behaviour.target:
        codes = users.frame.select(type_codes()).to_series()[users.order]
        _, test = behaviour.target_positions(
            codes.fill_null(PAD_TYPE).to_numpy(), users.offsets, MIN_EVENTS_FOR_TARGETS - 2
        )
        short = per_user["user_id"].filter(pl.Series(test < 0))
        rule = "user_target_events_at_least_2"
        guards = (
            f"users without two {'/'.join(behaviour.target)} events (the first after another event) have no "
            "held-out target; kept for training only"
        )
    else:
        short = per_user.filter(pl.col("len") < MIN_EVENTS_FOR_TARGETS)["user_id"]
        rule = f"user_event_count_at_least_{MIN_EVENTS_FOR_TARGETS}"
        guards = (
            f"users with fewer than {MIN_EVENTS_FOR_TARGETS} events have no held-out target; kept for training only"
        )
    if short.is_empty():
        return []
    examples = [_short(u) for u in short.head(MAX_EXAMPLES)]
    return [Finding("events", source, "warning", rule, "user_id", guards, len(short), per_user.height, examples)]


def _behaviour_checks(events: pd.DataFrame, users: _Users, raw: RawLayer) -> list[Finding]:
    """What shop logs need beside the suites: events outside the declared window, users with
    bot-like bursts (warnings), and no event of the target types at all (critical)."""
    if events.empty or events["ts"].isna().all():
        return []
    out, src = [], raw.events_source
    ts = events["ts"]
    if raw.window:
        start, end = (pd.Timestamp(raw.window[k]) if k in raw.window else None for k in ("start", "end"))
        outside = pd.Series(False, index=events.index)
        if start is not None:
            outside |= ts < start  # NaT compares False: unparseable times are the suite's to report
        if end is not None:
            outside |= ts >= end
        if outside.any():
            ex = events.loc[outside, ["user_id", "ts_source"]].head(MAX_EXAMPLES)
            out.append(
                Finding(
                    "events",
                    src,
                    "warning",
                    "ts_within_declared_window",
                    "ts",
                    f"events outside the spec's window {raw.window.get('start', '')} .. {raw.window.get('end', '')} "
                    "(late or replayed data, clock errors); kept",
                    int(outside.sum()),
                    len(events),
                    [f"user {u}: ts {t}" for u, t in ex.itertuples(index=False)],
                )
            )
    per_user = users.counts
    heavy = per_user.filter(pl.col("len") > raw.max_user_share * len(events))
    heavy = heavy.sort(["len", "user_id"], descending=[True, False])
    if heavy.height:
        out.append(
            Finding(
                "events",
                src,
                "warning",
                f"user_share_of_events_at_most_{raw.max_user_share:g}",
                "user_id",
                "a user holding an implausible share of all events (a bot, a test account, a crawler); kept",
                heavy.height,
                per_user.height,
                [
                    f"user {u}: {n / len(events):.1%} of {len(events)} events"
                    for u, n in heavy.head(MAX_EXAMPLES).rows()
                ],
            )
        )
    burst = users.per_hour().filter(pl.col("len") > raw.max_user_events_per_hour)  # by user id, then hour
    if burst.height:
        out.append(
            Finding(
                "events",
                src,
                "warning",
                f"user_events_per_hour_at_most_{raw.max_user_events_per_hour}",
                "user_id",
                "a user with an implausible burst of events (a bot or a replayed session); kept",
                burst["user_id"].n_unique(),
                per_user.height,
                [
                    f"user {u}: {n} events in the hour from {pd.Timestamp(h)}"
                    for u, h, n in burst.head(MAX_EXAMPLES).rows()
                ],
            )
        )
    b = raw.behaviour
    if b.target:
        n_target = int(events["event_type"].astype(str).isin(b.target).sum())
        if n_target == 0:
            counts = events["event_type"].astype(str).value_counts().head(MAX_EXAMPLES)
            out.append(
                Finding(
                    "events",
                    src,
                    "critical",
                    "target_behaviour_share_above_0",
                    "event_type",
                    f"the spec predicts {'/'.join(b.target)} events but the log has none (nothing to predict)",
                    0,
                    len(events),
                    [f"{t}: {n}" for t, n in counts.items()],
                )
            )
    return out


def validate(
    raw: RawLayer, root: str, now: datetime | None = None, checked: list[list[Finding]] | None = None
) -> ValidatedLayer:
    """Validate the 01_raw layer ``raw``; write 02_validated (reused when complete).

    ``checked``: the findings of :func:`check_batch` for every batch of :func:`plan`, where the
    caller ran them (the flow, as tasks); None: run here, on the events read once.
    Raises DataValidationError on a critical failure after writing ``quarantine/<key>/``
    (the batch and the report).
    """
    uri = lake.validated_uri(root, raw)

    def compute(uri: str) -> dict:
        return _validate(raw, root, uri, pd.Timestamp(now or datetime.now(UTC)), checked)

    lake.build(uri, compute, layout=lake.EVENTS_LAYOUT)
    warnings = tuple(storage.read_json(lake.file(uri, "warnings.json")))
    return ValidatedLayer(uri=uri, raw=raw, warnings=warnings)


def _validate(raw: RawLayer, root: str, uri: str, now: pd.Timestamp, checked: list | None) -> dict:
    events = storage.read_partitioned(lake.file(raw.uri, lake.EVENTS))
    items = storage.read_parquet(lake.file(raw.uri, "items.parquet"))
    findings = run_suite("items", items, raw.items_source)
    n_suite = {"items": len(findings)}
    by = storage.partitioned_by(lake.file(raw.uri, lake.EVENTS))
    if checked is None:  # each batch's partitions out of the frame in memory: what check_batch reads
        codes = storage.partition_codes(events["ts"], by)
        code_of = {storage.partition_name(c, by): c for c in np.unique(codes)}
        checked = []
        for names in plan(raw):
            rows = np.isin(codes, [code_of[n] for n in names if n in code_of])  # integers: fast
            batch = events if rows.all() else events[rows]
            checked.append(_check_events(batch, items["item_id"], raw.events_source, now, by))
    findings += merge(checked, len(events))
    n_suite["events"] = len(findings) - n_suite["items"]
    suites = {
        name: {"expectations": len(load_suite(name).expectations), "failed": n_suite[name]}
        for name in ("items", "events")
    }
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
    findings += _id_checks(raw, {"events": len(events), "items": len(items)})
    findings += _ts_unit_check(events, raw, now)
    users = _Users.of(events)
    findings += _short_histories(users, raw.events_source, raw.behaviour)
    findings += _behaviour_checks(events, users, raw)
    sources = {"events": raw.events_source, "items": raw.items_source}
    for table, columns in (raw.ignored_columns or {}).items():
        if columns:  # a file's columns that the spec does not map: harmless, but say so
            guards = "columns the dataset spec does not map are dropped at ingest (never written to the lake)"
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
    parts = storage.write_partitioned(events, lake.file(uri, lake.EVENTS), by)
    storage.write_parquet(items, lake.file(uri, "items.parquet"))
    storage.write_json(warnings, lake.file(uri, "warnings.json"))
    return {
        "n_events": len(events),
        "n_items": len(items),
        "partitions": len(parts),
        "validated_at": str(now),
        "suites": suites,
        "other_checks_failed": len(findings) - sum(n_suite.values()),
    }
