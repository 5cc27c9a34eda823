"""Data tests: good data passes, and every entry of the one bad-input catalogue
(testkit/faults.py, whose flow matrix tests/test_reliability.py also runs through the
nightly flow) is rejected with a message that names the file, the column, the rule and
example values, or warned about while the run goes on."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from conftest import write_slice

from components import events, storage, validation
from components.lake import is_complete
from components.validation import DataValidationError
from testkit.faults import BAD_INPUTS


def run(tmp_path, ev, items):
    spec = write_slice(tmp_path / "src", ev, items)
    lake = str(tmp_path / "lake")
    return validation.validate(events.ingest(spec, lake), lake), lake


def test_good_slice_passes(tmp_path, small_slice):
    out, lake = run(tmp_path, *small_slice)
    assert is_complete(out.uri)
    assert len(storage.read_partitioned(storage.join(out.uri, "events"))) == len(small_slice[0])


def _in_order(bad) -> re.Pattern:
    """File, column, rule and example (those the entry has), in that order on one line."""
    return re.compile(".*".join(map(re.escape, bad.names)))


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_rejected_or_warned_with_a_clear_message(tmp_path, small_slice, case):
    """A rejection whose rule is an expectation (``expect_*``) comes from validate: a
    DataValidationError after the batch and a report went to quarantine/. Any other comes
    from ingest: a SpecError after a report went to quarantine/. Either way nothing is
    validated. A warning leaves a complete validated layer and no quarantine."""
    bad = BAD_INPUTS[case]
    src, lake = tmp_path / "src", tmp_path / "lake"
    spec = bad.make(src, small_slice[0].copy(), small_slice[1].copy())
    if bad.outcome != "reject":
        out = validation.validate(events.ingest(spec, str(lake)), str(lake))
        assert bool(out.warnings) == (bad.outcome == "warn"), out.warnings
        if bad.outcome == "warn":  # one warning names it all, and the file where it lies
            assert [w for w in out.warnings if w.startswith("[warning]") and _in_order(bad).search(w)], out.warnings
            assert any(str(src / bad.file) in w for w in out.warnings), out.warnings
        elif bad.corrupts != "spec":  # handled without a word: the data is good as it is
            n = len(small_slice[0] if bad.corrupts == "events" else small_slice[1])
            layer = storage.join(out.uri, bad.corrupts)  # the events by day; the items one file
            rows = (
                storage.read_partitioned(layer)
                if bad.corrupts == "events"
                else storage.read_parquet(layer + ".parquet")
            )
            assert len(rows) == n
        assert is_complete(out.uri)
        assert not (lake / "quarantine").exists()
        return

    expectation = bad.stage == "validate"
    with pytest.raises(DataValidationError if expectation else events.SpecError) as err:
        validation.validate(events.ingest(spec, str(lake)), str(lake))
    msg = str(err.value)
    assert not [p for p in bad.names if p not in msg], f"{[p for p in bad.names if p not in msg]} not in:\n{msg}"
    assert _in_order(bad).search(msg), msg
    assert (bad.file if "://" in bad.file else str(src / bad.file)) in msg  # names the file where it lies
    (q,) = (lake / "quarantine").iterdir()
    report = (q / "report.md").read_text()
    if expectation:
        assert (q / "events.parquet").exists() and bad.rule in report
    else:  # the message names the report, which says it all
        assert msg.endswith(f"Report: {q / 'report.md'}") and msg.rsplit("\nReport: ", 1)[0] in report
    assert not (lake / "02_validated").exists()


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


def test_a_bad_row_in_one_day_partition_is_named_by_its_day_across_batches(tmp_path, small_slice, monkeypatch):
    """The layers keep events by day and validation runs the suite over batches of whole days
    (here 200 rows a batch: several batches). Two null user ids on two days in different
    batches: one finding, both counted, both rows shown, each day named; nothing validated.
    The batches as the flow runs them (validation.check_batch each, reading its own partitions from
    the lake) find exactly what validate finds on the frame it holds."""
    ev, items = small_slice
    ev = ev.copy()
    day = pd.to_datetime(ev["timestamp"], unit="s", utc=True).dt.strftime("%Y-%m-%d")
    first, last = ev["timestamp"].idxmin(), ev["timestamp"].idxmax()  # the first and last days: two batches apart
    ev["user_id"] = ev["user_id"].astype(object)
    ev.loc[[first, last], "user_id"] = ""
    monkeypatch.setenv(validation.BATCH_ROWS_ENV, "200")
    spec, lake = write_slice(tmp_path / "src", ev, items), str(tmp_path / "lake")
    spec.write_text(spec.read_text().replace("partition: month", "partition: day"))  # the slices' history: by month
    raw = events.ingest(spec, lake)
    batches = validation.plan(raw)
    assert len(batches) >= 5 and sum(map(len, batches)) == len(set(day))
    with pytest.raises(DataValidationError) as err:
        validation.validate(raw, lake)
    lines = [m for m in str(err.value).splitlines() if "expect_column_values_to_not_be_null" in m]
    assert len(lines) == 1, str(err.value)
    assert "column 'user_id'" in lines[0] and f"2 of {len(ev)} rows" in lines[0]
    assert f"data row {first}" in lines[0] and f"data row {last}" in lines[0]
    assert f"in partitions day={day[first]}, day={day[last]}" in lines[0]
    assert len(storage.partitions(f"{raw.uri}/events")) == len(set(day))
    assert not list((tmp_path / "lake").glob("02_validated/*"))

    checked = [validation.check_batch(raw, names) for names in batches]
    assert sum(bool(found) for found in checked) == 2  # the first batch and the last
    with pytest.raises(DataValidationError) as again:
        validation.validate(raw, lake, checked=checked)
    assert str(again.value).replace(str(tmp_path), "") == str(err.value).replace(str(tmp_path), "")


def test_validation_batches_are_whole_partitions_within_the_row_budget():
    days = {"day=2014-01-05": 3, "day=2014-01-01": 3, "day=2014-01-03": 1, "day=2014-01-02": 1, "day=2014-01-09": 1}
    assert validation.batches(days, 4) == [  # filled in time order
        ["day=2014-01-01", "day=2014-01-02"],
        ["day=2014-01-03", "day=2014-01-05"],
        ["day=2014-01-09"],
    ]
    assert validation.batches(days, 10**6) == [sorted(days)]
    assert [len(b) for b in validation.batches(days, 1)] == [1] * 5  # a partition is never split
    assert validation.batches({}, 10) == []


def test_events_per_user_and_hour_are_a_group_by_s_counts():
    """The per-hour counts of the bot check, taken as runs along the users' sequences, equal
    a group-by on (user id, clock hour): users interleaved, missing ids and times, ties."""
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(0)
    n = 5_000
    ts = pd.to_datetime(1_600_000_000 + rng.integers(0, 86_400 * 3, n), unit="s", utc=True).astype(
        "datetime64[ns, UTC]"
    )
    events = pd.DataFrame(
        {
            "user_id": pd.array(rng.choice([*(f"u{k}" for k in range(60)), None], n), dtype="string"),
            "ts": pd.Series(ts).mask(rng.random(n) < 0.05),
            "seq": rng.integers(0, 3, n).astype("float64"),
            "event_type": "view",
        }
    )
    got = validation._Users.of(events).per_hour()
    frame = pl.from_pandas(events[["user_id", "ts"]]).drop_nulls()
    want = frame.group_by("user_id", pl.col("ts").dt.truncate("1h")).len().sort(["user_id", "ts"])
    assert got.height > 1_000 and got.equals(want.cast({"len": pl.Int64}))
