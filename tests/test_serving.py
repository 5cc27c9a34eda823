"""Serving per request (DESIGN.md §10): the served answer, new catalogue items, the real
MLflow model server started by ``interestflow serve``.

The models are built from a slice of the shipped sample with untrained (seeded) weights:
what is tested is the serving path (histories, exclusion, reasons, new items, errors), which
does not depend on how well a model was trained. The text family uses ``fusion="text"``
without item offsets, so an item's score is a function of its text alone and a new item
with a known item's text must score exactly as that item does.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import sample_frames, write_slice

from components import catalogue, lake, pipeline, pyfunc, serving, tracking
from components.datasets import Dataset
from components.models import MODELS
from components.recommender import CatalogueWatch, Recommender
from components.serving import OUTPUT_COLUMNS, ServingTables
from testkit.faults import model_server

PREFIX = "serving-test"
CONFIGS = {
    "bert": {"dim": 16, "layers": 1, "heads": 1, "fusion": "text", "item_bias": False, "popularity_adjust": 0.0},
    "lstm": {"dim": 16, "hidden": 16},
}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    ev, items = sample_frames(80)
    spec = write_slice(root / "src", ev, items, name="serveslice")
    lake_root = str(root / "lake")
    layer = pipeline.data_path(str(spec), lake_root, 1, 0)
    data = Dataset.load(layer)
    version = lake.key(layer.features.text_uri).removeprefix("text-")
    recs = {}
    for family, cfg in CONFIGS.items():
        cls = MODELS[family]
        torch.manual_seed(0)
        config = cls.Config(**cfg)
        from components.training import side_inputs

        model = cls(config, data.n_items, data.n_users, side_inputs(cls, data, data.view("final"), config))
        tables = ServingTables.from_dataset(
            data,
            data.view("final"),
            lake.catalogue_uri(lake_root, "serveslice"),
            version if cls.reads_text(config) else None,
        )
        recs[family] = Recommender(
            family, config.__dict__, model.state_dict(), data.item_ids, data.user_ids, data.behaviour, tables
        )
    return {"root": root, "spec": spec, "lake": lake_root, "data": data, "recs": recs, "events": ev, "items": items}


def _user(data: Dataset, min_events: int = 3) -> str:
    return next(str(u) for u, s in zip(data.user_ids, data.seqs, strict=True) if len(s) >= min_events)


def _frame(**cols) -> pd.DataFrame:
    return pd.DataFrame({k: [v] for k, v in cols.items()})


@pytest.mark.parametrize("family", CONFIGS)
def test_a_request_event_changes_the_ranking_and_is_excluded(served, family):
    rec, data = served["recs"][family], served["data"]
    user = _user(data)
    stored = set(data.item_ids[data.seqs[list(data.user_ids).index(user)]])
    base = serving.answer(rec, _frame(user_id=user), k=10)
    assert list(base.columns) == list(OUTPUT_COLUMNS) and len(base) == 10
    assert (base["source"] == "history").all() and not set(base["item_id"]) & stored
    event = base["item_id"].iloc[0]  # the shopper just viewed the top item
    after = serving.answer(rec, _frame(user_id=user, history=[event], event_types=["review"]), k=10)
    assert event not in set(after["item_id"])  # the exclusion policy (interacted) applies to it
    assert after["item_id"].tolist() != base["item_id"].tolist()
    assert after["note"].iloc[0].endswith("1 from the request")


def test_an_event_the_model_holds_is_not_counted_twice(served):
    rec, data = served["recs"]["lstm"], served["data"]
    user = _user(data)
    u = list(data.user_ids).index(user)
    last = dict(history=[str(data.item_ids[data.seqs[u][-1]])], timestamps=[int(data.ts[u][-1])])
    again = serving.answer(rec, _frame(user_id=user, event_types=["review"], **last), k=10)
    base = serving.answer(rec, _frame(user_id=user), k=10)
    assert again["item_id"].tolist() == base["item_id"].tolist() and again["note"].iloc[0].endswith(
        "0 from the request"
    )


def test_each_reason_is_the_most_similar_history_event(served):
    rec, data = served["recs"]["bert"], served["data"]
    user = _user(data, 4)
    out = serving.answer(rec, _frame(user_id=user), k=5)
    u = list(data.user_ids).index(user)
    v = rec.normalised_item_vectors()
    hist = data.seqs[u][-rec.max_len :]
    for row in out.itertuples():
        sims = v[rec.item_pos[row.item_id]] @ v[hist].T
        assert row.reason_item_id == data.item_ids[hist[len(hist) - 1 - sims[::-1].argmax()]]
        assert row.reason_similarity == pytest.approx(sims.max(), abs=1e-5)
        assert row.reason_event_type == "review" and row.reason_ts.endswith("Z")


def test_unknown_users_and_items_are_answered_and_said_so(served):
    rec = served["recs"]["lstm"]
    known = str(rec.item_ids[3])
    out = serving.answer(rec, _frame(user_id="nobody", history=["no-such-item", known]), k=5)
    assert (out["source"] == "request").all() and out["ignored_items"].iloc[0] == "no-such-item"
    assert "unknown user" in out["note"].iloc[0] and known not in set(out["item_id"])
    pop = serving.answer(rec, _frame(user_id="nobody"), k=5)
    assert (pop["source"] == "popularity").all() and "most popular" in pop["note"].iloc[0]
    counts = rec.popularity()
    assert pop["score"].tolist() == sorted(counts, reverse=True)[:5]


@pytest.mark.parametrize(
    "frame, k, message",
    [
        (_frame(user_id="u", history=["a", "b"], event_types=["view"]), 5, "2 history items but 1 event_types"),
        (_frame(user_id="u", history=["a"], event_types=["glance"]), 5, "not contract types"),
        (_frame(user_id="u", history=["a"], timestamps=["yesterday"]), 5, "unix seconds"),
        (_frame(user_id="u", history=["a"], timestamps=[1764626000000]), 5, "milliseconds"),
        (_frame(user_id="u", history=["a"] * 10_001), 5, "at most 10000"),
        (_frame(user_id="u"), 0, "k must be"),
        (_frame(user_id=""), 5, "user_id is empty"),
    ],
)
def test_bad_requests_name_the_field(served, frame, k, message):
    with pytest.raises(serving.BadRequest, match=message):
        serving.answer(served["recs"]["lstm"], frame, k=k)


def _publish_with_a_new_item(served, twin_of: str) -> str:
    """Today's catalogue: yesterday's plus one new item with ``twin_of``'s texts."""
    items = served["items"]
    twin = items[items["item_id"] == twin_of].assign(item_id="NEW-ITEM-1")
    write_slice(served["root"] / "src", served["events"], pd.concat([items, twin]), name="serveslice")
    out = catalogue.publish(served["spec"], served["lake"])
    assert out.changed and out.embedded == 0  # the twin's text is in the cache already
    return "NEW-ITEM-1"


def test_a_published_new_item_is_ranked_by_its_text_and_id_families_say_they_cannot(served):
    bert, lstm, data = served["recs"]["bert"], served["recs"]["lstm"], served["data"]
    user = _user(data)
    u = list(data.user_ids).index(user)
    twin_of = next(str(i) for i in bert.item_ids if bert.item_pos[str(i)] not in set(data.seqs[u]))
    new = _publish_with_a_new_item(served, twin_of)
    # As a server's worker holds it (a copy: the fixture's model stays as evaluated).
    watch = CatalogueWatch(Recommender.from_bytes(bert.to_bytes()), poll_s=0, for_serving=True)
    now = watch.current()
    assert now.n_items == bert.n_items + 1 and now.item_ids[-1] == new
    assert "_served_encoder" in watch.base.model.__dict__ and "_served_encoder" in now.model.__dict__
    assert "_served_encoder" not in bert.model.__dict__  # outside a server the model scores as evaluated
    top, val = now.rank([user], [data.seqs[u]], [data.types[u]], now.n_items)  # every item, ranked
    score = dict(zip(now.item_ids[top[0]], val[0], strict=True))
    assert np.isfinite(score[new]) and score[new] == pytest.approx(score[twin_of], rel=1e-5)
    assert now.titles()[-1] == served["items"].set_index("item_id").loc[twin_of, "title"]
    id_only = CatalogueWatch(lstm, poll_s=0).current()
    assert id_only.n_items == lstm.n_items
    note = serving.answer(id_only, _frame(user_id=user), k=3)["note"].iloc[0]
    assert "1 catalogue item(s) published after training are not ranked" in note


def _post(url: str, body, timeout: float = 30):
    import httpx

    data = body if isinstance(body, str) else json.dumps(body)
    return httpx.post(f"{url}/invocations", content=data, headers={"Content-Type": "application/json"}, timeout=timeout)


def test_the_real_server_answers_and_refuses_bad_requests_with_4xx(served, tmp_path, monkeypatch):
    monkeypatch.setenv("INTERESTFLOW_MODEL_PREFIX", PREFIX)
    rec, data = served["recs"]["bert"], served["data"]
    run_id = tracking.create_run("serving-test", {}, {"test": "serving"})
    example = pd.DataFrame({"user_id": [str(data.user_ids[0])], "history": [[str(data.item_ids[0])]]})
    uri = pyfunc.log(run_id, rec, example)
    name = tracking.model_name("bert")
    tracking.set_alias(name, tracking.CHAMPION, tracking.register(uri, name, {}))
    user = _user(data)
    env = {"INTERESTFLOW_CATALOGUE_POLL_S": "0"}
    with model_server("bert", tmp_path, env=env) as url:
        ok = _post(url, {"dataframe_records": [{"user_id": user}], "params": {"k": 5}})
        assert ok.status_code == 200, ok.text
        rows = ok.json()["predictions"]
        assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5] and all(r["title"] and r["reason_item_id"] for r in rows)
        direct = serving.answer(rec, _frame(user_id=user), k=5)
        assert [r["item_id"] for r in rows] == direct["item_id"].tolist()
        for body, status in [
            ('{"dataframe_records": [{"user_id": "u"}', 400),  # malformed JSON
            ({"dataframe_records": [{"user_id": user}], "params": {"k": 0}}, 400),
            ({"dataframe_records": [{"user_id": user}], "params": {"k": 10**6}}, 400),
            ({"dataframe_records": [{"user_id": user}], "params": {"k": "ten"}}, 400),
            ({"dataframe_records": [{"user_id": user, "history": ["x"], "event_types": ["view", "cart"]}]}, 400),
            ({"dataframe_records": [{"history": ["x"]}]}, 400),  # no user_id
            # No input schema (MLflow casts nothing): the model's own checks answer wrong types.
            ({"dataframe_records": [{"user_id": [1, 2]}]}, 400),
            ({"dataframe_records": [{"user_id": user, "history": "B00"}]}, 400),
            ({"dataframe_records": [{"user_id": user, "history": ["x"], "timestamps": [1.5]}]}, 400),
            ({"dataframe_records": [{"user_id": user, "history": ["x"], "event_types": [3]}]}, 400),
        ]:
            r = _post(url, body)
            assert r.status_code == status, (body, r.status_code, r.text[:300])
        long = [str(data.item_ids[i % data.n_items]) for i in range(10_000)]
        r = _post(url, {"dataframe_records": [{"user_id": "nobody", "history": long[:-1] + ["gone"]}]})
        assert r.status_code == 200 and r.json()["predictions"][0]["ignored_items"] == "gone"
        # A catalogue published while serving: the text family ranks the new item at once.
        new = "NEW-ITEM-2"
        items = served["items"]
        twin = items[items["item_id"] == str(rec.item_ids[7])].assign(item_id=new, title="A brand new lip balm")
        write_slice(served["root"] / "src", served["events"], pd.concat([items, twin]), name="serveslice")
        catalogue.publish(served["spec"], served["lake"])
        # Every item but the one excluded event's: the new one is among them, with its title.
        body = {"dataframe_records": [{"user_id": "fresh", "history": [str(rec.item_ids[7])]}]}
        r = _post(url, {**body, "params": {"k": rec.n_items}})
        titles = {p["item_id"]: p["title"] for p in r.json()["predictions"]}
        assert r.status_code == 200 and titles.get(new) == "A brand new lip balm", r.text[:300]
