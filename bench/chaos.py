"""Chaos on a slice of Beauty: faults injected, bad inputs tried; does interestflow lose
anything or promote anything wrongly?

Scenarios (the fault machinery is testkit/faults.py, shared with the tests):
1. S3 faults: the nightly flow with its lake on a real SeaweedFS behind a fault-injecting
   proxy; the first PUTs of the raw layer fail beyond boto3's own retries (the task is
   retried), dataset and checkpoint requests fail within them.
2. Registry down: a second night (new settings, so it trains) with the MLflow server
   refusing every registry write: the flow must fail, and the champion must not move.
3. A training SIGKILLed after its first checkpoint: the retry must resume from it and
   register the model once.
4. Every kind of testkit/faults.py's bad-input catalogue against a lake with a champion:
   a kind to be rejected runs the real CLI (``interestflow train`` in its own process, as
   an operator runs it) and must exit 2 with a message naming file (or spec key), column,
   rule and example, without a traceback; a kind to be warned about (or handled as it
   is) runs the data stages and must say so in a warning. None may change the lake or
   the registry.
5. The promotion gate on 20,000 random metric pairs and 24 racing manual promotions.

Ends with one JSON line: faults_injected, faults_survived, bad_inputs_tried,
bad_inputs_rejected, bad_inputs_warned, bad_inputs_accepted (valid input that looks odd,
handled as it is), wrong_promotions (must be 0), records_lost (must be 0),
network_attempts (non-loopback connections, this process's and the CLI runs', must be 0)
and tracebacks (CLI rejections that printed one, must be 0).

    .venv/bin/python bench/chaos.py --out bench/out/chaos [--users 300]

The slice is the first users of the shipped sample (data/sample, 2,000 Beauty users).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from _common import fresh_home, quiet_env

from testkit.netguard import sitecustomize as netguard  # the CLI runs' audit hook, for this process too

NIGHT = dict(families=["mf"], folds=2, max_epochs=3, patience=2, seed=0, profiles=False)
NIGHT_ARGS = ["train", "--families", "mf", "--folds", "2", "--max-epochs", "3", "--patience", "2", "--seed", "0"]
NETWORK: list[str] = []  # non-loopback connection attempts of this process


def _watch_network(event: str, args: tuple) -> None:
    """Audit hook: every non-loopback connection attempt of this process (it only records)."""
    seen = netguard.non_loopback(event, args)
    if seen:
        NETWORK.append(seen)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--users", type=int, default=300, help="users of the shipped Beauty sample")
    args = ap.parse_args()
    quiet_env()
    sys.addaudithook(_watch_network)
    home = fresh_home(args.out)
    os.environ["INTERESTFLOW_MODEL_PREFIX"] = "chaos"
    from prefect.testing.utilities import prefect_test_harness

    from components import promotion, storage, tracking
    from flows.nightly import nightly
    from testkit import faults
    from testkit.slices import sample_frames, write_slice  # the shipped sample: 2,000 Beauty users

    t0 = time.perf_counter()

    ev, items = sample_frames(args.users)
    spec = write_slice(home / "src", ev, items, name="chaos")
    print(f"slice: {ev['user_id'].nunique()} users, {len(ev)} events, {len(items)} items")
    tally = {"faults_injected": 0, "faults_survived": 0, "wrong_promotions": 0, "records_lost": 0}
    rows = []

    def record(name: str, injected: int, survived: bool, note: str) -> None:
        tally["faults_injected"] += injected
        tally["faults_survived"] += injected if survived else 0
        rows.append((name, injected, "survived" if survived else "NOT SURVIVED", note))
        print(f"  {name}: {injected} injected, {'survived' if survived else 'NOT SURVIVED'} ({note})", flush=True)

    with prefect_test_harness(server_startup_timeout=120):
        # 1 + 2: S3 faults, then the registry down, against real servers behind the proxy.
        with (
            faults.seaweed(home / "seaweed") as bucket,
            faults.mlflow_server(home / "mlflow-server", f"{bucket}/mlartifacts") as mlflow_uri,
        ):
            s3_rules = [
                faults.Rule("PUT", "/chaoslake/01_raw/", times=6),
                faults.Rule("GET", "/chaoslake/04_datasets/", times=3),
                faults.Rule("PUT", "/chaoslake/05_models/", times=2),
            ]
            down = faults.Rule(None, "registered-models/create|model-versions/create", times=0)
            lake = storage.join(bucket, "chaoslake")
            with (
                faults.FaultProxy(faults.S3_PORT, s3_rules) as s3,
                faults.FaultProxy(int(mlflow_uri.rsplit(":", 1)[1]), [down]) as mlf,
            ):
                os.environ.update({"INTERESTFLOW_S3_ENDPOINT_URL": s3.url, "MLFLOW_TRACKING_URI": mlf.url})
                os.environ.update({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0"})
                storage.reset_clients()
                try:
                    out = nightly(spec=str(spec), lake=lake, **NIGHT)
                    ok = out.results[0].decision.promote
                    layer = storage.join(lake, "02_validated", f"chaos-{out.data_hash}", "events")
                    tally["records_lost"] += len(ev) - sum(storage.partitions(layer).values())
                    note = f"flow completed, champion v{tracking.alias_version('chaos-mf', 'champion')}"
                except Exception as e:  # noqa: BLE001 - a failure here is the finding
                    ok, note = False, f"{type(e).__name__}: {str(e)[:200]}"
                record("S3 request failures (PUT raw, GET datasets, PUT checkpoints)", s3.injected, ok, note)
                champion = tracking.alias_version("chaos-mf", "champion")
                versions = len(tracking.client().search_model_versions("name='chaos-mf'"))
                down.times = None
                try:
                    nightly(spec=str(spec), lake=lake, **{**NIGHT, "max_epochs": 4})
                    failed_clearly, note = False, "the flow completed although the registry was down"
                except tracking.RegistryUnavailable as e:
                    failed_clearly, note = True, str(e).splitlines()[0][:160]
                except Exception as e:  # noqa: BLE001
                    failed_clearly, note = False, f"unclear failure {type(e).__name__}: {str(e)[:160]}"
                moved = tracking.alias_version("chaos-mf", "champion") != champion
                added = len(tracking.client().search_model_versions("name='chaos-mf'")) - versions
                tally["wrong_promotions"] += int(moved)
                record(
                    "MLflow registry refusing writes", mlf.injected, failed_clearly and not moved and not added, note
                )
            for k in ("INTERESTFLOW_S3_ENDPOINT_URL", "MLFLOW_TRACKING_URI"):
                os.environ.pop(k, None)
            storage.reset_clients()

        # 3 + 4 + 5 on a local lake and the embedded registry.
        local = home / "lake"
        first = nightly(spec=str(spec), lake=str(local), **NIGHT)
        assert first.results[0].decision.promote, first.results[0].decision
        good = storage.join(str(local / "02_validated"), f"chaos-{first.data_hash}", "events")
        validated = storage.read_partitioned(good)
        tally["records_lost"] += len(ev) - len(validated)

        os.environ["INTERESTFLOW_MODEL_PREFIX"] = "chaoskill"
        got = faults.killed_final_fit(str(spec), str(local), epochs=20)
        final, once = got["final"], got["versions"]
        ok = got["killed"] and (final.resumed_from_epoch or 0) >= 1 and once == [final.run_id]
        record(
            "training process SIGKILLed mid-fit",
            int(got["killed"]),
            ok,
            f"resumed after epoch {final.resumed_from_epoch}, registered {len(once)}x",
        )
        os.environ["INTERESTFLOW_MODEL_PREFIX"] = "chaos"

        tried = rejected = warned = accepted = 0
        registry = faults.registry_state("chaos")
        # The CLI runs talk to this process's Prefect server (no ephemeral server each) and
        # share its home: the same lake, registry and run lock.
        from prefect.settings import PREFECT_API_URL

        cli_env = {"PREFECT_API_URL": PREFECT_API_URL.value(), "INTERESTFLOW_MODEL_PREFIX": "chaos"}
        cli_runs: list[dict] = []
        cli = faults.cli_nightly([*NIGHT_ARGS, "--lake", str(local), "--no-profiles"], cli_env, cli_runs)
        print(f"bad inputs ({len(faults.BAD_INPUTS)} kinds; rejections through the CLI):")
        for name, bad in faults.BAD_INPUTS.items():
            n_runs = len(cli_runs)
            got = faults.try_bad_input(
                bad, home / "bad" / re.sub(r"[^A-Za-z0-9_.-]+", "_", name), ev, items, local, cli
            )
            clear = got["outcome"] == bad.outcome and not got["missing"] and not got["changed"]
            clear &= got["quarantined"] == (bad.outcome == "reject")
            clear &= not any(r["traceback"] or r["network"] for r in cli_runs[n_runs:])
            tried += 1
            rejected += int(clear and bad.outcome == "reject")
            warned += int(clear and bad.outcome == "warn")
            accepted += int(clear and bad.outcome == "accept")
            tally["records_lost"] += len(got["changed"])
            first_line = got["message"].splitlines()[0][:150] if got["message"] else ""
            print(f"  {'ok ' if clear else 'BAD'} {name}: {got['outcome']} — {first_line}")
        now = faults.registry_state("chaos")
        if now != registry:
            tally["wrong_promotions"] += 1
            print(
                "registry changed:",
                {k: (registry.get(k), now.get(k)) for k in set(now) | set(registry) if registry.get(k) != now.get(k)},
            )
        tally["records_lost"] += len(validated) - len(storage.read_partitioned(good))

        # 5: the gate on random metric pairs, and racing manual promotions.
        rng, gate_wrong = random.Random(0), 0
        for _ in range(20_000):
            champ = {m: rng.uniform(0.001, 0.2) for m in ("ndcg10", "hr10", "mrr")}
            chall = {m: max(0.0, v * rng.uniform(0.8, 1.2)) for m, v in champ.items()}
            gate = promotion.GateConfig(min_gain=rng.choice([0.0, 0.01, 0.05]), tolerance=rng.choice([0.0, 0.05, 0.1]))
            d = promotion.decide(chall, champ, gate)
            worse = chall["ndcg10"] < champ["ndcg10"] * (1 + gate.min_gain) or any(
                chall[m] < champ[m] * (1 - gate.tolerance) for m in gate.guarded
            )
            gate_wrong += int(d.promote and worse)
        versions = [str(v.version) for v in tracking.client().search_model_versions("name='chaos-mf'")]
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(lambda v: promotion.promote_version("mf", v, f"race {v}"), versions * 12))
        champion = tracking.alias_version("chaos-mf", "champion")
        tally["wrong_promotions"] += gate_wrong + int(champion not in versions)
        print(f"gate: {gate_wrong} wrong of 20000 random pairs; after 24 racing promotions the champion is v{champion}")

    tally.update(
        {
            "bad_inputs_tried": tried,
            "bad_inputs_rejected": rejected,
            "bad_inputs_warned": warned,
            "bad_inputs_accepted": accepted,
            "network_attempts": len(NETWORK) + sum(len(r["network"]) for r in cli_runs),
            "tracebacks": sum(r["traceback"] for r in cli_runs if r["code"] == 2),
        }
    )
    if tally["network_attempts"]:
        print("network attempts:", NETWORK[:5], [r["network"][:3] for r in cli_runs if r["network"]][:5])
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    keys = (
        "faults_injected",
        "faults_survived",
        "bad_inputs_tried",
        "bad_inputs_rejected",
        "bad_inputs_warned",
        "bad_inputs_accepted",
        "wrong_promotions",
        "records_lost",
        "network_attempts",
        "tracebacks",
    )
    print(json.dumps({k: tally[k] for k in keys}))


if __name__ == "__main__":
    main()
