"""Request and response schemas per task for the OpenAPI document, built from the task's declared input
fields (`Pipeline.input_fields`: name, kind, help) and its example record.

They document; they do not parse. The server reads bodies itself (limits first, then the task's own checks,
with `nlpcli predict`'s messages), so these models never see a request.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from ..tasks.base import Pipeline

KINDS: dict[str, tuple[Any, str]] = {  # kind of field -> (type, what it holds)
    "text": (str, "a text"),
    "list": (list[Any], "a list of texts"),
    "words": (list[str], "a list of words"),
}


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.replace("-", "_").replace(".", "_").split("_"))


def record_models(name: str, pipe: Pipeline, example: dict[str, Any] | None) -> tuple[type[BaseModel], type[BaseModel]]:
    """(request record, response record) models for the model served as `name`."""
    base = _camel(name)
    fields: dict[str, Any] = {}
    out_fields: dict[str, Any] = {}
    for f in pipe.input_fields:
        typ, what = KINDS.get(f.kind, (Any, "an input field"))
        fields[f.name] = (typ, Field(..., description=f.help or f"{what} ({pipe.name} input)"))
        out_fields[f.name] = (typ | None, Field(None, description=f"{what}, as sent"))
    extra: dict[str, Any] = {"examples": [example]} if example else {}
    request = create_model(
        f"{base}Record",
        __config__=ConfigDict(extra="allow", json_schema_extra=extra),
        __doc__=f"One {pipe.name} input record, as `nlpcli predict {pipe.name}` reads it on one line; "
        "other fields (an id, ...) are carried through to the answer.",
        **fields,
    )
    response = create_model(
        f"{base}Prediction",
        __config__=ConfigDict(extra="allow"),
        __doc__=f"The record as sent, with the {pipe.name} predictions added: it gains {pipe.output_help or 'them'}",
        **out_fields,
    )
    return request, response


def component_schemas(models: list[type[BaseModel]]) -> dict[str, Any]:
    """The models as OpenAPI component schemas (referenced as #/components/schemas/NAME)."""
    out: dict[str, Any] = {}
    for m in models:
        schema = m.model_json_schema(ref_template="#/components/schemas/{model}")
        out |= schema.pop("$defs", {})
        out[m.__name__] = schema
    return out


def body_schema(request: type[BaseModel]) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{request.__name__}"}
    return {"anyOf": [ref, {"type": "array", "items": ref, "description": "a list of records"}]}
