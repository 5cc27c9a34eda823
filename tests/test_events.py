"""Ingest: dataset specs map CSV and Parquet sources onto the data contract without code."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from components import events, storage


def test_parquet_source_with_text_timestamps_and_an_event_type_column(tmp_path):
    pd.DataFrame(
        {
            "customer": [1, 2],
            "sku": ["a", "b"],
            "when": ["2024-01-02 10:00:00", "2024-01-03 11:30:00"],
            "action": ["view", "purchase"],
            "paid": [0.0, 9.5],
        }
    ).to_parquet(tmp_path / "ev.parquet")
    pd.DataFrame({"sku": ["a", "b"], "name": ["A", "B"]}).to_parquet(tmp_path / "it.parquet")
    spec = tmp_path / "s.yaml"
    spec.write_text("""name: shop
events:
  uri: ev.parquet
  columns: {user_id: customer, item_id: sku, ts: when, event_type: action, value: paid}
  ts_format: "%Y-%m-%d %H:%M:%S"
items:
  uri: it.parquet
  columns: {item_id: sku, title: name}
""")
    raw = events.ingest(spec, str(tmp_path / "lake"))
    ev = storage.read_partitioned(storage.join(raw.uri, "events"))
    assert ev["user_id"].tolist() == ["1", "2"]  # ids become strings
    assert ev["ts"].iloc[1] == pd.Timestamp("2024-01-03 11:30", tz="UTC")
    assert ev["event_type"].tolist() == ["view", "purchase"] and ev["value"].tolist() == [0.0, 9.5]
    items = storage.read_parquet(storage.join(raw.uri, "items.parquet"))
    assert list(items.columns) == list(events.ITEM_COLUMNS) and items["categories"].isna().all()


def test_same_input_same_key_and_a_changed_event_changes_it(tmp_path):
    (tmp_path / "e.csv").write_text("u,i,t\nx,a,1700000000\ny,a,1700000001\n")
    (tmp_path / "i.csv").write_text("i\na\n")
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: t\nevents: {uri: e.csv, columns: {user_id: u, item_id: i, ts: t}, ts_unit: s, "
        "event_type: view}\nitems: {uri: i.csv, columns: {item_id: i}}\n"
    )
    lake = str(tmp_path / "lake")
    first, again = events.ingest(spec, lake), events.ingest(spec, lake)
    assert first == again
    (tmp_path / "e.csv").write_text("u,i,t\nx,a,1700000000\ny,a,1700000002\n")
    assert events.ingest(spec, lake).data_hash != first.data_hash


@pytest.mark.parametrize(
    "text,match",
    [
        (
            "name: t\nevents: {uri: nope.csv, columns: {user_id: u, item_id: i, ts: t}, event_type: view}\n"
            "items: {uri: i.csv, columns: {item_id: i}}\n",
            r"nope.csv does not exist",
        ),
        (
            "name: t\nevents: {uri: e.csv, columns: {user_id: u, item_id: i}, event_type: view}\n"
            "items: {uri: i.csv, columns: {item_id: i}}\n",
            r"must map \['ts'\]",
        ),
        (
            "name: t\nevents: {uri: e.csv, columns: {user_id: u, item_id: i, ts: t}}\n"
            "items: {uri: i.csv, columns: {item_id: i}}\n",
            r"event_type",
        ),
        (
            "name: t\nevents: {uri: e.csv, columns: {user_id: u, item_id: i, ts: t}, event_type: wish}\n"
            "items: {uri: i.csv, columns: {item_id: i}}\n",
            r"'events.event_type' is 'wish'; expected 'view' or",
        ),
        (
            "name: t\nevents: {uri: e.csv, columns: {user_id: u, item_id: i, ts: when}, event_type: view}\n"
            "items: {uri: i.csv, columns: {item_id: i}}\n",
            r"e.csv: column\(s\) \['when'\]",
        ),
    ],
)
def test_spec_errors_name_what_is_wrong(tmp_path, text, match):
    (tmp_path / "e.csv").write_text("u,i,t\nx,a,1700000000\n")
    (tmp_path / "i.csv").write_text("i\na\n")
    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(events.SpecError, match=match):
        events.ingest(tmp_path / "s.yaml", str(tmp_path / "lake"))


def test_empty_and_truncated_files_are_spec_errors(tmp_path):
    (tmp_path / "e.csv.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    (tmp_path / "i.csv").write_text("")
    (tmp_path / "s.yaml").write_text(
        "name: t\nevents: {uri: e.csv.gz, columns: {user_id: u, item_id: i, ts: t}, "
        "event_type: view}\nitems: {uri: i.csv, columns: {item_id: i}}\n"
    )
    with pytest.raises(events.SpecError, match=r"(e.csv.gz cannot be read|i.csv is empty)"):
        events.ingest(tmp_path / "s.yaml", str(tmp_path / "lake"))


def test_sources_are_read_in_chunks_as_they_were_written_and_a_bad_line_is_named(tmp_path, monkeypatch):
    """CSV by Polars' streaming engine, Parquet batch by batch (here many row groups), and the
    data hash block by block: the same frames and key as a whole read (blank lines skipped, as
    pandas skips them); a ragged CSV row is named by its line (Polars' own error names none)."""
    rng = np.random.default_rng(0)
    n = 30_000
    ev = pd.DataFrame(
        {
            "u": [f" u{k} " if k % 97 == 0 else f"u{k}" for k in rng.integers(0, 500, n)],
            "i": rng.integers(0, 200, n).astype(str),
            "t": (1_700_000_000 + rng.integers(0, 86_400 * 30, n)).astype(str),
            "v": np.where(rng.random(n) < 0.1, None, "1.5"),  # empty in the CSV, null in Parquet
        }
    )
    lines = ev.to_csv(index=False).splitlines(keepends=True)
    (tmp_path / "e.csv").write_text("".join([*lines[:100], "\n", *lines[100:], "\n\n"]))  # blank lines
    ev.to_parquet(tmp_path / "e.parquet", row_group_size=1_000)
    pd.DataFrame({"i": [str(k) for k in range(200)], "name": "x"}).to_csv(tmp_path / "i.csv", index=False)
    text = (
        "name: t\nevents: {{uri: {}, columns: {{user_id: u, item_id: i, ts: t, value: v}}, ts_unit: s, "
        "event_type: view}}\nitems: {{uri: i.csv, columns: {{item_id: i, title: name}}}}\n"
    )
    (tmp_path / "csv.yaml").write_text(text.format("e.csv"))
    (tmp_path / "pq.yaml").write_text(text.format("e.parquet"))
    csv, parquet = events.load_spec(tmp_path / "csv.yaml"), events.load_spec(tmp_path / "pq.yaml")

    def whole(uri: str) -> bytes:
        raise AssertionError(f"{uri} read whole")

    monkeypatch.setattr(storage, "read_bytes", whole)
    assert pq.ParquetFile(tmp_path / "e.parquet").num_row_groups == 30
    text = pd.read_csv(tmp_path / "e.csv", dtype=str, keep_default_na=False, na_values=[""])
    pd.testing.assert_frame_equal(events._read_table(csv.events), text)
    pd.testing.assert_frame_equal(events._read_table(parquet.events), pd.read_parquet(tmp_path / "e.parquet"))
    a, b = events.read_events(csv.events), events.read_events(parquet.events)
    pd.testing.assert_frame_equal(a, b)  # text and typed sources, the same events
    assert a.attrs["ids"]["user_id"]["padded"]["rows"] == (ev["u"] != ev["u"].str.strip()).sum()

    monkeypatch.setattr(storage, "BLOCK", 4096)  # many blocks: the same key as one whole read
    whole_hash = hashlib.sha256(csv.spec_text.encode())
    for name in ("e.csv", "i.csv"):
        whole_hash.update((tmp_path / name).read_bytes())
    assert list(storage.iter_bytes(str(tmp_path / "i.csv"), 64))[0] == (tmp_path / "i.csv").read_bytes()[:64]
    assert events.source_hash(csv) == whole_hash.hexdigest()[:16]

    (tmp_path / "e.csv").write_text("u,i,t,v\nx,a,1700000000,1\ny,a,1700000001,1,extra\n")
    with pytest.raises(events.SpecError, match=r"e.csv cannot be read as csv: .*line 3, saw 5"):
        events.read_events(csv.events)


def test_k_core_filter():
    ev = pd.DataFrame({"user_id": ["a", "a", "b", "b", "c"], "item_id": ["x", "y", "x", "y", "x"]})
    out = events.k_core(ev, 2)
    assert sorted(out["user_id"].unique()) == ["a", "b"]


@pytest.mark.parametrize(
    "edit, says",
    [
        (("privacy:", "privacy_settings:"), ["unknown key 'privacy_settings'", "did you mean 'privacy'"]),
        (("  ts_unit: s", "  ts_unit: seconds"), ["'events.ts_unit' is 'seconds'", "'ms'"]),
        (
            ("  order_by: seq_pos", "  order_by: seq_pos\n  oder: x"),
            ["unknown key 'events.oder'", "did you mean 'order_by'"],
        ),
        (("items:", "filters: {k_core: five}\nitems:"), ["'filters.k_core' is 'five'", "expected int"]),
        (("uri: events.csv", "uri: http://example.com/events.csv"), ["'events.uri'", "http:// is not supported"]),
    ],
)
def test_a_spec_is_checked_whole_against_its_schema(tmp_path, edit, says):
    """Issue 19, point 2: every unknown key and ill-typed value is a SpecError naming the spec
    file and the key path (a typo never silently turns a setting off)."""
    from conftest import sample_frames, write_slice

    ev, items = sample_frames(5)
    spec = write_slice(tmp_path, ev, items)
    text = spec.read_text() + "privacy: {pseudonymise_users: false}\n"
    assert edit[0] in text
    spec.write_text(text.replace(edit[0], edit[1], 1))
    with pytest.raises(events.SpecError) as e:
        events.load_spec(spec)
    assert str(spec) in str(e.value) and all(s in str(e.value) for s in says), str(e.value)


def test_values_that_are_not_numbers_or_not_in_range_are_left_for_validation_to_report():
    """Ingest maps, validation judges: booleans, times and "inf" stay what they are (the
    type rule reports them); a timestamp beyond pandas' nanosecond range (year 9999, epoch
    milliseconds read as seconds) becomes NaT, never an error, and is reported as written."""
    import numpy as np

    assert events._numeric_or_text(pd.Series([True, False])).dtype == bool
    assert events._numeric_or_text(pd.Series(["1.5", "inf"])).dtype == object
    assert events._numeric_or_text(pd.Series(pd.to_datetime(["2014-01-01"]))).dtype.kind == "M"
    for col in (pd.Series([1, 2], dtype="uint8"), pd.Series([1, None], dtype="Int16"), pd.Series(["3.5", None])):
        assert events._numeric_or_text(col).dtype == np.float64
    ts = events.parse_ts(pd.Series(["9999-12-31", "2014-01-01", "0001-01-01"]), None, None)
    assert ts.isna().tolist() == [True, False, True] and str(ts.dtype) == "datetime64[ns, UTC]"
    assert events.parse_ts(pd.Series(["1270166400000"]), "s", None).isna().all()


def test_null_like_ids_become_null_and_padded_ids_are_counted():
    ids, found = events.clean_ids(pd.Series(["u1", " u1", "NULL", "  ", "n/a", None, "u2 "]), strip=True)
    assert ids.tolist()[:2] == ["u1", "u1"] and ids.isna().tolist() == [False, False, True, True, True, True, False]
    assert found["null_like"] == {2: "NULL", 3: "  ", 4: "n/a"} and found["null_like_rows"] == 3
    assert found["padded"] == {"ids": 2, "rows": 2, "merged": 1, "examples": ["' u1'", "'u2 '"]}
    kept, _ = events.clean_ids(pd.Series([" u1"]), strip=False)
    assert kept.tolist() == [" u1"]


def test_a_catalogue_from_events_groups_by_the_cleaned_item_id(tmp_path):
    (tmp_path / "ev.csv").write_text("u,i,t,title\nx,A,1300000000,a\ny, A,1300000001,b\n")
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: fe\nevents:\n  uri: ev.csv\n  columns: {user_id: u, item_id: i, ts: t}\n  ts_unit: s\n"
        "  event_type: view\nitems:\n  from_events: true\n  columns: {item_id: i, title: title}\n"
    )
    items = events.read_items(events.load_spec(spec).items)
    assert items["item_id"].tolist() == ["A"]  # one item, not "A" and " A"
