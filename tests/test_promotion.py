"""Code tests: the pure promotion decision."""

from components.promotion import GateConfig, decide

CHAMP = {"ndcg10": 0.030, "hr10": 0.050, "mrr": 0.025}


def test_first_model_becomes_champion():
    assert decide(CHAMP, None).promote


def test_better_challenger_is_promoted_and_worse_is_not():
    better = {"ndcg10": 0.031, "hr10": 0.051, "mrr": 0.026}
    worse = {"ndcg10": 0.029, "hr10": 0.060, "mrr": 0.030}
    assert decide(better, CHAMP).promote
    d = decide(worse, CHAMP)
    assert not d.promote and "ndcg10" in d.reason


def test_min_gain_is_required():
    slightly = {"ndcg10": 0.0303, "hr10": 0.05, "mrr": 0.025}
    assert decide(slightly, CHAMP, GateConfig(min_gain=0.0)).promote
    assert not decide(slightly, CHAMP, GateConfig(min_gain=0.05)).promote


def test_guarded_metric_regression_blocks_promotion():
    d = decide({"ndcg10": 0.035, "hr10": 0.040, "mrr": 0.026}, CHAMP, GateConfig(tolerance=0.05))
    assert not d.promote and "hr10" in d.reason


def test_champion_that_cannot_be_rescored_is_kept():
    d = decide({"ndcg10": 0.9, "hr10": 0.9, "mrr": 0.9}, None, champion_error="model file missing")
    assert not d.promote and "could not be re-scored" in d.reason
