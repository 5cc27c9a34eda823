"""Writes expectations/events.json and expectations/items.json: the data contract as GE suites.

The suites are data (JSON, loaded by components/validation.py); this script is how they
are made and changed, so that each expectation sits beside a comment of what it guards
against (kept in ``meta.guards`` and shown in every report). Run:
``python -m expectations.build_suites``. A test checks the JSON files match this script.

Severity: ``critical`` stops the run before training; ``warning`` is reported, the run
goes on. Parameters ``$PARAMETER`` are filled in at validation time: ``now`` (the run's
clock, for future timestamps) and ``min_ts``. A ``meta.column`` names the contract column an
expectation on a derived column is about (reports show it).
"""

from __future__ import annotations

import json
from pathlib import Path

import great_expectations as gx

from components.behaviour import EVENT_TYPES

E = gx.expectations
HERE = Path(__file__).parent
NUMERIC = ["float64", "Float64", "float32", "int64", "Int64", "int32"]


def _e(cls, severity: str, guards: str, about: str | None = None, **kwargs):
    """``about``: the contract column an expectation on a derived column is about."""
    meta = {"guards": guards} if about is None else {"guards": guards, "column": about}
    return cls(**kwargs, severity=severity, meta=meta)


def events_suite() -> gx.ExpectationSuite:
    s = gx.ExpectationSuite(name="events")
    for col in ("user_id", "item_id", "ts", "event_type"):
        s.add_expectation(
            _e(E.ExpectColumnToExist, "critical", f"a log without '{col}' cannot be modelled", column=col)
        )
    s.add_expectation(
        _e(E.ExpectColumnValuesToNotBeNull, "critical", "events that belong to nobody (null user id)", column="user_id")
    )
    s.add_expectation(
        _e(E.ExpectColumnValuesToNotBeNull, "critical", "events about no item (null item id)", column="item_id")
    )
    s.add_expectation(
        _e(
            E.ExpectColumnValuesToNotBeNull,
            "critical",
            "missing or unparseable timestamps (they cannot be ordered)",
            column="ts",
        )
    )
    s.add_expectation(
        _e(
            E.ExpectColumnValuesToBeBetween,
            "critical",
            "timestamps in the future or before 1990 (clock or unit errors)",
            column="ts",
            min_value={"$PARAMETER": "min_ts"},
            max_value={"$PARAMETER": "now"},
        )
    )
    s.add_expectation(
        _e(
            E.ExpectColumnValuesToBeInSet,
            "critical",
            "event types outside the contract (typos, new producers)",
            column="event_type",
            value_set=list(EVENT_TYPES),
        )
    )
    s.add_expectation(
        _e(
            E.ExpectColumnValuesToBeInTypeList,
            "critical",
            "a value column that is not numeric (wrong column mapped, text in it)",
            column="value",
            type_list=NUMERIC,
        )
    )
    s.add_expectation(
        _e(
            E.ExpectCompoundColumnsToBeUnique,
            "critical",
            "exact duplicate events: same user, item, time, type and value (a replayed or double-loaded "
            "batch), whatever the source order says",
            column_list=["user_id", "item_id", "ts", "event_type", "value"],
        )
    )
    # Referential integrity through a column validation derives (components/validation.py:
    # OUTSIDE_CATALOGUE, the item id where the catalogue lacks it, else null), not a value set
    # of every catalogue id: GE copies a value set per expectation and per run, about 0.15 ms
    # an id (1.8 s a run at Beauty's 12,101 items; minutes at 600,000).
    s.add_expectation(
        _e(
            E.ExpectColumnValuesToBeNull,
            "critical",
            "events about items missing from the catalogue (referential integrity)",
            about="item_id",
            column="item_id_outside_catalogue",
        )
    )
    return s


def items_suite() -> gx.ExpectationSuite:
    s = gx.ExpectationSuite(name="items")
    s.add_expectation(_e(E.ExpectColumnToExist, "critical", "a catalogue without item ids", column="item_id"))
    s.add_expectation(
        _e(E.ExpectColumnValuesToNotBeNull, "critical", "catalogue rows with no item id", column="item_id")
    )
    s.add_expectation(
        _e(
            E.ExpectColumnValuesToBeUnique,
            "critical",
            "one item id with two catalogue rows (which title, which price?)",
            column="item_id",
        )
    )
    s.add_expectation(
        _e(
            E.ExpectColumnValuesToBeInTypeList,
            "critical",
            "a price column that is not numeric",
            column="price",
            type_list=NUMERIC,
        )
    )
    s.add_expectation(_e(E.ExpectColumnValuesToBeBetween, "critical", "negative prices", column="price", min_value=0))
    s.add_expectation(
        _e(
            E.ExpectColumnValuesToNotBeNull,
            "warning",
            "items without a title (text features fall back to ids)",
            column="title",
            mostly=0.95,
        )
    )
    s.add_expectation(
        _e(
            E.ExpectColumnValuesToNotBeNull,
            "warning",
            "items without categories (no category profile)",
            column="categories",
            mostly=0.9,
        )
    )
    s.add_expectation(
        _e(
            E.ExpectColumnValueLengthsToBeBetween,
            "warning",
            "absurdly long titles (scraping accidents); they are truncated for text features",
            column="title",
            max_value=2000,
        )
    )
    return s


SUITES = {"events": events_suite, "items": items_suite}


def main() -> None:
    gx.get_context(mode="ephemeral")  # suites need an active context to be built
    for name, build in SUITES.items():
        (HERE / f"{name}.json").write_text(json.dumps(build().to_json_dict(), indent=2) + "\n")


if __name__ == "__main__":
    main()
