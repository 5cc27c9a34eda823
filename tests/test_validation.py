"""Data tests: every critical expectation passes on good data and fails on a corrupted copy
with a message that names the file, the column, the rule and example values."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import write_slice

from components import events, storage, validation
from components.validation import DataValidationError


def run(tmp_path, ev, items):
    spec = write_slice(tmp_path / "src", ev, items)
    lake = str(tmp_path / "lake")
    return validation.validate(events.ingest(spec, lake), lake), lake


def test_good_slice_passes(tmp_path, small_slice):
    out, lake = run(tmp_path, *small_slice)
    assert storage.layer_done(out["uri"])
    assert len(storage.read_parquet(storage.join(out["uri"], "events.parquet"))) == len(small_slice[0])


def _null(col):
    def f(ev, it):
        ev.loc[3, col] = None
        return ev, it

    return f


def _set(col, value, rows=(3,)):
    def f(ev, it):
        ev[col] = ev[col].astype(object)
        for r in rows:
            ev.loc[r, col] = value
        return ev, it

    return f


def _duplicate(ev, it):
    return pd.concat([ev, ev.iloc[[5]]], ignore_index=True), it


def _orphan(ev, it):
    return ev, it[it["item_id"] != ev.loc[0, "item_id"]]


def _dup_item(ev, it):
    return ev, pd.concat([it, it.iloc[[0]]], ignore_index=True)


def _neg_price(ev, it):
    it = it.copy()
    it.loc[2, "price"] = -4.5
    return ev, it


def _text_price(ev, it):
    it = it.copy()
    it["price"] = it["price"].astype(object)
    it.loc[2, "price"] = "cheap"
    return ev, it


def _with_value(value):
    def f(ev, it):
        ev["value"] = 1.0
        ev["value"] = ev["value"].astype(object)
        ev.loc[4, "value"] = value
        return ev, it

    return f


# (corruption, column the message must name, rule, an example value in the message)
CASES = {
    "null user id": (_null("user_id"), "user_id", "expect_column_values_to_not_be_null", None),
    "null item id": (_null("item_id"), "item_id", "expect_column_values_to_not_be_null", None),
    "unparseable timestamp": (_set("timestamp", "yesterday"), "ts", "expect_column_values_to_not_be_null", "yesterday"),
    "future timestamp": (_set("timestamp", 4102444800), "ts", "expect_column_values_to_be_between", "2100-01-01"),
    "timestamp before 1990": (_set("timestamp", 315532800), "ts", "expect_column_values_to_be_between", "1980-01-01"),
    "duplicate events": (_duplicate, "user_id,item_id,ts,event_type,seq", "expect_compound_columns_to_be_unique", None),
    "item missing from catalogue": (_orphan, "item_id", "expect_column_values_to_be_in_set", None),
    "duplicate catalogue item": (_dup_item, "item_id", "expect_column_values_to_be_unique", None),
    "negative price": (_neg_price, "price", "expect_column_values_to_be_between", "-4.5"),
    "text in price (wrong dtype)": (_text_price, "price", "expect_column_values_to_be_in_type_list", None),
}


@pytest.mark.parametrize("case", CASES)
def test_critical_expectation_fails_with_a_clear_message(tmp_path, small_slice, case):
    corrupt, column, rule, example = CASES[case]
    ev, items = corrupt(small_slice[0].copy(), small_slice[1].copy())
    with pytest.raises(DataValidationError) as err:
        run(tmp_path, ev, items)
    msg = str(err.value)
    assert f"column '{column}'" in msg and rule in msg, msg
    assert str(tmp_path / "src") in msg  # names the file
    if example:
        assert example in msg
    q = list((tmp_path / "lake" / "quarantine").iterdir())
    assert len(q) == 1 and (q[0] / "report.md").exists() and (q[0] / "events.parquet").exists()
    assert rule in (q[0] / "report.md").read_text()
    assert not (tmp_path / "lake" / "02_validated").exists()


def test_unknown_event_type_is_rejected(tmp_path, small_slice):
    ev, items = small_slice
    ev = ev.assign(kind="review")
    ev.loc[7, "kind"] = "wishlist"
    spec = write_slice(tmp_path / "src", ev, items)
    spec.write_text(
        spec.read_text()
        .replace("  event_type: review\n", "")
        .replace("ts: timestamp}", "ts: timestamp, event_type: kind}")
    )
    lake = str(tmp_path / "lake")
    with pytest.raises(DataValidationError, match=r"column 'event_type'.*expect_column_values_to_be_in_set.*wishlist"):
        validation.validate(events.ingest(spec, lake), lake)


def test_text_in_value_column_is_a_wrong_dtype(tmp_path, small_slice):
    ev, items = _with_value("lots")(small_slice[0].copy(), small_slice[1])
    spec = write_slice(tmp_path / "src", ev, items)
    spec.write_text(spec.read_text().replace("ts: timestamp}", "ts: timestamp, value: value}"))
    lake = str(tmp_path / "lake")
    with pytest.raises(DataValidationError, match=r"column 'value'.*expect_column_values_to_be_in_type_list"):
        validation.validate(events.ingest(spec, lake), lake)


def test_missing_column_names_file_and_column(tmp_path, small_slice):
    ev, items = small_slice
    spec = write_slice(tmp_path / "src", ev.drop(columns=["timestamp"]), items)
    with pytest.raises(events.SpecError, match=r"events.csv.*'timestamp'"):
        events.ingest(spec, str(tmp_path / "lake"))


def test_warning_is_reported_and_the_run_goes_on(tmp_path, small_slice):
    ev, items = small_slice
    items = items.copy()
    items.loc[: len(items) // 5, "title"] = None  # 20% without a title: above the 5% warning threshold
    out, _ = run(tmp_path, ev, items)
    assert any("title" in w and "warning" in w for w in out["warnings"])
    assert storage.layer_done(out["uri"])


def test_a_failed_validation_leaves_the_previous_validated_layer_untouched(tmp_path, small_slice):
    ev, items = small_slice
    good, lake = run(tmp_path / "a", ev, items)
    before = {p: p.read_bytes() for p in (tmp_path / "a" / "lake" / "02_validated").rglob("*") if p.is_file()}
    bad = ev.copy()
    bad.loc[0, "user_id"] = None
    spec = write_slice(tmp_path / "b", bad, items)
    with pytest.raises(DataValidationError):
        validation.validate(events.ingest(spec, lake), lake)
    after = {p: p.read_bytes() for p in (tmp_path / "a" / "lake" / "02_validated").rglob("*") if p.is_file()}
    assert before == after


def test_suites_on_disk_match_their_builder():
    import json

    import great_expectations as gx

    from expectations.build_suites import SUITES

    gx.get_context(mode="ephemeral")
    for name, build in SUITES.items():
        on_disk = json.loads((validation.SUITES_DIR / f"{name}.json").read_text())
        assert on_disk == json.loads(json.dumps(build().to_json_dict())), "run python -m expectations.build_suites"
