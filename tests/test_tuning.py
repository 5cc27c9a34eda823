"""Tuning (components/tuning.py, DESIGN.md §11): search spaces that make valid configs, and a
real two-trial Optuna study on the shipped shop log: real trainings as child MLflow
runs, a pruned trial, no test target touched, and settings the next nightly run trains with.
(A study stopped by a signal and resumed: tests/test_operators.py, through the CLI.)"""

from __future__ import annotations

import itertools

import optuna
import pytest
from conftest import ROOT

from components import evaluation, pipeline, tracking, training, tuning
from components.config import TrainConfig
from components.datasets import Dataset
from components.models import MODELS
from components.models.contract import Search


@pytest.mark.parametrize("family", list(MODELS))
def test_every_corner_of_each_search_space_is_a_valid_config(family):
    """Each range's ends and each choice, in every combination, build the family's Config."""
    dists = tuning.distributions(family)
    assert set(dists) == set(MODELS[family].search_space) and dists
    corners = {}
    for name, d in dists.items():
        corners[name] = d.choices if isinstance(d, optuna.distributions.CategoricalDistribution) else (d.low, d.high)
        default = getattr(MODELS[family].Config(), name)
        if not isinstance(d, optuna.distributions.CategoricalDistribution):  # the field's type decides
            assert isinstance(d, optuna.distributions.IntDistribution) == isinstance(default, int)
    for values in itertools.product(*corners.values()):
        MODELS[family].Config(**dict(zip(corners, values, strict=True)))


def test_a_search_range_is_either_bounds_or_choices():
    for bad in (dict(), dict(low=1, high=2, choices=(1,)), dict(low=2, high=1), dict(low=0, high=1, log=True)):
        with pytest.raises(ValueError, match="Search"):
            Search(**bad)


def test_enqueued_settings_are_checked_queued_once_and_tried_first():
    """``--enqueue``: settings outside the search space are refused before anything is queued;
    queued settings are the next trials' (fields left out are drawn); the same settings
    given again (a resumed study) are not queued twice."""
    study = optuna.create_study(direction="maximize")
    space = tuning.distributions("bert")
    for bad, says in (
        ({"width": 64}, r"\['width'\] not searched"),
        ({"dim": 96}, r"dim=96 is outside the search space \[32, 64, 128, 256\]"),
        ({"dropout": 0.95}, r"dropout=0.95 is outside the search space \[0.1, 0.7\]"),
    ):
        with pytest.raises(ValueError, match=says):
            tuning.enqueue(study, "bert", ({"dim": 128}, bad))
        assert not study.trials
    with pytest.raises(ValueError, match="id_dropout"):  # the family refuses it with the fixed overrides
        tuning.enqueue(study, "bert", ({"id_dropout": 0.2},), {"fusion": "text"})
    settings = ({"dim": 128, "dropout": 0.5}, {"dim": 256, "heads": 4})
    assert tuning.enqueue(study, "bert", settings) == list(settings)
    assert tuning.enqueue(study, "bert", settings) == []
    first, second = study.ask(space), study.ask(space)
    assert (first.params["dim"], first.params["dropout"]) == (128, 0.5) and set(first.params) == set(space)
    assert (second.params["dim"], second.params["heads"]) == (256, 4)


def test_a_field_fixed_by_the_model_overrides_is_not_searched():
    """``--model '{"text": true}'`` keeps text on in every trial: the field leaves the search
    space (a sampler drawing it would train text off), and an enqueued setting naming it is
    refused."""
    assert "text" in tuning.distributions("cnn")
    space = tuning.distributions("cnn", {"text": True})
    assert "text" not in space and set(space) == set(tuning.distributions("cnn")) - {"text"}
    study = optuna.create_study(direction="maximize")
    with pytest.raises(ValueError, match=r"\['text'\] not searched"):
        tuning.enqueue(study, "cnn", ({"dim": 64, "text": False},), {"text": True})
    assert tuning.enqueue(study, "cnn", ({"dim": 64},), {"text": True}) == [{"dim": 64}]
    assert "text" not in study.ask(space).params


# On the shipped Taobao log (purchase targets, viewed items rankable): GOOD's validation
# NDCG@10 is about 0.12 from its second epoch; STUCK's stays 0 for four (2026-12-07).
GOOD = {"dim": 64, "lr": 0.05, "alpha": 20.0, "reg": 0.2}
STUCK = {"dim": 32, "lr": 0.001, "alpha": 1.0, "reg": 2.0}


@pytest.mark.slow
def test_a_two_trial_study_prunes_the_worse_and_the_next_nightly_trains_with_the_best(tmp_path, monkeypatch):
    """Two trials (the second's settings barely learn): each a real fold training and a child
    run of the study's run; the second is pruned below the first's curve; only fold
    trainings ran and no test split was read; the best settings become v1, and the next
    nightly run trains and registers with them."""
    monkeypatch.setenv("INTERESTFLOW_MODEL_PREFIX", "tune")
    spec = ROOT / "specs" / "taobao_shipped.yaml"
    root = str(tmp_path / "lake")
    s = tuning.TuneSettings(
        family="mf",
        trials=2,
        folds=1,
        train=TrainConfig(max_epochs=4, patience=4),
        enqueue=(GOOD, STUCK),
        study=tuning.StudyConfig(prune_after_trials=1, prune_warmup_epochs=0),
    )
    study = tuning.open_study(tuning.study_name("taobao_shipped", "mf"), s.study)

    launched, real_launch, real_view, real_test = {}, training.launch, Dataset.view, evaluation.test_report

    def launch(request, *args, **kwargs):  # the real training, its request recorded (launch calls itself once)
        launched[request["run_id"]] = (request["stage"], request["fold"])
        return real_launch(request, *args, **kwargs)

    def view(self, stage, fold=None):
        assert stage == "fold", f"a study read the {stage!r} view"
        return real_view(self, stage, fold)

    def no_test(*args, **kwargs):
        raise AssertionError("a study scored on test targets")

    monkeypatch.setattr(training, "launch", launch)
    monkeypatch.setattr(Dataset, "view", view)
    monkeypatch.setattr(evaluation, "test_report", no_test)
    out = pipeline.tune(str(spec), root, s)
    monkeypatch.setattr(training, "launch", real_launch)
    monkeypatch.setattr(Dataset, "view", real_view)
    monkeypatch.setattr(evaluation, "test_report", real_test)

    assert sorted(launched.values()) == [("fold", 0), ("fold", 0)]  # test targets never enter a study
    states = {t.number: t.state for t in study.get_trials()}
    assert states == {0: optuna.trial.TrialState.COMPLETE, 1: optuna.trial.TrialState.PRUNED}, states
    assert out.ran == 2 and out.finished == 2 and out.best["trial"] == 0
    children = tracking.client().search_runs([tracking.experiment_id()], f"tags.`mlflow.parentRunId` = '{out.run_id}'")
    status = {r.data.tags["interestflow.trial"]: r.info.status for r in children}
    assert status == {"0": "FINISHED", "1": "KILLED"}
    assert all(r.data.params["stage"] == "fold" for r in children)
    parent = tracking.client().get_run(out.run_id)
    assert parent.data.metrics["trials_pruned"] == 1 and parent.data.metrics["best_val_ndcg10"] > 0
    artifacts = {a.path for a in tracking.client().list_artifacts(out.run_id)}
    assert {"optimization_history.png", "intermediate_values.png", "trials.json"} <= artifacts

    tuned = tuning.read_settings(root, "taobao_shipped", "mf")
    assert tuned == out.settings and tuned.version == 1 and tuned.model == GOOD and tuned.trial == 0
    # a second look at the same study writes no new version
    assert tuning.write_settings(root, "taobao_shipped", "mf", study, "x", out.run_id).version == 1

    night = pipeline.nightly(
        str(spec),
        root,
        pipeline.NightlySettings(
            families=("mf",), folds=1, train=TrainConfig(max_epochs=1, patience=1), profiles=False
        ),
    )
    result = night.results[0]
    final = tracking.client().get_run(result.report.run_id)
    assert final.data.params["model.dim"] == "64" and final.data.params["model.lr"] == "0.05"
    assert final.data.tags["interestflow.tuned_settings"] == tuned.label
    assert tracking.version_tags(result.registered.name, result.registered.version)["tuned_settings"] == tuned.label
