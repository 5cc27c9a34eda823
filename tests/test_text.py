"""Item text embeddings: offline MiniLM, agreement with a plain transformers pass, the cache."""

from __future__ import annotations

import socket

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import NetworkBlocked, sample_frames, write_slice

from components import datasets, events, features, storage, text, validation
from components import lake as lake_


def test_item_text_is_title_brand_categories_without_empty_parts():
    items = pd.DataFrame(
        {"title": ["Lip Balm", "Soap", None], "brand": ["Acme", None, None], "categories": ["Beauty > Lips", "", "X"]}
    )
    assert text.item_texts(items) == ["Lip Balm | Acme | Beauty > Lips", "Soap", "X"]


def test_the_network_is_blocked_in_tests():
    with pytest.raises(NetworkBlocked):
        socket.create_connection(("198.51.100.1", 443), timeout=1)  # TEST-NET-2: never routable anyway


def test_embeddings_agree_with_a_plain_transformers_forward_pass():
    """Our batching (length buckets, bf16 autocast where the CPU has it) vs the textbook loop."""
    from transformers import AutoModel, AutoTokenizer

    _, items = sample_frames(60)
    texts = text.item_texts(items)[:80]
    ours = text.TextEncoder(batch_size=16).encode(texts)
    tok = AutoTokenizer.from_pretrained(text.model_dir(), local_files_only=True)
    model = AutoModel.from_pretrained(text.model_dir(), local_files_only=True).eval()
    with torch.no_grad():
        enc = tok(texts, padding=True, truncation=True, max_length=text.MAX_LENGTH, return_tensors="pt")
        ref = text.mean_pool(model(**enc).last_hidden_state, enc["attention_mask"]).numpy()
    cos = (ours * ref).sum(1)
    assert ours.shape == (len(texts), 384) and np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-4)
    assert cos.min() >= 0.999, cos.min()
    fp32 = text.TextEncoder(batch_size=16, precision="32").encode(texts)
    assert (fp32 * ref).sum(1).min() >= 0.99999


def _features(tmp_path, lake, name, ev, items):
    spec = write_slice(tmp_path / name, ev, items, name=name)
    return features.build_features(validation.validate(events.ingest(str(spec), str(lake)), str(lake)), str(lake))


def test_cache_embeds_only_new_or_changed_item_texts(tmp_path, monkeypatch):
    monkeypatch.delenv(lake_.TEXT_CACHE_ENV)  # the lake's own cache, empty (not the session's shared one)
    lake = tmp_path / "lake"
    ev, items = sample_frames(40)
    first = features.embed_items(_features(tmp_path, lake, "a", ev, items), str(lake))
    n = len(items)
    assert first.text_stats == {**first.text_stats, "items": n, "embedded": n, "cached": 0}

    # New events, same catalogue: a new features layer, but every text is in the cache.
    fewer = ev.drop(index=ev.index[-1])
    again = features.embed_items(_features(tmp_path, lake, "b", fewer, items), str(lake))
    assert again.text_uri != first.text_uri
    assert again.text_stats["embedded"] == 0 and again.text_stats["cached"] == n

    # One changed title: exactly one item embedded; everything else reused.
    changed = items.copy()
    changed.loc[3, "title"] = "A completely new title for this product"
    third = features.embed_items(_features(tmp_path, lake, "c", ev, changed), str(lake))
    assert third.text_stats["embedded"] == 1 and third.text_stats["cached"] == n - 1

    a, c = datasets.load_item_text(first.text_uri), datasets.load_item_text(third.text_uri)
    order = storage.read_parquet(storage.join(third.uri, "items.parquet"))["item_id"].tolist()
    row = order.index(str(changed.loc[3, "item_id"]))
    assert a.shape == c.shape == (n, 384)
    assert np.array_equal(np.delete(a, row, 0), np.delete(c, row, 0)) and not np.allclose(a[row], c[row])
    assert (lake / "03_features" / "_text_cache").is_dir()


def test_a_shared_text_cache_serves_another_lake(tmp_path, monkeypatch):
    """$INTERESTFLOW_TEXT_CACHE: a second lake embeds nothing the first one embedded."""
    monkeypatch.setenv(lake_.TEXT_CACHE_ENV, str(tmp_path / "shared"))
    ev, items = sample_frames(5)
    first = features.embed_items(_features(tmp_path, tmp_path / "lake1", "a", ev, items), str(tmp_path / "lake1"))
    second = features.embed_items(_features(tmp_path, tmp_path / "lake2", "a", ev, items), str(tmp_path / "lake2"))
    assert first.text_stats["embedded"] == len(items) and second.text_stats["cached"] == len(items)
    assert not (tmp_path / "lake1" / "03_features" / "_text_cache").exists()
    assert np.array_equal(datasets.load_item_text(first.text_uri), datasets.load_item_text(second.text_uri))


def test_the_text_layer_is_reused_when_complete(tmp_path):
    lake = tmp_path / "lake"
    ev, items = sample_frames(20)
    feats = _features(tmp_path, lake, "a", ev, items)
    features.embed_items(feats, str(lake))
    again = features.embed_items(feats, str(lake))
    assert again.text_stats == {"items": 0, "embedded": 0, "cached": 0, "seconds": again.text_stats["seconds"]}
