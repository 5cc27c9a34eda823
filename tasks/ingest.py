from prefect import task

from components import events
from tasks._retry import IO_RETRIES


@task(name="ingest", **IO_RETRIES)
def ingest(spec: str, lake: str) -> dict:
    """01_raw: map the spec's sources onto the data contract."""
    return events.ingest(spec, lake)
