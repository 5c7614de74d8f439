"""``response_format`` from the command line's ``--json-schema``, ``--grammar`` and
``--grammar-syntax`` flags: files read, the syntax told from the extension, then built like every
frontend's (``api/shorthand.response_format_from``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .api.errors import BadRequest
from .api.shorthand import one_format, response_format_from
from .api.validation import GRAMMAR_KEYS

__all__ = ["syntax_of", "response_format_from_flags"]

_EXTENSIONS = {
    ".gbnf": "gbnf",
    ".bnf": "gbnf",
    ".lark": "lark",
    ".regex": "regex",
    ".re": "regex",
    ".rx": "regex",
}


def syntax_of(path: str | Path, override: str | None = None) -> str:
    """``gbnf`` / ``lark`` / ``regex`` for a grammar file: ``override`` or the file's extension."""
    if override:
        if override not in GRAMMAR_KEYS:
            raise BadRequest("--grammar-syntax", f"must be one of {', '.join(GRAMMAR_KEYS)}, got {override!r}")
        return override
    suffix = Path(path).suffix.lower()
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    raise BadRequest(
        "--grammar",
        f"cannot tell the syntax of {str(path)!r} from its extension (.gbnf, .lark or .regex); pass --grammar-syntax",
    )


def response_format_from_flags(
    json_schema: str | None = None, grammar: str | None = None, grammar_syntax: str | None = None
) -> dict[str, Any] | None:
    """``response_format`` from the CLI's ``--json-schema`` (a file or inline JSON) and
    ``--grammar`` (a file) / ``--grammar-syntax`` flags; ``None`` when neither is given. Reads the
    files, then builds it like every frontend (``shorthand.response_format_from``)."""
    flags = ("--json-schema", "--grammar")
    one_format(json_schema or None, grammar or None, flags, "--json-schema")
    if json_schema:
        text = json_schema
        candidate = Path(json_schema)
        if not json_schema.lstrip().startswith(("{", "[")) and candidate.is_file():
            text = candidate.read_text(encoding="utf-8")
        try:
            schema = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadRequest("--json-schema", f"neither a readable file nor valid JSON: {exc}") from None
        if not isinstance(schema, dict):
            raise BadRequest("--json-schema", "the schema must be a JSON object")
        return response_format_from(json_schema=schema, names=flags)
    if grammar:
        path = Path(grammar)
        if not path.is_file():
            raise BadRequest("--grammar", f"no such file: {grammar}")
        return response_format_from(grammar=path.read_text(encoding="utf-8"), syntax=syntax_of(path, grammar_syntax), names=flags)
    if grammar_syntax:
        raise BadRequest("--grammar-syntax", "only makes sense with --grammar")
    return None
