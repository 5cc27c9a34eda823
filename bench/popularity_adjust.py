"""Logit adjustment on trained models: overall and cold-start NDCG@10 for each tau.

Ranks with ``score - tau * log(1 + min(n, c))`` (n: the item's training interactions, c:
bert's ``popularity_cap``, 0 for none) for each tau and cap, using the models a quality run
left in its lake (``bench/quality.py --lake DIR``):
``--stage fold`` scores fold 0's best checkpoint on its validation targets (where a
default is chosen), ``--stage final`` the final model on the test targets. The same
adjustment for every family, so the families are compared at equal settings.

    .venv/bin/python bench/popularity_adjust.py --lake bench/out/quality-bert --families bert --stage fold

A study's trial (its lake holds one model folder per trial): ``--models`` names the folder
and ``--model`` the trial's settings (a fold checkpoint holds weights only).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _common import quiet_env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lake", required=True)
    ap.add_argument("--families", nargs="+", required=True)
    ap.add_argument("--stage", choices=("fold", "final"), default="fold")
    ap.add_argument("--taus", nargs="+", type=float, default=[0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5])
    ap.add_argument("--caps", nargs="+", type=int, default=[0], help="popularity_cap values (0: no cap)")
    ap.add_argument("--model", type=json.loads, default={}, help="config overrides of the trained model (JSON)")
    ap.add_argument("--models", help="the model folder under 05_models/<dataset>/ (default: the family's first)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if (args.model or args.models) and len(args.families) > 1:
        ap.error("--model and --models name one trained model: give one family")
    if args.model and args.stage == "final":
        ap.error("--model: a final model carries its own config (--stage fold only)")
    quiet_env()
    import torch

    from components import evaluation, metrics
    from components import lake as lake_
    from components import text as text_
    from components.datasets import Dataset
    from components.models import MODELS
    from components.models.bert import popularity_penalty
    from components.recommender import Recommender
    from components.training import side_inputs

    torch.set_num_threads(args.threads)
    lake = Path(args.lake)
    out = []
    for family in args.families:
        pattern = f"05_models/*/{args.models or family + '-*'}"
        (models,) = [p for p in lake.glob(pattern) if p.is_dir()][:1] or [None]
        if models is None:
            raise SystemExit(f"no trained {family} in {lake}/05_models")
        data = Dataset.load(lake_.open_dataset(str(lake), models.parent.name, text_.model_version()))
        view = data.view("fold", 0) if args.stage == "fold" else data.view("final")
        stage_dir = models / "fold0" if args.stage == "fold" else sorted(models.glob("final*"))[-1]
        cls = MODELS[family]
        if args.stage == "final":  # the registered-to-be model
            model = Recommender.from_bytes((stage_dir / "recommender.pt").read_bytes()).model
        else:
            state = torch.load(stage_dir / "best.ckpt", map_location="cpu", weights_only=False)["state_dict"]
            weights = {k.removeprefix("model."): v for k, v in state.items() if k != "model.counts"}
            model = cls(cls.Config(**args.model), data.n_items, data.n_users, side_inputs(cls, data, view))
            model.load_state_dict(weights)
        model.eval()
        counts = torch.as_tensor(evaluation.item_counts(view, data.n_items), dtype=torch.float32)
        max_len = model.max_len
        # every (tau, cap); tau 0 ranks alike under every cap, so it is scored once
        for tau, cap in [(t, c) for c in args.caps for t in args.taus if t or c == args.caps[0]]:
            # each model's own scores (before any popularity_adjust it ships with), then tau
            penalty = popularity_penalty(counts, tau, cap)
            scorer = torch.no_grad()(lambda b, model=model, penalty=penalty: model.fit_score(b) - penalty)
            ranks, _, _ = evaluation.rank_view(scorer, view, data.n_items, max_len=max_len)
            m, cold = metrics.rank_metrics(ranks, ks=(10,)), evaluation.cold_report(ranks, view, data.n_items)
            row = {
                "family": family,
                "stage": args.stage,
                "tau": tau,
                "cap": cap,
                "ndcg10": round(m["ndcg10"], 4),
                "hr10": round(m["hr10"], 4),
                "cold_ndcg10": round(cold["cold_ndcg10"], 4),
                "cold_n": cold["cold_n"],
            }
            print(
                f"{family:6s} tau {tau:4.2f} cap {cap:3d}  NDCG@10 {row['ndcg10']:.4f}  HR@10 {row['hr10']:.4f}  "
                f"cold NDCG@10 {row['cold_ndcg10']:.4f} ({row['cold_n']})",
                flush=True,
            )
            out.append(row)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
