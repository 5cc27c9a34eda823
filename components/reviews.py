"""What shoppers say (DESIGN.md §8): the sentiment and the topics of their reviews.

Input: the review-text layer (components/features.py: ``embed_reviews``), one row per review
event with its MiniLM vectors (``summary | text`` and the summary alone) and its stars.

Sentiment: a logistic regression (scikit-learn) on the two vectors, trained on the stars as
weak labels (negative <= 2, neutral 3, positive >= 4; balanced class weights, since most
reviews have five stars). It is evaluated on a time split: trained on the earlier reviews,
tested on the later ones (``test_share`` of them, cut at a timestamp, so no review in
training is later than one in the test), beside VADER (Hutto & Gilbert, ICWSM 2014), the
lexicon baseline, on the same later reviews: AUC of positive vs negative and the macro-F1
of the three classes. Its regularisation is chosen on the latest part of the training
reviews. A review's ``sentiment`` is P(positive) - P(negative), in [-1, 1].

Topics: BERTopic (Grootendorst 2022) over the same vectors, with a PCA reduction and
k-means clustering (deterministic for a seed, every review gets a topic) and BERTopic's
class-based TF-IDF for each topic's keywords; a topic is labelled by its top keyword (two
where topics share one).

:func:`analyse` writes ``05_models/<features key>/reviews-<config>/``: ``scored.parquet``
(per review: label, class probabilities, sentiment, topic), ``topics.parquet`` (topic,
label, keywords, reviews), ``metrics.json``, ``sentiment.joblib`` and ``topic_model/``;
components/pipeline.py logs it to MLflow and puts the classifier through the promotion gate
(primary metric: the AUC on today's later reviews).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

NEGATIVE, NEUTRAL, POSITIVE = 0, 1, 2
CLASSES = ("negative", "neutral", "positive")
MIN_TOPIC_REVIEWS = 40
"""Fewer reviews than this get no topics (two topics of 20 reviews each at the least)."""
VADER_THRESHOLD = 0.05
"""VADER's recommended cut on its compound score: >= 0.05 positive, <= -0.05 negative."""


@dataclass(frozen=True)
class ReviewConfig:
    test_share: float = 0.2
    """The latest share of reviews (by time) the sentiment classifier is tested on."""
    c_grid: tuple[float, ...] = (0.1, 0.3, 1.0)
    """Inverse regularisation strengths tried; the best macro-F1 on the latest part of training wins."""
    n_topics: int = 20
    """Topics (k-means clusters); on a small log one per 20 reviews (at least 2)."""
    topic_words: int = 8
    """Keywords kept per topic."""
    seed: int = 0

    def __post_init__(self):
        if not 0 < self.test_share < 1 or not self.c_grid or min(self.c_grid) <= 0:
            raise ValueError("ReviewConfig: 0 < test_share < 1 and a non-empty c_grid of positive values")
        if self.n_topics < 2 or self.topic_words < 1:
            raise ValueError("ReviewConfig: n_topics >= 2 and topic_words >= 1")


def star_labels(stars: np.ndarray) -> np.ndarray:
    """Stars -> 0 negative (<= 2), 1 neutral (3), 2 positive (>= 4); -1 where there are no stars."""
    s = np.asarray(stars, dtype=np.float64)
    return np.where(np.isnan(s), -1, np.where(s >= 4, POSITIVE, np.where(s <= 2, NEGATIVE, NEUTRAL))).astype(np.int64)


def time_split(ts: np.ndarray, test_share: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) masks: test = reviews at or after the cut, the timestamp below which
    ``1 - test_share`` of the reviews lie; every training review is earlier than every test one."""
    ts = np.asarray(ts)
    cut = np.quantile(ts, 1 - test_share, method="higher")
    return ts < cut, ts >= cut


def features(reviews: pd.DataFrame) -> np.ndarray:
    """(R, 768): the review's vector beside its summary's."""
    return np.hstack([np.stack(reviews["embedding"].to_numpy()), np.stack(reviews["summary_embedding"].to_numpy())])


def sentiment_score(proba: np.ndarray) -> np.ndarray:
    """P(positive) - P(negative) per row of class probabilities."""
    return proba[:, POSITIVE] - proba[:, NEGATIVE]


def scores(y: np.ndarray, score: np.ndarray, predicted: np.ndarray) -> dict:
    """AUC positive vs negative (of ``score``) and the 3-class macro-F1 (of ``predicted``)."""
    from sklearn.metrics import f1_score, roc_auc_score

    polar = y != NEUTRAL
    return {
        "auc": float(roc_auc_score(y[polar] == POSITIVE, score[polar])),
        "macro_f1": float(f1_score(y, predicted, average="macro", labels=[NEGATIVE, NEUTRAL, POSITIVE])),
    }


def probability_columns(proba: np.ndarray) -> dict:
    """``p_negative, p_neutral, p_positive`` and ``sentiment`` from class probabilities (R, 3)."""
    return {**{f"p_{c}": proba[:, i] for i, c in enumerate(CLASSES)}, "sentiment": sentiment_score(proba)}


def scores_of(y: np.ndarray, frame: pd.DataFrame) -> dict:
    """:func:`scores` of a frame with the :func:`probability_columns` (scored reviews, or the
    served model's answer), against labels ``y``."""
    proba = frame[[f"p_{c}" for c in CLASSES]].to_numpy()
    return scores(y, frame["sentiment"].to_numpy(), proba.argmax(1))


def vader(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(compound score, 3-class label) of each text by VADER (the ``vaderSentiment`` package,
    its lexicon shipped inside it)."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyser = SentimentIntensityAnalyzer()
    compound = np.array([analyser.polarity_scores(t)["compound"] for t in texts], dtype=np.float64)
    label = np.where(compound >= VADER_THRESHOLD, POSITIVE, np.where(compound <= -VADER_THRESHOLD, NEGATIVE, NEUTRAL))
    return compound, label


def _classifier(c: float, seed: int):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, class_weight="balanced", max_iter=3000, random_state=seed)


def fit_sentiment(x: np.ndarray, y: np.ndarray, ts: np.ndarray, cfg: ReviewConfig):
    """The classifier for training reviews ``x, y`` (time ``ts``): C chosen on the latest
    ``test_share`` of them, then refitted on all of them. Returns (model, chosen C)."""
    from sklearn.metrics import f1_score

    fit_part, check = time_split(ts, cfg.test_share)
    best, best_f1 = cfg.c_grid[0], -1.0
    if fit_part.any() and len(np.unique(y[fit_part])) == 3 and check.any():
        for c in cfg.c_grid:
            pred = _classifier(c, cfg.seed).fit(x[fit_part], y[fit_part]).predict(x[check])
            f1 = f1_score(y[check], pred, average="macro", labels=[NEGATIVE, NEUTRAL, POSITIVE])
            if f1 > best_f1:
                best, best_f1 = c, f1
    return _classifier(best, cfg.seed).fit(x, y), best


def sentiment(reviews: pd.DataFrame, cfg: ReviewConfig) -> tuple[object | None, dict, np.ndarray, np.ndarray]:
    """Fit on the earlier reviews, test on the later ones beside VADER, score every review.

    Returns (classifier or None, report, class probabilities (R, 3), test mask). Where a
    split lacks a class the classifier is None, the figures are NaN and
    ``sentiment_skipped`` says why."""
    stars = reviews["stars"].to_numpy(dtype=np.float64)
    y = star_labels(stars)
    ts = reviews["ts"].to_numpy()
    labelled = y >= 0
    train, test = time_split(ts, cfg.test_share) if len(ts) else (labelled, labelled)
    train, test = train & labelled, test & labelled
    report = {"sentiment_train_reviews": int(train.sum()), "sentiment_test_reviews": int(test.sum())}
    outside = stars[labelled & ((stars < 1) | (stars > 5))]
    skipped = None
    if len(outside):
        skipped = (
            f"sentiment: the events' value is read as 1..5 stars, but {len(outside)} review(s) have values "
            f"outside it (e.g. {outside[:3].tolist()}): map the stars onto events.columns.value"
        )
    elif len(np.unique(y[train])) < 3 or not {NEGATIVE, POSITIVE} <= set(np.unique(y[test])):
        skipped = (
            "sentiment: the earlier reviews need all three star classes and the later ones positive and "
            f"negative reviews (train classes {sorted(set(y[train].tolist()))}, test {sorted(set(y[test].tolist()))})"
        )
    if skipped:
        nan = float("nan")
        report.update(dict.fromkeys(("sentiment_auc", "sentiment_macro_f1", "vader_auc", "vader_macro_f1"), nan))
        report["sentiment_skipped"] = skipped
        return None, report, np.full((len(reviews), 3), np.nan), test
    x = features(reviews)
    model, c = fit_sentiment(x[train], y[train], ts[train], cfg)
    proba = model.predict_proba(x)
    ours = scores(y[test], sentiment_score(proba[test]), proba[test].argmax(1))
    compound, label = vader(reviews.loc[test, "text"].tolist())
    theirs = scores(y[test], compound, label)
    report.update(
        sentiment_train_until=int(ts[train].max()),
        sentiment_auc=ours["auc"],
        sentiment_macro_f1=ours["macro_f1"],
        vader_auc=theirs["auc"],
        vader_macro_f1=theirs["macro_f1"],
        sentiment_c=c,
        sentiment_cut=str(pd.Timestamp(int(ts[test].min()), unit="s", tz="UTC").date()),
    )
    return model, report, proba, test


# -- topics ------------------------------------------------------------------------------------
def topic_model(n_docs: int, cfg: ReviewConfig):
    """A BERTopic model for ``n_docs`` pre-embedded documents (no embedding model: the vectors
    come from the lake's text cache, nothing is downloaded)."""
    from bertopic import BERTopic
    from bertopic.vectorizers import ClassTfidfTransformer
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.feature_extraction.text import CountVectorizer

    k = max(2, min(cfg.n_topics, n_docs // 20))
    return BERTopic(
        embedding_model=None,
        umap_model=PCA(n_components=max(1, min(32, n_docs - 1)), random_state=cfg.seed),
        hdbscan_model=KMeans(n_clusters=k, n_init=4, random_state=cfg.seed),
        # BERTopic fits the vectorizer on one joined document per topic: min_df counts topics,
        # so 1 keeps the words that only one topic uses (its most telling ones).
        vectorizer_model=CountVectorizer(stop_words="english", min_df=1),
        ctfidf_model=ClassTfidfTransformer(reduce_frequent_words=True),
        top_n_words=cfg.topic_words,
        calculate_probabilities=False,
    )


def label_topics(keywords: list[list[str]]) -> list[str]:
    """A short, unique label per topic: its top keyword, two where topics share the top one."""
    firsts = [k[0] if k else "" for k in keywords]
    labels = []
    for t, k in enumerate(keywords):
        label = k[0] if k and firsts.count(k[0]) == 1 else "/".join(k[:2]) or f"topic {t}"
        labels.append(label if label not in labels else f"{label} ({t})")
    return labels


def topics(texts: list[str], vectors: np.ndarray, cfg: ReviewConfig) -> tuple[object, np.ndarray, pd.DataFrame]:
    """(fitted BERTopic, topic per text, table: topic, label, keywords, reviews)."""
    model = topic_model(len(texts), cfg)
    assigned, _ = model.fit_transform(texts, vectors)
    assigned = np.asarray(assigned, dtype=np.int64)
    ids = sorted(t for t in model.get_topics() if t >= 0)
    keywords = [[w for w, _ in model.get_topic(t)][: cfg.topic_words] for t in ids]
    labels = label_topics(keywords)
    counts = np.bincount(assigned[assigned >= 0], minlength=max(ids) + 1 if ids else 0)
    table = pd.DataFrame(
        {"topic": ids, "label": labels, "keywords": keywords, "reviews": [int(counts[t]) for t in ids]}
    )
    return model, assigned, table


# -- the stage's files ------------------------------------------------------------------------
def analyse(reviews: pd.DataFrame, cfg: ReviewConfig) -> tuple[dict, pd.DataFrame, pd.DataFrame, object, object]:
    """Sentiment and topics of a review layer's frame. Returns (report, scored reviews,
    topic table, classifier or None, topic model)."""
    import time

    t0 = time.perf_counter()
    model, report, proba, test = sentiment(reviews, cfg)
    report["sentiment_s"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    if len(reviews) >= MIN_TOPIC_REVIEWS:
        tm, assigned, table = topics(reviews["text"].tolist(), np.stack(reviews["embedding"].to_numpy()), cfg)
    else:  # too few to cluster: no topics, and the report says why
        tm, assigned = None, np.full(len(reviews), -1, dtype=np.int64)
        table = pd.DataFrame({"topic": [], "label": [], "keywords": [], "reviews": []})
        report["topics_skipped"] = f"topics: {len(reviews)} reviews, fewer than {MIN_TOPIC_REVIEWS}"
    report.update(n_topics=len(table), topics_s=round(time.perf_counter() - t0, 3), reviews=len(reviews))
    pred = np.where(np.isnan(proba).any(1), -1, np.nan_to_num(proba).argmax(1))
    scored = pd.DataFrame(
        {
            "user_idx": reviews["user_idx"].to_numpy(),
            "pos": reviews["pos"].to_numpy(),
            "item_idx": reviews["item_idx"].to_numpy(),
            "ts": reviews["ts"].to_numpy(),
            "stars": reviews["stars"].to_numpy(),
            "label": pred,
            **probability_columns(proba),
            "topic": assigned,
            "sentiment_test": test,
        }
    )
    return report, scored, table, model, tm


def config_params(cfg: ReviewConfig) -> dict:
    return {f"reviews.{k}": v for k, v in asdict(cfg).items()}
