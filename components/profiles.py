"""User interest profiles (07_profiles, DESIGN.md §8): who the shopper is and how they change.

Per user: top categories with weights, an interest vector (time-decayed mean of the MiniLM
text embeddings of their items), activity (recency, frequency, span), interest drift (the
Jensen–Shannon divergence between the category mix of an older and a recent window) and a
churn risk. For the population: the category-to-category transition matrix, and how well
each family's top-K predicts the category of the next item.

Behaviour (components/behaviour.py): every per-event weight (category mix, interest vector)
is the time decay times the spec's weight of the event's type, so a purchase says more than
a view; the churn label is "no event of the target types in the window". A log too short
for two churn windows gets its churn figures as NaN with the reason, not an error.

Reviews (components/reviews.py), when the log has review text: per user, the mean
sentiment of their reviews, their top review topics with weights and the sentiment on each,
what they praise and complain about ("praises: strings, cables; complains: tuner"), and a
review-text interest vector (the time-decayed mean of their reviews' MiniLM vectors) beside
the item-text one; the churn model also reads the sentiment of the reviews written before its
cut (and is reported without it too, ``churn_auc_no_sentiment``). Those sentiment scores come
from the one classifier of the reviews stage, fitted on the reviews before its own time cut,
which may lie after the churn model's cuts: the classifier has seen the stars of some
reviews written after a churn cut (never a churn label), so the with-sentiment AUC may be a
little optimistic.

Time is the event log's own: "now" is the last event's timestamp, never the wall clock,
so the same log always gives the same profiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial.distance import jensenshannon

DAY = 86400


@dataclass(frozen=True)
class ProfileConfig:
    category_depth: int = 3
    """Parts of the category path kept: 3 turns "Beauty > Skin Care > Face > Cleansers" into
    "Beauty > Skin Care > Face" (46 categories on Beauty, "(none)" included)."""
    top_categories: int = 3
    """Categories listed per user, with their weights."""
    half_life_days: float = 180.0
    """Interest vector: an item bought this many days before the user's "now" weighs half."""
    drift_by: str = "events"
    """Drift windows by ``events`` (the recent window = the last ``drift_recent`` events) or
    by ``days`` (the recent window = the last ``drift_recent`` days of the log)."""
    drift_recent: int = 5
    """Size of the recent window (events or days); the older window is everything before."""
    min_window_events: int = 2
    """Each window needs this many events, or the user's drift is missing (NaN)."""
    churn_window_days: int = 90
    """Churn: no activity in the final window of this many days."""
    top_topics: int = 3
    """Review topics listed per user, with their weights and the user's sentiment on each."""
    praise_threshold: float = 0.5
    """A topic is praised when the user's mean sentiment on it (P(pos) - P(neg)) is at least
    this, and complained about when it is at most minus this."""
    seed: int = 0

    def __post_init__(self):
        if self.drift_by not in ("events", "days"):
            raise ValueError(f"ProfileConfig.drift_by must be 'events' or 'days', got {self.drift_by!r}")
        if min(self.category_depth, self.top_categories, self.drift_recent, self.churn_window_days) < 1:
            raise ValueError("ProfileConfig: depth, top_categories, drift_recent, churn_window_days >= 1")
        if self.half_life_days <= 0 or self.min_window_events < 1:
            raise ValueError("ProfileConfig: half_life_days > 0 and min_window_events >= 1")


def distribution(cats: np.ndarray, n_cats: int) -> np.ndarray:
    counts = np.bincount(cats, minlength=n_cats).astype(np.float64)
    return counts / counts.sum() if counts.sum() else counts


def jsd(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen–Shannon divergence in nats (natural log): 0 for equal, ln 2 for disjoint supports.

    scipy returns the JS *distance*, the square root of the divergence.
    """
    return float(jensenshannon(p, q) ** 2)


def windows(ts: np.ndarray, cfg: ProfileConfig, now: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (older, recent) over a user's time-ordered events."""
    if cfg.drift_by == "events":
        recent = np.arange(len(ts)) >= len(ts) - cfg.drift_recent
    else:
        recent = ts > now - cfg.drift_recent * DAY
    return ~recent, recent


def drift(items: np.ndarray, ts: np.ndarray, item_cat: np.ndarray, n_cats: int, cfg: ProfileConfig, now: int) -> float:
    older, recent = windows(ts, cfg, now)
    if older.sum() < cfg.min_window_events or recent.sum() < cfg.min_window_events:
        return float("nan")
    return jsd(distribution(item_cat[items[older]], n_cats), distribution(item_cat[items[recent]], n_cats))


def transitions(seqs: list[np.ndarray], item_cat: np.ndarray, n_cats: int) -> np.ndarray:
    """(n_cats, n_cats) counts of category a followed by category b in a user's sequence."""
    a = np.concatenate([item_cat[s[:-1]] for s in seqs if len(s) > 1] or [np.zeros(0, np.int64)])
    b = np.concatenate([item_cat[s[1:]] for s in seqs if len(s) > 1] or [np.zeros(0, np.int64)])
    return np.bincount(a * n_cats + b, minlength=n_cats * n_cats).reshape(n_cats, n_cats)


def interest_vector(items: np.ndarray, ts: np.ndarray, text: np.ndarray, now: int, half_life_days: float, weights=None):
    """Time-decayed (and behaviour-weighted) mean of the items' text embeddings, L2-normalised; (d,)."""
    w = 0.5 ** ((now - ts) / (half_life_days * DAY)) * (1.0 if weights is None else weights)
    v = (w[:, None] * text[items]).sum(0) / max(w.sum(), 1e-12)
    return (v / max(np.linalg.norm(v), 1e-12)).astype(np.float32)


# -- reviews --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class UserReviews:
    """Each user's reviews in time order (from the reviews stage's layers): times, sentiment,
    topic and MiniLM vector per review; ``topic_labels`` by topic id."""

    ts: list[np.ndarray]
    sentiment: list[np.ndarray]
    topic: list[np.ndarray]
    vectors: list[np.ndarray]
    topic_labels: list[str]

    @classmethod
    def from_frames(cls, n_users: int, scored: pd.DataFrame, vectors: np.ndarray, labels: list[str]) -> UserReviews:
        """``scored``: one row per review (user_idx, ts, sentiment, topic), aligned with ``vectors``."""
        order = np.lexsort((scored["ts"].to_numpy(), scored["user_idx"].to_numpy()))
        users = scored["user_idx"].to_numpy()[order]
        bounds = np.searchsorted(users, np.arange(n_users + 1))
        cols = {c: scored[c].to_numpy()[order] for c in ("ts", "sentiment", "topic")}
        vec = vectors[order]

        def split(a):
            return [a[bounds[u] : bounds[u + 1]] for u in range(n_users)]

        return cls(
            ts=split(cols["ts"].astype(np.int64)),
            sentiment=split(cols["sentiment"].astype(np.float64)),
            topic=split(cols["topic"].astype(np.int64)),
            vectors=split(vec),
            topic_labels=list(labels),
        )


REVIEW_FEATURES = ("review_sentiment_mean", "review_sentiment_last", "negative_review_share")


def review_features(sentiment: np.ndarray) -> list[float]:
    """The churn model's sentiment inputs from a user's reviews so far (NaN: none yet)."""
    s = sentiment[~np.isnan(sentiment)]
    if not len(s):
        return [float("nan")] * len(REVIEW_FEATURES)
    return [float(s.mean()), float(s[-1]), float((s < 0).mean())]


def review_profile(r: UserReviews, u: int, now: int, cfg: ProfileConfig) -> dict:
    """User ``u``'s review columns of the profile."""
    ts, sent, topic, vec = r.ts[u], r.sentiment[u], r.topic[u], r.vectors[u]
    if not len(ts):
        return {
            "reviews": 0,
            "sentiment_mean": float("nan"),
            "review_topics": [],
            "review_topic_weights": np.zeros(0, np.float32),
            "topic_sentiment": np.zeros(0, np.float32),
            "praises": [],
            "complains": [],
            "review_summary": "",
            "review_vector": None,
        }
    w = 0.5 ** ((now - ts) / (cfg.half_life_days * DAY))
    known = topic >= 0
    n_topics = len(r.topic_labels)
    weights = np.bincount(topic[known], weights=w[known], minlength=n_topics) / max(w[known].sum(), 1e-12)
    scored = known & ~np.isnan(sent)
    total = np.bincount(topic[scored], weights=sent[scored], minlength=n_topics)
    count = np.bincount(topic[scored], minlength=n_topics)
    mean = np.divide(total, count, out=np.full(n_topics, np.nan), where=count > 0)
    ranked = [t for t in np.argsort(-weights, kind="stable") if weights[t] > 0]
    top = ranked[: cfg.top_topics]
    praises = [r.topic_labels[t] for t in ranked if mean[t] >= cfg.praise_threshold]
    complains = [r.topic_labels[t] for t in ranked if mean[t] <= -cfg.praise_threshold]
    summary = "; ".join(
        f"{what}: {', '.join(topics)}" for what, topics in (("praises", praises), ("complains", complains)) if topics
    )
    v = (w[:, None] * vec).sum(0) / max(w.sum(), 1e-12)
    return {
        "reviews": int(len(ts)),
        "sentiment_mean": float(np.nanmean(sent)) if scored.any() else float("nan"),
        "review_topics": [r.topic_labels[t] for t in top],
        "review_topic_weights": weights[top].astype(np.float32),
        "topic_sentiment": mean[top].astype(np.float32),
        "praises": praises,
        "complains": complains,
        "review_summary": summary,
        "review_vector": (v / max(np.linalg.norm(v), 1e-12)).astype(np.float32),
    }


# -- activity features at a point in time (the churn model's inputs) ---------------------------
FEATURES = ("recency_days", "n_events", "span_days", "events_last_window", "drift")


def activity_features(
    seqs: list[np.ndarray],
    tss: list[np.ndarray],
    as_of: int,
    item_cat,
    n_cats,
    text,
    cfg: ProfileConfig,
    reviews: UserReviews | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(user mask: has an event before ``as_of``, features (U, len(FEATURES) + d), then the
    :data:`REVIEW_FEATURES` when ``reviews`` are given).

    Only events and reviews strictly before ``as_of`` are read: nothing after the split leaks in.
    """
    rows, has = [], np.zeros(len(seqs), dtype=bool)
    d = text.shape[1] + (len(REVIEW_FEATURES) if reviews is not None else 0)
    for u, (s, t) in enumerate(zip(seqs, tss, strict=True)):
        keep = t < as_of
        s, t = s[keep], t[keep]
        if not len(s):
            rows.append(np.zeros(len(FEATURES) + d, dtype=np.float32))
            continue
        has[u] = True
        window = cfg.churn_window_days * DAY
        base = [
            (as_of - t[-1]) / DAY,
            len(s),
            (t[-1] - t[0]) / DAY,
            int((t >= as_of - window).sum()),
            drift(s, t, item_cat, n_cats, cfg, as_of),
        ]
        parts = [np.array(base, dtype=np.float32), interest_vector(s, t, text, as_of, cfg.half_life_days)]
        if reviews is not None:
            parts.append(np.array(review_features(reviews.sentiment[u][reviews.ts[u] < as_of]), dtype=np.float32))
        rows.append(np.concatenate(parts))
    return has, np.stack(rows)


def churned(tss: list[np.ndarray], start: int, end: int) -> np.ndarray:
    """1 where a user has no event in [start, end)."""
    return np.array([0 if ((t >= start) & (t < end)).any() else 1 for t in tss], dtype=np.int64)


# -- churn ---------------------------------------------------------------------------------------
def precision_at_top(y: np.ndarray, score: np.ndarray, share: float = 0.1) -> float:
    """Share of churners among the ``share`` of users with the highest scores."""
    n = max(1, int(round(len(y) * share)))
    return float(y[np.argsort(-score, kind="stable")[:n]].mean())


def churn(
    seqs, tss, now: int, item_cat, n_cats, text, cfg: ProfileConfig, target_tss=None, reviews: UserReviews | None = None
) -> tuple[dict, np.ndarray, dict]:
    """Train on one time split, evaluate on the next, score everybody for the coming window.

    The label is "no event of the target types in the window": ``target_tss`` (per user,
    the times of their target-type events; default: every event). Where a window has only
    one class (a log shorter than two windows) the figures are NaN and ``churn_skipped``
    says why; the risk is NaN.

    With W = ``churn_window_days`` and the log ending at ``now``: the model learns from
    features at t1 = now+1-2W with labels from [t1, t1+W), is evaluated on features at
    t2 = t1+W with labels from [t2, now+1) (AUC and precision at the top decile, beside the
    recency-only baseline), then refitted on that latest window and applied at now+1.
    ``reviews``: the users' review sentiment becomes features too (:data:`REVIEW_FEATURES`).
    Returns (report, risk per user, ROC curves for the plot).
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score, roc_curve

    window, end = cfg.churn_window_days * DAY, now + 1
    t2, t1 = end - window, end - 2 * window
    has1, x1 = activity_features(seqs, tss, t1, item_cat, n_cats, text, cfg, reviews)
    has2, x2 = activity_features(seqs, tss, t2, item_cat, n_cats, text, cfg, reviews)
    labels = tss if target_tss is None else target_tss
    y1, y2 = churned(labels, t1, t2)[has1], churned(labels, t2, end)[has2]
    if len(np.unique(y1)) < 2 or len(np.unique(y2)) < 2:
        reason = (
            f"churn: both classes are needed in each window of {cfg.churn_window_days} days "
            f"(train churn rate {y1.mean() if len(y1) else float('nan'):.2f}, eval "
            f"{y2.mean() if len(y2) else float('nan'):.2f}); set the profile's churn_window_days"
        )
        nan = float("nan")
        report = {k: nan for k in ("churn_auc", "churn_auc_recency_baseline", "churn_precision_top_decile")}
        report.update(
            churn_precision_top_decile_recency_baseline=nan,
            churn_window_days=cfg.churn_window_days,
            churn_rate_eval=nan,
            churn_train_users=int(has1.sum()),
            churn_eval_users=int(has2.sum()),
            churn_skipped=reason,
        )
        return report, np.full(len(seqs), np.nan, dtype=np.float32), {}

    def model():
        return HistGradientBoostingClassifier(max_iter=150, learning_rate=0.05, random_state=cfg.seed)

    p = model().fit(x1[has1], y1).predict_proba(x2[has2])[:, 1]
    recency = x2[has2][:, FEATURES.index("recency_days")]
    report = {
        "churn_auc": float(roc_auc_score(y2, p)),
        "churn_auc_recency_baseline": float(roc_auc_score(y2, recency)),
        "churn_precision_top_decile": precision_at_top(y2, p),
        "churn_precision_top_decile_recency_baseline": precision_at_top(y2, recency),
        "churn_window_days": cfg.churn_window_days,
        "churn_rate_eval": float(y2.mean()),
        "churn_train_users": int(has1.sum()),
        "churn_eval_users": int(has2.sum()),
    }
    curves = {"model": roc_curve(y2, p)[:2], "recency only": roc_curve(y2, recency)[:2]}
    _, x_now = activity_features(seqs, tss, end, item_cat, n_cats, text, cfg, reviews)
    risk = model().fit(x2[has2], y2).predict_proba(x_now)[:, 1]
    return report, risk.astype(np.float32), curves


# -- next category -----------------------------------------------------------------------------------
def most_common(cats: np.ndarray) -> int:
    """The most frequent category; ties go to the one seen first (best rank / earliest)."""
    values, first, counts = np.unique(cats, return_index=True, return_counts=True)
    best = counts == counts.max()
    return int(values[best][np.argmin(first[best])])


def next_category_accuracy(
    hists: list[np.ndarray], targets: np.ndarray, item_cat: np.ndarray, topk: dict[str, np.ndarray]
) -> dict[str, float]:
    """Accuracy of predicting the category of each user's next (test) item.

    ``topk``: family -> (U, K) item indices in the same user order; a family predicts the
    most common category of its top-K. Baseline: the user's most frequent category so far.
    """
    actual = item_cat[targets]
    usual = np.array([most_common(item_cat[h[::-1]]) if len(h) else -1 for h in hists])  # ties: most recent
    out = {"most_frequent_category": float((usual == actual).mean())}
    for family, top in topk.items():
        pred = np.array([most_common(item_cat[row]) for row in top])
        out[family] = float((pred == actual).mean())
    return out


# -- the tables ------------------------------------------------------------------------------------
def profile_tables(
    data,
    tss: list[np.ndarray],
    item_cat: np.ndarray,
    cat_names: list[str],
    cfg: ProfileConfig,
    topk: dict,
    reviews: UserReviews | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict, dict]:
    """Per-user profiles, the category transitions, the population summary and the churn
    curves, from a loaded Dataset ``data``, each user's event times ``tss`` (seconds) and the
    items' categories (components/features.py: ``item_categories``). ``topk``: family -> its
    test-time top-K as (users of the final view, K) item indices (for next-category accuracy).
    ``reviews``: the users' scored reviews, for the review columns and the churn model."""
    seqs = data.seqs
    vectors = data.item_text
    n_cats = len(cat_names)
    now = int(max(t[-1] for t in tss if len(t)))
    type_weight = data.behaviour.weight_table()
    event_w = [type_weight[ty] for ty in data.types]
    target_tss = [t[data.behaviour.is_target(ty)] for t, ty in zip(tss, data.types, strict=True)]

    report, risk, curves = churn(seqs, tss, now, item_cat, n_cats, vectors, cfg, target_tss, reviews)
    if reviews is not None:
        without = churn(seqs, tss, now, item_cat, n_cats, vectors, cfg, target_tss)[0]
        report["churn_auc_no_sentiment"] = without["churn_auc"]
    rows = []
    for u, (s, t) in enumerate(zip(seqs, tss, strict=True)):
        w = 0.5 ** ((now - t) / (cfg.half_life_days * DAY)) * event_w[u]
        weights = np.bincount(item_cat[s], weights=w, minlength=n_cats) / w.sum()
        top = np.argsort(-weights, kind="stable")[: cfg.top_categories]
        top = top[weights[top] > 0]
        span = (t[-1] - t[0]) / DAY
        rows.append(
            {
                "user_id": data.user_ids[u],
                "top_categories": [cat_names[c] for c in top],
                "top_weights": weights[top].astype(np.float32),
                "interest_vector": interest_vector(s, t, vectors, now, cfg.half_life_days, event_w[u]),
                "n_events": len(s),
                "first_ts": pd.Timestamp(int(t[0]), unit="s", tz="UTC"),
                "last_ts": pd.Timestamp(int(t[-1]), unit="s", tz="UTC"),
                "recency_days": (now - t[-1]) / DAY,
                "span_days": span,
                "events_per_30d": len(s) / max(span / 30, 1.0),
                "drift_jsd": drift(s, t, item_cat, n_cats, cfg, now),
                "churn_risk": float(risk[u]),
                **(review_profile(reviews, u, now, cfg) if reviews is not None else {}),
            }
        )
    profiles = pd.DataFrame(rows)
    trans = transitions(seqs, item_cat, n_cats)
    a, b = np.nonzero(trans)
    trans_frame = pd.DataFrame(
        {
            "from_category": np.array(cat_names)[a],
            "to_category": np.array(cat_names)[b],
            "count": trans[a, b],
            "probability": trans[a, b] / trans.sum(1)[a],
        }
    )
    view = data.view("final")
    next_cat = next_category_accuracy(view.eval_hist, view.eval_targets, item_cat, topk)
    drifts = profiles["drift_jsd"].dropna()
    summary = {
        **report,
        **{f"next_category_acc_{k}": v for k, v in next_cat.items()},
        "drift_users": int(len(drifts)),
        "drift_jsd_mean": float(drifts.mean()) if len(drifts) else float("nan"),
        "drift_jsd_median": float(drifts.median()) if len(drifts) else float("nan"),
        "users": len(profiles),
        "categories": n_cats,
    }
    if reviews is not None:
        with_reviews = profiles["reviews"] > 0
        summary.update(
            review_users=int(with_reviews.sum()),
            review_sentiment_mean=float(profiles.loc[with_reviews, "sentiment_mean"].mean()),
            users_praising=int((profiles["praises"].map(len) > 0).sum()),
            users_complaining=int((profiles["complains"].map(len) > 0).sum()),
        )
    return profiles, trans_frame, summary, curves


def topk_matrix(frame: pd.DataFrame, data, users: np.ndarray) -> np.ndarray:
    """A written top-K (user_id, rank, item_id) as (U, K) item indices in ``users`` order."""
    item_pos = pd.Series(np.arange(data.n_items), index=data.item_ids)
    wide = frame.pivot(index="user_id", columns="rank", values="item_id").loc[data.user_ids[users]]
    return item_pos.loc[wide.to_numpy().ravel()].to_numpy().reshape(wide.shape)
