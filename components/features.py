"""Features (03_features): id vocabularies and time-ordered user sequences.

Item indices follow the sorted item ids of the catalogue, user indices the sorted user
ids, so the same data always gives the same indices, and "ties broken by item index"
means ties broken by item id.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from components import storage


def build_vocab_and_sequences(events: pd.DataFrame, items: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Returns (items with ``item_idx``, users with ``user_idx`` and their ordered ``items``/``ts``)."""
    items = items.sort_values("item_id", kind="stable").reset_index(drop=True)
    items.insert(0, "item_idx", np.arange(len(items), dtype=np.int64))
    index = pd.Series(items["item_idx"].to_numpy(), index=items["item_id"].astype(str))
    ev = events.assign(item_idx=events["item_id"].astype(str).map(index).to_numpy())
    # Time order; ties keep the order the source recorded (seq), see components/events.py.
    ev = ev.sort_values(["user_id", "ts", "seq"], kind="stable")
    ts = ev["ts"].astype("datetime64[ns, UTC]").astype("int64") // 10**9
    ev = ev.assign(ts_s=ts.to_numpy())
    grouped = ev.groupby("user_id", sort=True)
    users = pd.DataFrame(
        {
            "user_id": list(grouped.groups.keys()),
            "items": [g.to_numpy(np.int64) for _, g in grouped["item_idx"]],
            "ts": [g.to_numpy(np.int64) for _, g in grouped["ts_s"]],
        }
    )
    users.insert(0, "user_idx", np.arange(len(users), dtype=np.int64))
    return items, users


def build_features(validated: dict, lake: str) -> dict:
    """Write 03_features/<key>: ``items.parquet`` and ``users.parquet``; reused when present."""
    key = storage.name(validated["uri"])
    layer = storage.join(lake, "03_features", key)
    if not storage.layer_done(layer):
        events = storage.read_parquet(storage.join(validated["uri"], "events.parquet"))
        items = storage.read_parquet(storage.join(validated["uri"], "items.parquet"))
        items, users = build_vocab_and_sequences(events, items)
        storage.write_parquet(items, storage.join(layer, "items.parquet"))
        storage.write_parquet(users, storage.join(layer, "users.parquet"))
        storage.mark_done(layer, {"n_users": len(users), "n_items": len(items)})
    return {**validated, "uri": layer}
