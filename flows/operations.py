"""The flows people run by hand: promote or roll back a champion, and batch recommendations
(with profiles) from the current champions without retraining."""

from __future__ import annotations

from prefect import flow

from components import pipeline
from components.config import default_lake
from flows.nightly import TASKS, Family, ServeFamily, run_name, tag_run
from tasks.catalogue import publish
from tasks.promote import move_champion


@flow(name="promote", flow_run_name=run_name("promote"), log_prints=True)
def promote(family: Family, reason: str, version: str | None = None, rollback: bool = False) -> dict:
    """Make a registered version the champion, or roll the champion back to the one it replaced.

    Args:
        family: Model family whose registered model (interestflow-<family>) changes.
        reason: Why (recorded on the model version; required).
        version: Version to promote (ignored when rolling back).
        rollback: Give the champion alias back to the previous champion instead.
    """
    out = move_champion(family, version, rollback, reason)
    print(f"{out['name']}: champion is now v{out['champion']} (was v{out['previous']}) — {reason}")
    return out


@flow(name="recommend", flow_run_name=run_name("recommend"), log_prints=True)
def recommend(
    spec: str = "specs/beauty_sample.yaml",
    lake: str | None = None,
    families: list[Family] = ["mf"],  # noqa: B006 - Prefect renders the default in the UI
    k: int = 10,
    serve_family: ServeFamily = None,
    explore_share: float = 0.0,
    profiles: bool = True,
    profile: dict | None = None,
    reviews: dict | None = None,
) -> dict:
    """Top-k for every user of today's log from the current champions, then their profiles.

    Args:
        spec: Dataset spec (YAML) of today's event log and catalogue.
        lake: Lake root: a local folder or s3://bucket/prefix (default: $INTERESTFLOW_LAKE or var/lake).
        families: Families whose champions may serve.
        k: Recommendations per user.
        serve_family: Family whose champion serves (default: best test NDCG@10 on its version).
        explore_share: Share of each top-k reserved for relevant items outside the user's usual categories.
        profiles: Also write user interest profiles (07_profiles).
        profile: Overrides of components.profiles.ProfileConfig.
        reviews: Overrides of components.reviews.ReviewConfig, as the nightly run had them (logs with review text).
    """
    tag_run(spec, families)
    dataset, recs, prof = pipeline.recommend_path(
        spec,
        lake or default_lake(),
        list(families),
        k,
        serve_family,
        explore_share,
        profiles,
        profile,
        stages=TASKS,
        reviews=reviews,
    )
    print(f"{recs.rows} recommendations for {recs.users} users from {recs.family} v{recs.version}")
    return {"data_hash": dataset.data_hash, "recommendations": recs, "profiles": prof}


@flow(name="catalogue", flow_run_name=run_name("catalogue"), log_prints=True)
def catalogue(spec: str = "specs/beauty_sample.yaml", lake: str | None = None) -> dict:
    """Publish today's catalogue (08_catalogue) for the served champions, without retraining:
    only new or changed item texts are embedded, and a text-aware champion ranks the new
    items by their text from its next catalogue check (INTERESTFLOW_CATALOGUE_POLL_S).

    Args:
        spec: Dataset spec (YAML) whose items source is today's catalogue.
        lake: Lake root: a local folder or s3://bucket/prefix (default: $INTERESTFLOW_LAKE or var/lake).
    """
    out = publish(spec, lake or default_lake())
    verdict = "published" if out.changed else "unchanged (already current)"
    print(f"catalogue {verdict}: {out.items} items, {out.embedded} texts embedded now, {out.cached} from the cache")
    return {"uri": out.uri, "items": out.items, "embedded": out.embedded, "changed": out.changed}
