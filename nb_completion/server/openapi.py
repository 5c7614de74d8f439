"""``GET /openapi.json``: the published completion operation, verbatim, plus our other routes.

The completion operation is ``spec/completion-operation.json`` (a copy of
``shared/spec/completion-operation.json``, shipped with the package) with the keys that are not
part of an OpenAPI operation object (``method``, ``path``, ``info``, ``postman``,
``jsonRequestBodyExample``) taken out, and its operation-level ``servers`` (a placeholder host
that would send clients elsewhere) left to the document's own ``servers``. Everything else (``requestBody``, ``responses``, ``tags``,
``description``, ``parameters``, ``security``) is the published text.
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from importlib import resources
from typing import Any

from .. import __version__

COMPLETION_PATH = "/v1/inference/completion"
_NOT_OPERATION_KEYS = ("method", "path", "info", "postman", "jsonRequestBodyExample", "servers")


@lru_cache(maxsize=1)
def published_operation() -> dict[str, Any]:
    """The operation file exactly as published."""
    text = resources.files(__package__).joinpath("spec/completion-operation.json").read_text()
    return json.loads(text)


def completion_operation() -> dict[str, Any]:
    raw = copy.deepcopy(published_operation())
    return {k: v for k, v in raw.items() if k not in _NOT_OPERATION_KEYS}


def _error_ref(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _error_schema() -> dict[str, Any]:
    return copy.deepcopy(published_operation()["responses"]["400"]["content"]["application/json"]["schema"])


_MODEL_SCHEMA = {
    "type": "object",
    "required": ["identifier", "provider_id", "type", "metadata", "model_type"],
    "properties": {
        "identifier": {"type": "string"},
        "provider_resource_id": {"type": "string"},
        "provider_id": {"type": "string"},
        "type": {"type": "string", "const": "model"},
        "metadata": {"type": "object"},
        "model_type": {"type": "string", "enum": ["llm", "embedding"]},
    },
}

_OPENAI_REQUEST = {
    "type": "object",
    "required": ["model", "prompt"],
    "properties": {
        "model": {"type": "string"},
        "prompt": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 1}]},
        "max_tokens": {"type": ["integer", "null"], "minimum": 0, "default": 16},
        "temperature": {"type": "number", "minimum": 0, "default": 1},
        "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 1},
        "stop": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 4}, {"type": "null"}]},
        "logprobs": {"type": ["integer", "null"], "minimum": 0, "maximum": 20},
        "stream": {"type": "boolean", "default": False},
        "seed": {"type": ["integer", "null"]},
        "top_k": {"type": "integer", "description": "vLLM extension"},
        "repetition_penalty": {"type": "number", "description": "vLLM extension"},
    },
}


def build_openapi(api_key_required: bool = False) -> dict[str, Any]:
    error_responses = {
        "400": _error_ref("The request was invalid or malformed"),
        "429": _error_ref("The request queue is full; see Retry-After"),
        "500": _error_ref("The engine failed"),
    }
    if api_key_required:
        error_responses["401"] = _error_ref("Missing or wrong bearer token")
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "nb_completion: the llama-stack completion API",
            "version": __version__,
            "description": "POST /v1/inference/completion as published by llama-stack (API v1), "
            "served from a Jupyter kernel; plus the OpenAI-compatible POST /v1/completions.",
        },
        "servers": [{"url": "/"}],
        "paths": {
            COMPLETION_PATH: {"post": completion_operation()},
            "/v1/models": {
                "get": {
                    "operationId": "models_list",
                    "description": "The models this server serves.",
                    "responses": {
                        "200": {
                            "description": "The models",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["data"],
                                        "properties": {"data": {"type": "array", "items": _MODEL_SCHEMA}},
                                    }
                                }
                            },
                        },
                    },
                }
            },
            "/v1/health": {
                "get": {
                    "operationId": "health",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "Health",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["status"],
                                        "properties": {"status": {"type": "string"}},
                                    }
                                }
                            },
                        }
                    },
                }
            },
            "/v1/completions": {
                "post": {
                    "operationId": "openai_completions",
                    "description": "OpenAI-compatible legacy completions (one choice).",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _OPENAI_REQUEST}}},
                    "responses": {
                        "200": {"description": "An OpenAI text_completion, or its SSE stream ending in [DONE]"},
                        **error_responses,
                    },
                }
            },
        },
        "components": {
            "schemas": {"Error": _error_schema()},
            "securitySchemes": {"Default": {"type": "http", "scheme": "bearer"}},
        },
    }
    if api_key_required:
        doc["security"] = [{"Default": []}]
    return doc
