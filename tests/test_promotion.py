"""Code tests: the pure promotion decision."""

from hypothesis import given, settings
from hypothesis import strategies as st

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


metric = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
metrics_dict = st.fixed_dictionaries({"ndcg10": metric, "hr10": metric, "mrr": metric})


@settings(max_examples=300, deadline=None)
@given(
    challenger=metrics_dict,
    champion=metrics_dict,
    min_gain=st.floats(0, 0.5),
    tolerance=st.floats(0, 0.5),
    error=st.one_of(st.none(), st.text(min_size=1, max_size=20)),
)
def test_gate_never_promotes_a_worse_challenger(challenger, champion, min_gain, tolerance, error):
    gate = GateConfig(min_gain=min_gain, tolerance=tolerance)
    d = decide(challenger, champion, gate, champion_error=error)
    if error:
        assert not d.promote  # a champion that could not be re-scored is never silently replaced
    if d.promote:
        assert challenger["ndcg10"] >= champion["ndcg10"] * (1 + min_gain)
        for m in gate.guarded:
            assert challenger[m] >= champion[m] * (1 - tolerance)
    elif not error:  # a refusal always says why, naming the metric
        assert any(m in d.reason for m in ("ndcg10", *gate.guarded))
