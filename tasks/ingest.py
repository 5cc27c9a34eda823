from prefect import task

from components import pipeline
from components.events import PSEUDONYM_KEY_BLOCK
from components.lake import RawLayer
from tasks._retry import IO_RETRIES


def pseudonym_secret() -> str | None:
    """The pseudonymisation key from the Prefect Secret block, when the environment has none."""
    from prefect.blocks.system import Secret

    try:
        return Secret.load(PSEUDONYM_KEY_BLOCK).get()
    except Exception:  # noqa: BLE001 - no block, no API: ingest's error says what to set
        return None


def _name() -> str:
    from prefect.runtime import task_run

    return f"ingest-{spec_name(task_run.parameters['spec'])}"


def spec_name(spec: str) -> str:
    """A spec as people say it: its ``name`` (its file name where it cannot be read; the run
    then fails with the reason)."""
    from pathlib import Path

    from components.events import load_spec

    try:
        return load_spec(spec).name
    except Exception:  # noqa: BLE001 - a name only: ingest reports the bad spec itself
        return Path(str(spec)).stem or "spec"


@task(name="ingest", **IO_RETRIES, task_run_name=_name)
def ingest(spec: str, lake: str) -> RawLayer:
    """01_raw: map the spec's sources onto the data contract."""
    return pipeline.ingest(spec, lake, pseudonym_secret)
