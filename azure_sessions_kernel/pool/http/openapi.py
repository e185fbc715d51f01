"""The OpenAPI document, generated from the typed wire shapes.

Each route declares its query parameters, request body and responses as
types of :mod:`azure_sessions_kernel.wire` (``wire.SessionQuery``,
``wire.ExecuteBody``, ``wire.FileList``, ...); pydantic turns them into JSON
schema here, so what the document says is what ``wire`` parses and renders.
Requests are still read by ``wire``'s own parsers (lenient about case and
older spellings, with Azure's error codes); the schemas describe the
canonical form.

``/docs`` is a self-contained HTML page rendered from the same document:
no script, no style sheet and nothing fetched from elsewhere.
"""

from __future__ import annotations

import copy
import functools
import html
import json
import types
import typing
from typing import Any

from pydantic import TypeAdapter

from ... import wire

REF = "#/components/schemas/{model}"
#: The TypedDicts the routes refer to by name; their schemas are generated when
#: the document is first asked for (by :func:`finish`), not at import, which
#: would cost every pool start a fifth of a second.
_NAMED: dict[str, Any] = {}


def schema(tp: Any) -> dict[str, Any]:
    """The JSON schema of a wire type: a reference for a TypedDict, ``anyOf`` for a union."""
    if hasattr(tp, "__required_keys__"):  # a TypedDict: refer to it by name
        _NAMED[tp.__name__] = tp
        return {"$ref": REF.format(model=tp.__name__)}
    if isinstance(tp, types.UnionType):
        return {"anyOf": [schema(arg) for arg in typing.get_args(tp)]}
    return TypeAdapter(tp).json_schema(ref_template=REF)


@functools.cache
def parameters(query: Any) -> list[dict[str, Any]]:
    """A query TypedDict of ``wire`` as OpenAPI query parameters."""
    generated = TypeAdapter(query).json_schema(ref_template=REF)
    required = set(generated.get("required", ()))
    out = []
    for name, prop in generated["properties"].items():
        prop = {k: v for k, v in prop.items() if k != "title"}
        param: dict[str, Any] = {"name": name, "in": "query", "required": name in required}
        if "description" in prop:
            param["description"] = prop.pop("description")
        param["schema"] = prop
        out.append(param)
    return out


def json_content(*types: Any) -> dict[str, Any]:
    schemas = [schema(t) for t in types]
    return {"application/json": {"schema": schemas[0] if len(schemas) == 1 else {"anyOf": schemas}}}


def operation(query: Any, *body: Any, media: str = "application/json") -> dict[str, Any]:
    """``openapi_extra`` of a route: its query parameters and request body."""
    extra: dict[str, Any] = {"parameters": copy.deepcopy(parameters(query))}
    if body:
        content = json_content(*body) if media == "application/json" else {media: {"schema": schema(body[0])}}
        extra["requestBody"] = {"required": True, "content": content}
    return extra


def responses(ok: dict[int, tuple[str, tuple[Any, ...]]], **other: dict[str, Any]) -> dict[int | str, Any]:
    """FastAPI ``responses``: each status with its JSON types, and the error envelope as default."""
    out: dict[int | str, Any] = {
        status: {"description": text, **({"content": json_content(*types)} if types else {})}
        for status, (text, types) in ok.items()
    }
    out.update(other)
    out["default"] = {
        "description": "An error, in Azure's envelope; the same code is in x-ms-error-code.",
        "headers": {wire.ERROR_CODE_HEADER: {"schema": {"type": "string"}}},
        "content": json_content(wire.ErrorEnvelope),
    }
    return out


def finish(document: dict[str, Any]) -> dict[str, Any]:
    """Add the shared schemas and the bearer scheme every route requires."""
    schemas: dict[str, Any] = {}
    for name, tp in _NAMED.items():
        generated = TypeAdapter(tp).json_schema(ref_template=REF)
        schemas.update(generated.pop("$defs", {}))
        schemas[name] = generated
    # Only what this app's routes use (a strict pool's document names no extension's types).
    used: set[str] = set()
    pending = _references(document["paths"])
    while pending:
        name = pending.pop()
        if name not in used:
            used.add(name)
            pending |= _references(schemas[name])
    components = document.setdefault("components", {})
    components.setdefault("schemas", {}).update({name: schemas[name] for name in sorted(used)})
    components["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "The pool's token (Azure: an Entra ID token)."}
    }
    document["security"] = [{"bearer": []}]
    return document


def _references(node: Any) -> set[str]:
    """The component names ``node`` refers to with ``$ref``, at any depth."""
    if isinstance(node, dict):
        found = {node["$ref"].rsplit("/", 1)[1]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_references(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_references(v) for v in node))
    return set()


def docs_page(document: dict[str, Any]) -> str:
    """A readable, self-contained HTML rendering of ``document``."""
    e = html.escape
    schemas = document.get("components", {}).get("schemas", {})
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{e(document['info']['title'])}</title></head><body>",
        f"<h1>{e(document['info']['title'])}</h1><p>{e(document['info'].get('description', ''))}</p>",
        "<p>Every route needs <code>Authorization: Bearer &lt;token&gt;</code>. "
        "The machine-readable document is <a href='openapi.json'>openapi.json</a>.</p>",
    ]
    for path, item in document["paths"].items():
        for method, op in item.items():
            parts.append(f"<h2 id='{e(op.get('operationId', ''))}'><code>{method.upper()} {e(path)}</code></h2>")
            parts.append(f"<p>{e(op.get('summary', ''))}</p>")
            params = op.get("parameters", [])
            if params:
                rows = "".join(
                    f"<tr><td><code>{e(p['name'])}</code></td><td>{p['in']}</td><td>{'yes' if p.get('required') else 'no'}</td>"
                    f"<td>{e(p.get('description', ''))} <code>{e(json.dumps(p.get('schema', {})))}</code></td></tr>"
                    for p in params
                )
                parts.append(f"<table border='1'><tr><th>parameter</th><th>in</th><th>required</th><th>schema</th></tr>{rows}</table>")
            body = op.get("requestBody", {}).get("content", {})
            for media, spec in body.items():
                parts.append(f"<p>Request body ({e(media)}): {_names(spec.get('schema', {}))}</p>")
            for status, response in op.get("responses", {}).items():
                shown = ", ".join(f"{e(m)}: {_names(s.get('schema', {}))}" for m, s in response.get("content", {}).items())
                parts.append(f"<p>{e(status)} {e(response.get('description', ''))} {shown}</p>")
    parts.append("<h2>Schemas</h2>")
    for name, spec in schemas.items():
        parts.append(f"<h3 id='{e(name)}'>{e(name)}</h3><pre>{e(json.dumps(spec, indent=2))}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _names(spec: dict[str, Any]) -> str:
    refs = [spec] if "$ref" in spec else spec.get("anyOf", [spec])
    return " | ".join(
        f"<a href='#{html.escape(r['$ref'].rsplit('/', 1)[1])}'>{html.escape(r['$ref'].rsplit('/', 1)[1])}</a>"
        if "$ref" in r else f"<code>{html.escape(json.dumps(r))}</code>"
        for r in refs
    )
