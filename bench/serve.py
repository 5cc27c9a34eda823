"""Per-request serving: the real MLflow model server on a trained champion, driven at 1, 8 and
32 concurrent clients.

The champion is a final fit from a benchmark lake (default: bench/out/quality, bert on full
Beauty, as bench/quality.py trained it). It is registered, with its serving tables (titles,
popularity, each user's stored events), as the champion of a fresh MLflow home in ``--out``,
and ``interestflow serve`` starts MLflow's model server on it. The load generator is a
closed loop of C asyncio clients (aiohttp) in this process, on the same two cores, a new
connection per request unless ``--keep-alive``: each request is a random known user with
two recent events the model has not seen (random catalogue items, timestamps now), K = 10.
Per level: a warm-up, then ``--seconds`` of requests; p50 / p99 latency and requests per
second. Ends with one JSON line.

    .venv/bin/python bench/serve.py --lake bench/out/quality --family bert --out bench/out/serve
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, fresh_home, quiet_env  # noqa: E402


def champion_file(lake_root: Path, family: str) -> tuple[str, Path]:
    """(dataset key, the newest final fit of ``family``) in a benchmark lake."""
    fits = sorted(
        (lake_root / "05_models").glob(f"*/{family}-*/final-e*/recommender.pt"), key=lambda p: p.stat().st_mtime
    )
    if not fits:
        sys.exit(f"no final {family} fit under {lake_root}/05_models: run bench/quality.py --families {family} first")
    return fits[-1].parents[2].name, fits[-1]


def register(lake_root: Path, family: str, spec: str, out: Path, data_lake: str) -> tuple[list[str], list[str]]:
    """Register the lake's final fit, with serving tables, as ``family``'s champion in ``out``."""
    import pandas as pd

    from components import lake, pipeline, pyfunc, text, tracking
    from components.datasets import Dataset
    from components.recommender import Recommender
    from components.serving import ServingTables

    _, path = champion_file(lake_root, family)
    rec = Recommender.from_bytes(path.read_bytes())
    # Today's layers of the same log, in this benchmark's own lake (the model's may be older).
    layer = pipeline.data_path(spec, data_lake, 1, 0)
    data = Dataset.load(layer)
    if not (np.array_equal(rec.item_ids, data.item_ids) and np.array_equal(rec.user_ids, data.user_ids)):
        sys.exit(f"{path} was not trained on {spec}'s ids")
    version = text.model_version() if rec.model.reads_text(rec.model.config) else None
    rec.serving = ServingTables.from_dataset(
        data, data.view("final"), lake.catalogue_uri(str(out), layer.features.validated.raw.spec), version
    )
    example = pd.DataFrame({"user_id": [str(data.user_ids[0])], "history": [[str(data.item_ids[0])]]})
    run_id = tracking.create_run(f"bench-serve-{family}", {"source": str(path)}, {"bench": "serve"})
    uri = pyfunc.log(run_id, rec, example)
    name = tracking.model_name(family)
    tracking.set_alias(name, tracking.CHAMPION, tracking.register(uri, name, {"source": str(path)}))
    print(f"champion: {name} from {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}", flush=True)
    return [str(u) for u in data.user_ids], [str(i) for i in data.item_ids]


async def level(
    url: str, clients: int, seconds: float, warmup: float, users, items, seed: int, keep_alive: bool = False
) -> dict:
    import aiohttp

    rng = random.Random(seed)
    latencies: list[float] = []
    errors = 0

    def body() -> bytes:
        now = int(time.time())
        record = {
            "user_id": rng.choice(users),
            "history": [rng.choice(items), rng.choice(items)],
            "event_types": ["review", "review"],
            "timestamps": [now - 60, now],
        }
        return json.dumps({"dataframe_records": [record], "params": {"k": 10}}).encode()

    async def client(session, start: float, stop: float):
        nonlocal errors
        while (t0 := time.perf_counter()) < stop:
            async with session.post(
                f"{url}/invocations", data=body(), headers={"Content-Type": "application/json"}
            ) as r:
                await r.read()
                ok = r.status == 200
            if t0 >= start:
                latencies.append(time.perf_counter() - t0)
                errors += not ok

    # A connection per request (as clients behind a load balancer arrive): the kernel hands
    # each to whichever server worker accepts first. With keep-alive, the 8 connections opened
    # at once all went to one worker (its accept loop took the burst): 55 requests/s, not 120.
    connector = aiohttp.TCPConnector(limit=clients, force_close=not keep_alive)
    cpu = []  # the load generator's CPU seconds at the start and the end of the measured window

    async def clock(start: float, stop: float):
        for t in (start, stop):
            await asyncio.sleep(max(0.0, t - time.perf_counter()))
            cpu.append(time.process_time())

    async with aiohttp.ClientSession(connector=connector) as session:
        t = time.perf_counter()
        start, stop = t + warmup, t + warmup + seconds
        await asyncio.gather(clock(start, stop), *(client(session, start, stop) for _ in range(clients)))
    client_cpu_s = cpu[1] - cpu[0]
    lat = np.array(latencies) * 1000
    return {
        "clients": clients,
        "requests": len(lat),
        "errors": errors,
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1),
        "rps": round(len(lat) / seconds, 1),
        "client_cpu_ms": round(1000 * client_cpu_s / max(1, len(lat) + errors), 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lake", default=str(ROOT / "bench" / "out" / "quality"), help="a lake with a final fit")
    p.add_argument("--family", default="bert")
    p.add_argument("--spec", default=str(ROOT / "specs" / "amazon_beauty.yaml"), help="the log the fit was trained on")
    p.add_argument("--out", default=str(ROOT / "bench" / "out" / "serve"), help="MLflow home (emptied)")
    p.add_argument(
        "--data-lake", default=str(ROOT / "bench" / "out" / "serve-data"), help="the log's layers (kept, reused)"
    )
    p.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--workers", type=int, default=4, help="server processes (interestflow serve's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--keep-alive", action="store_true", help="reuse each client's connection (default: one per request)"
    )
    args = p.parse_args()
    quiet_env()
    out = fresh_home(args.out)
    users, items = register(Path(args.lake).resolve(), args.family, args.spec, out, args.data_lake)
    from testkit.faults import model_server

    rows = []
    with model_server(args.family, out, workers=args.workers) as url:
        for c in args.levels:
            run = level(url, c, args.seconds, args.warmup, users, items, args.seed + c, args.keep_alive)
            rows.append(asyncio.run(run))
            r = rows[-1]
            print(
                f"{c:>3} clients: p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  "
                f"{r['rps']:7.1f} requests/s  ({r['requests']} requests, {r['errors']} errors; "
                f"load generator {r['client_cpu_ms']:.1f} ms CPU a request)",
                flush=True,
            )
    summary = {"family": args.family, "workers": args.workers, "seconds": args.seconds, "keep_alive": args.keep_alive}
    for r in rows:
        c = r["clients"]
        summary.update({f"p50_ms_c{c}": r["p50_ms"], f"p99_ms_c{c}": r["p99_ms"], f"rps_c{c}": r["rps"]})
        summary[f"errors_c{c}"] = r["errors"]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
