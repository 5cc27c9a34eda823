"""The promotion gate (DESIGN.md §5): a pure decision, and the registry calls that carry it out.

The challenger becomes ``champion`` only if its test NDCG@10 >= champion's x (1 + min_gain)
and no guarded metric falls more than ``tolerance`` (relative) below the champion's, both
scored on *today's* holdout. A champion that cannot be re-scored is never replaced
silently: the challenger is not promoted and the reason says why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from components import tracking


@dataclass(frozen=True)
class GateConfig:
    min_gain: float = 0.0
    """Relative NDCG@10 gain the challenger needs over the champion."""
    guarded: tuple[str, ...] = ("hr10", "mrr")
    """Metrics that may not regress beyond ``tolerance``."""
    tolerance: float = 0.05
    """Allowed relative regression of a guarded metric."""
    primary: str = "ndcg10"


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    challenger: dict
    champion: dict | None

    def as_dict(self) -> dict:
        return asdict(self)


def decide(
    challenger: dict, champion: dict | None, gate: GateConfig = GateConfig(), champion_error: str | None = None
) -> Decision:
    """Pure: should ``challenger`` replace ``champion`` (metric dicts on the same holdout)?"""
    if champion_error:
        return Decision(False, f"champion could not be re-scored ({champion_error}); keeping it", challenger, None)
    if champion is None:
        return Decision(True, "no champion yet", challenger, None)
    p, need = gate.primary, champion[gate.primary] * (1 + gate.min_gain)
    if challenger[p] < need:
        return Decision(
            False, f"{p} {challenger[p]:.4f} < champion {champion[p]:.4f} x (1 + {gate.min_gain})", challenger, champion
        )
    for m in gate.guarded:
        floor = champion[m] * (1 - gate.tolerance)
        if challenger[m] < floor:
            return Decision(
                False,
                f"guarded {m} {challenger[m]:.4f} regressed below {floor:.4f} "
                f"(champion {champion[m]:.4f}, tolerance {gate.tolerance})",
                challenger,
                champion,
            )
    return Decision(
        True, f"{p} {challenger[p]:.4f} >= champion {champion[p]:.4f} x (1 + {gate.min_gain})", challenger, champion
    )


def apply(name: str, version: str, decision: Decision, run_id: str) -> None:
    """Carry a decision out: move ``champion`` if promoted; record it on the run and version."""
    tags = {
        "promotion.decision": "promoted" if decision.promote else "rejected",
        "promotion.reason": decision.reason,
        "promotion.champion_ndcg10": (decision.champion or {}).get("ndcg10", "none"),
        "promotion.challenger_ndcg10": decision.challenger.get("ndcg10"),
    }
    tracking.set_tags(run_id, tags)
    tracking.set_version_tags(name, version, tags)
    if decision.promote:
        tracking.set_alias(name, tracking.CHAMPION, version)


def run_gate(registered: dict, report: dict, dataset: dict, gate: GateConfig = GateConfig()) -> Decision:
    """Re-score the current champion on today's holdout, decide, and carry the decision out."""
    from components.datasets import Dataset
    from components.evaluation import test_report

    name, version = registered["name"], registered["version"]
    champion_version = tracking.alias_version(name, tracking.CHAMPION)
    champion, error = None, None
    if champion_version is not None and champion_version != version:
        try:
            rec = tracking.load_recommender(f"models:/{name}@{tracking.CHAMPION}")
            champion, _ = test_report(rec, Dataset.load(dataset))
        except Exception as e:  # noqa: BLE001 - any failure to re-score must block promotion
            error = f"{type(e).__name__}: {e}"
    decision = decide(report["test"], champion, gate, error)
    apply(name, version, decision, report["run_id"])
    return decision
