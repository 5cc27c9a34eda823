"""Manual promotion and rollback against a real MLflow registry (SQLite, temp folder)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from components import promotion, pyfunc, tracking
from components.models import MODELS
from components.recommender import Recommender

FAMILY = "mf"


@pytest.fixture
def versions(monkeypatch, request):
    """Three registered versions of a tiny mf model under a prefix of this test's own."""
    monkeypatch.setenv("INTERESTFLOW_MODEL_PREFIX", f"ops-{request.node.name[:40]}")
    cls = MODELS[FAMILY]
    torch.manual_seed(0)
    model = cls(cls.Config(dim=4), 12, 3)
    rec = Recommender(
        FAMILY, dict(model.config.__dict__), model.state_dict(), np.array(list("abcdefghijkl")), np.array(list("xyz"))
    )
    example = pd.DataFrame({"user_id": ["x"], "history": [["a"]]})
    run_id = tracking.create_run("ops", {}, {"test": "registry-ops"})
    uri = pyfunc.log(run_id, rec, example)
    name = tracking.model_name(FAMILY)
    return name, [tracking.register(uri, name, {}) for _ in range(3)]


def champion(name):
    return tracking.alias_version(name, tracking.CHAMPION)


def test_promote_then_rollback_walks_back_and_never_leaves_no_champion(versions):
    name, (v1, v2, v3) = versions
    promotion.promote_version(FAMILY, v1, "first")
    assert champion(name) == v1
    promotion.promote_version(FAMILY, v2, "better offline")
    promotion.move_champion(name, v3)  # as the nightly gate does
    assert champion(name) == v3
    out = promotion.rollback(FAMILY, "v3 hurt conversion")
    assert out == {"name": name, "champion": v2, "previous": v3, "reason": "v3 hurt conversion"}
    assert champion(name) == v2
    assert tracking.client().get_model_version(name, v3).tags["promotion.rolled_back"] == "v3 hurt conversion"
    assert promotion.rollback(FAMILY, "and v2 too")["champion"] == v1
    with pytest.raises(ValueError, match="no earlier champion"):
        promotion.rollback(FAMILY, "nothing before v1")
    assert champion(name) == v1  # a refused rollback changes nothing


def test_bad_manual_promotions_are_refused_and_change_nothing(versions):
    name, (v1, _, _) = versions
    with pytest.raises(ValueError, match="no champion"):
        promotion.rollback(FAMILY, "nothing yet")
    promotion.promote_version(FAMILY, v1, "first")
    with pytest.raises(ValueError, match="reason"):
        promotion.promote_version(FAMILY, v1, "  ")
    with pytest.raises(Exception, match="(?i)not found|does not exist|RESOURCE_DOES_NOT_EXIST"):
        promotion.promote_version(FAMILY, "99", "no such version")
    assert champion(name) == v1


def test_racing_promotions_leave_exactly_one_champion(versions):
    """Three promotions at once (threads, one SQLite registry): all succeed, one champion."""
    from concurrent.futures import ThreadPoolExecutor

    name, vs = versions
    with ThreadPoolExecutor(6) as pool:  # every call must succeed (the loser of a collision retries)
        list(pool.map(lambda v: promotion.promote_version(FAMILY, v, f"race {v}"), vs * 4))
    holders = [v for v in vs if tracking.alias_version(name, tracking.CHAMPION) == v]
    assert len(holders) == 1
    aliases = [a for v in vs for a in tracking.client().get_model_version(name, v).aliases if a == "champion"]
    assert len(aliases) == 1


def test_warm_start_comes_from_a_compatible_champion_of_other_data_only(monkeypatch):
    """A champion trained on other data with the same model settings is where a final fit
    starts; one trained on today's data (a re-run of the night) or with other sizes is not."""
    from types import SimpleNamespace

    from components import pipeline
    from components.config import TrainConfig

    monkeypatch.setenv("INTERESTFLOW_MODEL_PREFIX", "warm-start")
    cls = MODELS[FAMILY]
    model = cls(cls.Config(dim=4), 12, 3)
    rec = Recommender(
        FAMILY, dict(model.config.__dict__), model.state_dict(), np.array(list("abcdefghijkl")), np.array(list("xyz"))
    )
    run_id = tracking.create_run("warm", {}, {"test": "warm-start"})
    uri = pyfunc.log(run_id, rec, pd.DataFrame({"user_id": ["x"], "history": [["a"]]}))
    name = tracking.model_name(FAMILY)
    today = SimpleNamespace(data_hash="today")
    assert pipeline.warm_start_from(today, FAMILY, TrainConfig(model={"dim": 4})) is None  # no champion yet
    tracking.set_alias(name, tracking.CHAMPION, tracking.register(uri, name, {"data_hash": "yesterday"}))
    start = pipeline.warm_start_from(today, FAMILY, TrainConfig(model={"dim": 4}, lr=0.5))
    assert (
        start is not None and start.label == f"{name} v1" and start.model_uri == f"models:/{name}/1"
    )  # the version, not the alias
    assert pipeline.warm_start_from(today, FAMILY, TrainConfig(model={"dim": 8})) is None  # other shapes
    assert (
        pipeline.warm_start_from(SimpleNamespace(data_hash="yesterday"), FAMILY, TrainConfig(model={"dim": 4})) is None
    )
