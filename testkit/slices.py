"""Small slices of the shipped Beauty sample (data/sample), written as CSV files plus a dataset spec."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"


def sample_frames(n_users: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The first ``n_users`` users (by id) of the shipped sample with their events and items."""
    ev = pd.read_csv(SAMPLE / "events.csv.gz", dtype={"user_id": str, "item_id": str})
    items = pd.read_csv(SAMPLE / "items.csv.gz", dtype={"item_id": str})
    users = sorted(ev["user_id"].unique())[:n_users]
    ev = ev[ev["user_id"].isin(users)].reset_index(drop=True)
    return ev, items[items["item_id"].isin(set(ev["item_id"]))].reset_index(drop=True)


SPEC = """name: {name}
events:
  uri: {events}
  columns: {{user_id: user_id, item_id: item_id, ts: timestamp}}
  ts_unit: s
  event_type: review
  partition: month
  order_by: seq_pos
items:
  uri: {items}
  columns: {{item_id: item_id, title: title, categories: categories, brand: brand, price: price}}
"""


def write_slice(folder: Path, events: pd.DataFrame, items: pd.DataFrame, name: str = "slice") -> Path:
    """Write a slice as CSV files plus a dataset spec; returns the spec path."""
    folder.mkdir(parents=True, exist_ok=True)
    events.to_csv(folder / "events.csv", index=False)
    items.to_csv(folder / "items.csv", index=False)
    spec = folder / "spec.yaml"
    spec.write_text(SPEC.format(name=name, events="events.csv", items="items.csv"))
    return spec
