"""Item text embedding throughput on the full Beauty catalogue, beside a plain transformers loop.

In one run, over the same texts ("title | brand | categories" of every catalogue item),
the same MiniLM weights, batch size and thread count:

- ours: the item-text stage (components/features.py's embed_items, the encoder of
  components/text.py) into an empty cache, timed end to end (model load included) and
  for the encoding alone;
- plain: the textbook loop: ``tokenizer(batch, padding=True, truncation=True)``, an fp32
  forward pass, mean pooling, L2 normalisation, batches in catalogue order;
- a re-run of the stage over the unchanged catalogue (its output removed, the cache kept).

Prints items/s of each, the ratio ours/plain, the lowest cosine between the two sets of
vectors, and ends with one JSON line.

    .venv/bin/python bench/text.py --lake bench/out/text [--threads 2] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time

import torch
from _common import ROOT, fresh_home, quiet_env


def plain_loop(texts: list[str], batch_size: int):
    from components import text

    tok, model = text.load_pretrained()
    model.eval()
    out = []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            enc = tok(
                texts[i : i + batch_size],
                padding=True,
                truncation=True,
                max_length=text.MAX_LENGTH,
                return_tensors="pt",
            )
            out.append(text.mean_pool(model(**enc).last_hidden_state, enc["attention_mask"]))
    return torch.cat(out).numpy(), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lake", required=True)
    ap.add_argument("--spec", default=str(ROOT / "specs" / "amazon_beauty.yaml"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    quiet_env()
    lake = str(fresh_home(args.lake))
    torch.set_num_threads(args.threads)
    from components import features, pipeline, storage, text
    from components import lake as lake_

    feats = pipeline.build_features(pipeline.validate(pipeline.ingest(args.spec, lake), lake), lake)
    items = storage.read_parquet(lake_.file(feats.uri, "items.parquet"))
    texts = text.item_texts(items)

    t0 = time.perf_counter()
    enc = text.TextEncoder(batch_size=args.batch_size)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = enc.encode(texts)
    encode_s = time.perf_counter() - t0
    ref, plain_s = plain_loop(texts, args.batch_size)

    t0 = time.perf_counter()
    stage = features.embed_items(feats, lake, batch_size=args.batch_size)  # empty cache: embeds everything
    stage_s = time.perf_counter() - t0
    shutil.rmtree(storage.local_path(stage.text_uri))  # the stage's output, not the cache
    t0 = time.perf_counter()
    rerun = features.embed_items(feats, lake, batch_size=args.batch_size)
    rerun_s = time.perf_counter() - t0

    n = len(texts)
    figures = {
        "items": n,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "bf16_autocast": enc.bf16,
        "ours_items_per_s": round(n / encode_s, 1),
        "plain_items_per_s": round(n / plain_s, 1),
        "ratio_ours_vs_plain": round(plain_s / encode_s, 2),
        "min_cosine_ours_vs_plain": round(float((ours * ref).sum(1).min()), 6),
        "model_load_s": round(load_s, 2),
        "stage_first_run_s": round(stage_s, 1),
        "stage_first_run_embedded": stage.text_stats["embedded"],
        "stage_rerun_s": round(rerun_s, 2),
        "stage_rerun_embedded": rerun.text_stats["embedded"],
    }
    print(f"\n{n} item texts, {args.threads} threads, batch {args.batch_size}")
    print(f"ours   {figures['ours_items_per_s']:>8} items/s  (bf16 autocast: {enc.bf16}, length-bucketed batches)")
    print(f"plain  {figures['plain_items_per_s']:>8} items/s  (fp32, padding=True, catalogue order)")
    print(f"ratio ours/plain: {figures['ratio_ours_vs_plain']}   lowest cosine: {figures['min_cosine_ours_vs_plain']}")
    print(f"stage into an empty cache: {stage_s:.1f} s ({stage.text_stats['embedded']} embedded)")
    print(f"re-run, unchanged catalogue: {rerun_s:.2f} s ({rerun.text_stats['embedded']} embedded)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
