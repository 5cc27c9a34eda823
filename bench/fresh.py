"""Freshness on full Beauty: items that appear after training, and a night that warm-starts.

New items. Every item whose first interaction falls in the last N days is removed from the
log (N: the fewest days that make at least ``--new-targets`` test targets such items); each
family is trained on what is left (a final fit, ``--epochs``), the full catalogue is
published (08_catalogue) and the model, extended by it as the served champion is
(components/recommender.py CatalogueWatch), is scored on the full log's test targets: HR@10 / NDCG@10 on
the targets that are new items and on the others. An id-only family cannot rank a new
item (0 by construction); the text-aware family ranks them by their text.

Warm start. Night 1 is the log up to a week before its end, without any event that is a
validation or test target of the full log (so the night-1 model has seen none of them);
bert's final fit on it is night 1's champion, trained as the nightly flow trains one: a
fold on night 1's own validation targets chooses the epochs (``--night1-epochs`` fixes
them instead). Night 2 is the full log: bert trains with
per-epoch validation (one fold: every user's validation target) from scratch, and again
from the night-1 weights (Family.warm_start: ids carried over, new ones fresh). Printed:
the from-scratch run's best validation NDCG@10 and the training time it took to reach it,
and the warm start's time to reach the same figure.

    .venv/bin/python bench/fresh.py --out bench/out/fresh
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, fresh_home, peak_rss_gib, quiet_env, reuse_home  # noqa: E402

DAY = 86_400


def write_log(folder: Path, events: pd.DataFrame, items: pd.DataFrame, name: str) -> str:
    from testkit.slices import write_slice

    return str(write_slice(folder, events, items, name=name))


def new_item_days(events: pd.DataFrame, test_items: pd.Series, want: int) -> int:
    """The fewest whole days N such that at least ``want`` test targets are items first seen
    in the log's last N days."""
    first = events.groupby("item_id")["timestamp"].min()
    end = int(events["timestamp"].max())
    age = ((end - first.reindex(test_items).to_numpy()) // DAY).astype(np.int64)  # days before the end
    for n in range(1, 3650):
        if int((age < n).sum()) >= want:
            return n
    raise SystemExit(f"fewer than {want} test targets are ever new items")


def split_metrics(ranks: np.ndarray, is_new: np.ndarray) -> dict:
    from components import metrics

    out = {}
    for part, mask in (("new_item", is_new), ("other", ~is_new)):
        m = metrics.rank_metrics(ranks[mask], ks=(10,))
        out |= {
            f"{part}_hr10": round(m["hr10"], 4),
            f"{part}_ndcg10": round(m["ndcg10"], 4),
            f"{part}_n": int(mask.sum()),
        }
    return out


def new_items_part(args, out: Path, events: pd.DataFrame, items: pd.DataFrame, full) -> dict:
    from components import catalogue, evaluation, pipeline, pyfunc, storage, text
    from components.config import TrainConfig
    from components.recommender import extended

    full_data, _ = full
    view = full_data.view("final")
    test_items = pd.Series(full_data.item_ids[view.eval_targets])
    n_days = new_item_days(events, test_items, args.new_targets)
    first = events.groupby("item_id")["timestamp"].min()
    new = set(first[first > events["timestamp"].max() - n_days * DAY].index)
    print(f"new items: {len(new)} items first seen in the last {n_days} days", flush=True)
    old_events = events[~events["item_id"].isin(new)]
    old_items = items[~items["item_id"].isin(new)]
    spec = write_log(out / "src-before", old_events, old_items, "beauty_before_new_items")
    layer = pipeline.data_path(spec, str(out), 1, args.seed)
    published = catalogue.publish(write_log(out / "src-full", events, items, "beauty_before_new_items"), str(out))
    table = storage.read_parquet(published.uri)
    is_new = np.isin(full_data.item_ids[view.eval_targets], list(new))
    result = {"new_item_days": n_days, "new_items": len(new)}
    for family in args.families:
        cfg = TrainConfig(seed=args.seed, batch_size=args.batch_size)
        t0 = time.perf_counter()
        final = pipeline.train(layer, family, "final", cfg, str(out), epochs=args.epochs[family])
        rec = extended(pyfunc.load(final.model_uri), table, text.model_version())
        ranks, _, _ = evaluation.rank_view(rec.scorer_for(full_data), view, full_data.n_items, max_len=rec.max_len)
        m = split_metrics(ranks, is_new)
        print(
            f"{family}: new-item targets HR@10 {m['new_item_hr10']:.4f} NDCG@10 {m['new_item_ndcg10']:.4f} "
            f"({m['new_item_n']}); other targets HR@10 {m['other_hr10']:.4f} NDCG@10 {m['other_ndcg10']:.4f} "
            f"({m['other_n']}); the served model ranks {rec.n_items} items, {time.perf_counter() - t0:.0f} s",
            flush=True,
        )
        result |= {f"{k}_{family}": v for k, v in m.items()} | {f"train_s_{family}": round(final.train_s, 1)}
    return result


def warm_start_part(args, out: Path, events: pd.DataFrame, items: pd.DataFrame, full) -> dict:
    from components import pipeline
    from components.config import TrainConfig

    full_data, full_layer = full
    # Night 1: a week less, and none of night 2's validation or test events.
    held = set()
    for u, seq in enumerate(full_data.seqs):
        for p in (full_data.val_pos[u], full_data.test_pos[u]):
            if p >= 0:
                held.add((str(full_data.user_ids[u]), str(full_data.item_ids[seq[p]]), int(full_data.ts[u][p])))
    cols = (events["user_id"].astype(str), events["item_id"].astype(str), events["timestamp"].astype(int))
    keys = list(zip(*cols, strict=True))
    cut = events["timestamp"].max() - args.week_days * DAY
    night1 = events[(events["timestamp"] <= cut).to_numpy() & ~np.array([k in held for k in keys])]
    spec1 = write_log(out / "src-night1", night1, items[items["item_id"].isin(set(night1["item_id"]))], "night1")
    layer1 = pipeline.data_path(spec1, str(out), 1, args.seed)
    print(f"night 1: {len(night1)} events (night 2: {len(events)})", flush=True)
    cfg = TrainConfig(seed=args.seed, batch_size=args.batch_size, max_epochs=args.max_epochs, patience=args.patience)
    if args.night1_epochs:
        start = pipeline.train(layer1, "bert", "final", cfg, str(out), epochs=args.night1_epochs)
    else:  # as the nightly flow makes a champion: a fold chooses the epochs, the final fit trains them
        start = pipeline.train_final(layer1, "bert", pipeline.train_folds(layer1, "bert", cfg, str(out)), cfg, str(out))
    print(f"night 1: bert's champion trained {start.epochs_run} epochs", flush=True)
    runs = {}
    shrink = pipeline.WARM_SHRINK if args.warm_shrink is None else args.warm_shrink
    warm_from = pipeline.WarmStart(start.model_uri, "night-1 bert", shrink=shrink)
    for name, warm in (("scratch", None), ("warm", warm_from)):
        c = cfg if warm is None else replace(cfg, max_epochs=args.warm_max_epochs, lr=args.warm_lr)
        r = pipeline.train(full_layer, "bert", "fold", c, str(out), fold=0, warm_start=warm)
        curve = [(h["val_ndcg10"], h["train_epoch_s"]) for h in r.history]
        runs[name] = curve
        print(f"night 2 {name}: val NDCG@10 per epoch {[round(v, 4) for v, _ in curve]}", flush=True)
    best = max(v for v, _ in runs["scratch"])
    best_at = next(i for i, (v, _) in enumerate(runs["scratch"]) if v == best)
    scratch_s = sum(s for _, s in runs["scratch"][: best_at + 1])
    reached = next((i for i, (v, _) in enumerate(runs["warm"]) if v >= best), None)
    warm_s = sum(s for _, s in runs["warm"][: reached + 1]) if reached is not None else None
    print(
        f"warm start: from scratch best val NDCG@10 {best:.4f} at epoch {best_at + 1} after {scratch_s:.0f} s of "
        f"training; the warm start reaches it "
        + (f"at epoch {reached + 1} after {warm_s:.0f} s" if reached is not None else "never within its budget"),
        flush=True,
    )
    return {
        "scratch_best_val_ndcg10": round(best, 4),
        "scratch_s_to_best": round(scratch_s, 1),
        "warm_best_val_ndcg10": round(max(v for v, _ in runs["warm"]), 4),
        "warm_s_to_scratch_best": None if warm_s is None else round(warm_s, 1),
        "warm_start_time_ratio": None if warm_s is None else round(warm_s / scratch_s, 3),
        "warm_epoch1_val_ndcg10": round(runs["warm"][0][0], 4),
        "warm_lr": args.warm_lr,
        "warm_shrink": shrink,
        "night1_epochs": start.epochs_run,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "bench" / "out" / "fresh"))
    p.add_argument(
        "--source",
        default=str(ROOT.parent / "shared" / "data" / "amazon_beauty"),
        help="folder with interactions.csv(.gz) and items.csv(.gz) (user_id, item_id, timestamp, seq_pos)",
    )
    p.add_argument("--families", nargs="+", default=["bert", "mf"])
    p.add_argument("--new-targets", type=int, default=500, help="at least this many test targets are new items")
    p.add_argument("--bert-epochs", type=int, default=10, help="bert's final fits (mf: 12, its CV choice)")
    p.add_argument("--week-days", type=int, default=7, help="night 2 = night 1 + this many days")
    p.add_argument("--max-epochs", type=int, default=25)
    p.add_argument(
        "--night1-epochs",
        type=int,
        default=None,
        help="night 1's final fit (default: chosen on night 1's validation fold, as the nightly flow does)",
    )
    p.add_argument("--warm-max-epochs", type=int, default=10)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--warm-lr", type=float, default=None, help="the warm start's learning rate (default: bert's)")
    p.add_argument(
        "--warm-shrink",
        type=float,
        default=None,
        help="shrink the carried weights towards a fresh start (default: the nightly's, pipeline.WARM_SHRINK)",
    )
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip", choices=["new-items", "warm-start"], default=None)
    p.add_argument("--reuse", action="store_true", help="keep --out: trainings finished there are reused")
    args = p.parse_args()
    args.epochs = {"bert": args.bert_epochs, "mf": 12, "lstm": 38, "cnn": 30}
    quiet_env()
    out = reuse_home(args.out) if args.reuse else fresh_home(args.out)
    from components import pipeline
    from components.datasets import Dataset

    source = Path(args.source)
    events = pd.read_csv(next(source.glob("*interactions.csv*")), dtype={"user_id": str, "item_id": str})
    items = pd.read_csv(next(source.glob("items.csv*")), dtype={"item_id": str})
    items = items[["item_id", "title", "categories", "brand", "price"]]
    t0 = time.perf_counter()
    layer = pipeline.data_path(write_log(out / "src-full-log", events, items, "beauty_full"), str(out), 1, args.seed)
    full = (Dataset.load(layer), layer)
    summary = {}
    if args.skip != "new-items":
        summary |= new_items_part(args, out, events, items, full)
        bert_hr = summary.get("new_item_hr10_bert")
        if bert_hr is not None and summary.get("other_hr10_bert"):
            summary["new_item_hr10_ratio"] = round(bert_hr / summary["other_hr10_bert"], 3)
    if args.skip != "warm-start":
        summary |= warm_start_part(args, out, events, items, full)
    summary |= {"total_s": round(time.perf_counter() - t0, 1), "peak_rss_gib": round(peak_rss_gib(), 2)}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
