"""Re-score trained final models of an earlier lake with today's evaluation code.

For a change that leaves training untouched (``tests/test_behaviour.py`` checks that a
one-type log trains bit for bit as before) but changes how test figures are computed, this
gives the new figures of record without retraining: each ``05_models/.../final-e*/recommender.pt``
of ``--from`` is loaded as a Recommender and tested on ``--spec``'s data, built in ``--lake``
by the current data path. Ends with one JSON line.

    .venv/bin/python bench/rescore.py --from bench/out/quality --lake bench/out/rescore
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _common import ROOT, fresh_home, quiet_env

COLS = ("ndcg10", "hr10", "mrr", "coverage10", "cold_ndcg10", "repeat_n", "repeat_ndcg10", "new_ndcg10")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from", dest="source", required=True, help="the earlier lake with 05_models")
    ap.add_argument("--lake", required=True)
    ap.add_argument("--spec", default=str(ROOT / "specs" / "amazon_beauty.yaml"))
    ap.add_argument("--folds", type=int, default=1)
    args = ap.parse_args()
    quiet_env()
    lake = fresh_home(args.lake)
    from components import evaluation, pipeline
    from components.datasets import Dataset
    from components.recommender import Recommender

    data = Dataset.load(pipeline.data_path(args.spec, str(lake), args.folds, 0))
    figures = {}
    print(f"{'model':<12}" + "".join(f"{c:>15}" for c in COLS))
    for path in sorted(Path(args.source).glob("05_models/*/*/final-e*/recommender.pt")):
        rec = Recommender.from_bytes(path.read_bytes())
        test, _ = evaluation.test_report(rec, data)
        print(f"{rec.family:<12}" + "".join(f"{test[c]:>15.4f}" for c in COLS))
        figures.update({f"{rec.family}_{c}": round(test[c], 4) for c in COLS})
    pop = evaluation.popularity_report(data)
    recent = evaluation.recent_report(data)
    for name, base in (("pop", pop), ("recent", recent)):
        print(f"{name:<12}" + "".join(f"{base[c]:>15.4f}" for c in COLS))
        figures.update({f"{name}_{c}": round(base[c], 4) for c in COLS})
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
