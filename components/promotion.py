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
    metric: str = "ndcg10"
    """The primary metric the decision compared."""

    @property
    def outcome(self) -> str:
        """The decision as its tag value: promoted or rejected."""
        return "promoted" if self.promote else "rejected"

    @property
    def verdict(self) -> str:
        """The decision in words: promoted to champion, or not promoted."""
        return "promoted to champion" if self.promote else "not promoted"

    def as_dict(self) -> dict:
        return asdict(self)


def decide(
    challenger: dict, champion: dict | None, gate: GateConfig = GateConfig(), champion_error: str | None = None
) -> Decision:
    """Pure: should ``challenger`` replace ``champion`` (metric dicts on the same holdout)?"""
    p = gate.primary
    if champion_error:
        return Decision(False, f"champion could not be re-scored ({champion_error}); keeping it", challenger, None, p)
    if champion is None:
        return Decision(True, "no champion yet", challenger, None, p)
    need = champion[p] * (1 + gate.min_gain)
    if challenger[p] < need:
        return Decision(
            False,
            f"{p} {challenger[p]:.4f} < champion {champion[p]:.4f} x (1 + {gate.min_gain})",
            challenger,
            champion,
            p,
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
                p,
            )
    return Decision(
        True, f"{p} {challenger[p]:.4f} >= champion {champion[p]:.4f} x (1 + {gate.min_gain})", challenger, champion, p
    )


def _rounded(value):
    """A figure as a tag: 4 digits (the registry shows tags as text)."""
    return round(value, 4) if isinstance(value, float) else value


def apply(name: str, version: str, decision: Decision, run_id: str) -> None:
    """Carry a decision out: move ``champion`` if promoted; record it on the run and version."""
    tags = {
        "promotion.decision": decision.outcome,
        "promotion.reason": decision.reason,
        f"promotion.champion_{decision.metric}": _rounded((decision.champion or {}).get(decision.metric, "none")),
        f"promotion.challenger_{decision.metric}": _rounded(decision.challenger.get(decision.metric)),
    }
    tracking.set_tags(run_id, tags)
    tracking.set_version_tags(name, version, tags)
    if decision.promote:
        move_champion(name, version)
    note(name, version, f"{decision.verdict} by the gate: {decision.reason}")


def move_champion(name: str, version: str) -> str | None:
    """Point ``champion`` at ``version`` (one atomic alias update: the model is never without
    a champion) and remember the one it replaced, for a rollback. Returns that version."""
    previous = tracking.alias_version(name, tracking.CHAMPION)
    if previous == version:
        return previous
    tracking.set_version_tags(name, version, {"promotion.previous_champion": previous or "none"})
    tracking.set_alias(name, tracking.CHAMPION, version)
    return previous


def promote_version(family: str, version: str, reason: str) -> dict:
    """Make ``version`` of a family's registered model the champion by hand (with a reason)."""
    if not reason.strip():
        raise ValueError("a manual promotion needs a reason (it is recorded on the version)")
    name = tracking.model_name(family)
    status = tracking.version_status(name, str(version))  # raises if the version does not exist
    if status != "READY":
        raise ValueError(f"{name} v{version} is {status}, not READY: not promoted")
    previous = move_champion(name, str(version))
    tracking.set_version_tags(name, str(version), {"promotion.decision": "manual", "promotion.reason": reason})
    was = "no champion before" if previous is None else f"was v{previous}"
    note(name, str(version), f"champion by hand ({was}): {reason}")
    return {"name": name, "champion": str(version), "previous": previous, "reason": reason}


def note(name: str, version: str, event: str) -> None:
    """Add a dated line to the version's description (what happened to it, and why)."""
    import time

    text = tracking.version_description(name, version)
    line = f"{time.strftime('%Y-%m-%d')}: {event}"
    if not text.endswith(line):  # the same decision again (a re-run): once is enough
        tracking.describe_version(name, version, f"{text}\n\n{line}".strip())


def rollback(family: str, reason: str) -> dict:
    """Give ``champion`` back to the version it replaced; the current one is tagged rolled back.

    With no earlier champion to return to, nothing changes and the error says so.
    """
    if not reason.strip():
        raise ValueError("a rollback needs a reason (it is recorded on the version)")
    name = tracking.model_name(family)
    current = tracking.alias_version(name, tracking.CHAMPION)
    if current is None:
        raise ValueError(f"{name} has no champion: nothing to roll back")
    previous = tracking.version_tags(name, current).get("promotion.previous_champion", "none")
    if previous == "none":
        raise ValueError(f"{name} v{current} has no earlier champion recorded: nothing to roll back to")
    tracking.set_alias(name, tracking.CHAMPION, previous)
    tracking.set_version_tags(name, current, {"promotion.rolled_back": reason})
    tracking.set_version_tags(name, previous, {"promotion.decision": "rollback", "promotion.reason": reason})
    note(name, current, f"rolled back to v{previous}: {reason}")
    note(name, previous, f"champion again by a rollback from v{current}: {reason}")
    return {"name": name, "champion": previous, "previous": current, "reason": reason}
