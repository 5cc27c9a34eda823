from prefect import task

from components import catalogue
from components.catalogue import CatalogueLayer
from tasks._retry import IO_RETRIES


@task(name="publish-catalogue", **IO_RETRIES, task_run_name="publish-catalogue")
def publish(spec: str, lake: str) -> CatalogueLayer:
    """08_catalogue: today's items, new or changed texts embedded, for the served champions."""
    return catalogue.publish(spec, lake)
