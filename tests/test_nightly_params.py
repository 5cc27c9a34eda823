"""The nightly flow's parameters: typed, documented, and in step with the model registry."""

import typing

from components.models import MODELS
from flows.nightly import Family, nightly


def test_family_choices_are_the_registered_models():
    assert set(typing.get_args(Family)) == set(MODELS)


def test_every_parameter_has_a_type_a_default_and_a_description():
    from prefect.utilities.callables import parameter_schema

    schema = parameter_schema(nightly.fn).model_dump_for_openapi()
    props = schema["properties"]
    assert set(props) == set(nightly.parameters.properties) and len(props) >= 15
    for name, p in props.items():
        assert p.get("description"), f"{name} has no description for the Prefect UI"
        assert "default" in p, f"{name} has no default"
        assert "type" in p or "enum" in p or "anyOf" in p or "$ref" in p or "allOf" in p, f"{name} has no type"
    assert props["families"]["items"]["enum"] == list(typing.get_args(Family)) or "$ref" in str(props["families"])
