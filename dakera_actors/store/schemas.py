"""JSON Schemas (draft 2020-12, as OpenAPI 3.1 uses them) of the memory API's requests.

Built from the same limits, patterns, choices and ignored-field lists that :mod:`.validation`
enforces, so the published document (``GET /openapi.json``) and the validators read one set of
numbers. What a schema cannot say (a metadata object's encoded size, its integers' 64-bit range)
is in its ``description``. Every optional field may also be ``null``: the validators treat a null
field as an absent one. Pure: no I/O, no Trio.
"""

from __future__ import annotations

from typing import Any

from . import sessions
from . import validation as v
from .model import MEMORY_TYPES

Schema = dict[str, Any]


def nullable(schema: Schema) -> Schema:
    """``schema`` or null (a null field is an absent one to the validators)."""
    return {"anyOf": [schema, {"type": "null"}]}


def any_case(*choices: str) -> Schema:
    """One of ``choices``, in any letter case (the validators lower-case a choice first)."""
    return {"type": "string",
            "pattern": "^(" + "|".join("".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in choice)
                                       for choice in choices) + ")$",
            "description": f"one of {', '.join(choices)} (any letter case)"}


#: a character ``str.strip`` keeps: the complement of exactly Python's whitespace (ECMA's ``\S``
#: differs: it keeps U+001C..U+001F and U+0085, which strip() removes, and drops U+FEFF, which it keeps)
NOT_SPACE = "[^" + "".join(f"\\u{c:04x}" for c in range(0x3001) if chr(c).isspace()) + "]"


def text(max_chars: int) -> Schema:
    """``Body.string``: a string with at least one character that is not whitespace."""
    return {"type": "string", "minLength": 1, "maxLength": max_chars, "pattern": NOT_SPACE}


AGENT_ID: Schema = {"type": "string", "minLength": 1, "maxLength": v.MAX_AGENT_ID_BYTES,
                    "pattern": "^" + v.AGENT_ID_RE.pattern + "$",
                    "description": f"[A-Za-z0-9][A-Za-z0-9_.-]*, at most {v.MAX_AGENT_ID_BYTES} bytes"}
MEMORY_ID: Schema = {"type": "string", "minLength": 1, "maxLength": v.MAX_MEMORY_ID_CHARS,
                     "pattern": "^" + v.MEMORY_ID_RE.pattern + "$"}
MEMORY_TYPE = any_case(*MEMORY_TYPES)
IMPORTANCE: Schema = {"type": "number", "minimum": 0.0, "maximum": 1.0}
TAGS: Schema = {"type": "array", "maxItems": v.MAX_TAGS, "items": text(v.MAX_TAG_CHARS)}
#: where the document keeps :data:`JSON_VALUE` (it refers to itself: arrays and objects of values)
JSON_VALUE_REF = "#/components/schemas/JsonValue"
#: a metadata value: what the WAL can hold (integers within 64 bits, finite numbers)
JSON_VALUE: Schema = {"anyOf": [
    {"type": ["string", "boolean", "null"]},
    {"type": "integer", "minimum": -(2**63), "maximum": 2**64 - 1},
    {"type": "number", "not": {"type": "integer"}},
    {"type": "array", "items": {"$ref": JSON_VALUE_REF}},
    {"type": "object", "additionalProperties": {"$ref": JSON_VALUE_REF}},
]}
METADATA: Schema = {
    "type": "object",
    "additionalProperties": {"$ref": JSON_VALUE_REF},
    "description": f"any JSON object of at most {v.MAX_METADATA_BYTES} bytes encoded, nested at most 32 levels, "
                   "integers within 64 bits; keys starting with _dakera_ are reserved "
                   "(but _dakera_content_date and _dakera_lang)",
    "propertyNames": {"anyOf": [{"not": {"pattern": "^_dakera_"}},
                                {"enum": ["_dakera_content_date", "_dakera_lang"]}]},
}
SESSION_ID = text(v.MAX_SESSION_ID_CHARS)
TIMESTAMP: Schema = {"type": "integer", "minimum": 0, "maximum": v.MAX_TIMESTAMP, "description": "Unix seconds"}
TIME_BOUND: Schema = {"anyOf": [{"type": "number", "minimum": 0, "maximum": v.MAX_TIMESTAMP},
                                {"type": "string", "format": "date-time"}],
                      "description": "Unix seconds or an ISO-8601 / RFC 3339 timestamp"}
ACCEPTED_IGNORED: Schema = {"description": "accepted for the SDK's sake; not implemented here, named in `warnings`"}


def _object(properties: dict[str, Schema], required: tuple[str, ...] = (), ignored: tuple[str, ...] = ()) -> Schema:
    """A JSON object that refuses unknown fields (the validators' ``Body.finish``)."""
    props = {name: (schema if name in required else nullable(schema)) for name, schema in properties.items()}
    props.update({name: ACCEPTED_IGNORED for name in ignored if name not in props})
    return {"type": "object", "properties": props, "required": list(required), "additionalProperties": False}


def _new_memory_fields() -> dict[str, Schema]:
    return {
        "content": text(v.MAX_CONTENT_CHARS),
        "memory_type": MEMORY_TYPE,
        "importance": IMPORTANCE,
        "tags": TAGS,
        "metadata": METADATA,
        "session_id": SESSION_ID,
        "id": MEMORY_ID,
        "ttl_seconds": {"type": "integer", "minimum": 1, "maximum": v.MAX_TTL_SECONDS},
        "expires_at": TIMESTAMP,
    }


STORE = _object({"agent_id": AGENT_ID, **_new_memory_fields()}, ("agent_id", "content"), v.STORE_IGNORED)
STORE_BATCH = _object(
    {"agent_id": AGENT_ID,
     "memories": {"type": "array", "minItems": 1, "maxItems": v.MAX_BATCH,
                  "items": _object(_new_memory_fields(), ("content",), v.STORE_IGNORED)}},
    ("agent_id", "memories"), ("lang",))

_UPDATABLE = {"content": text(v.MAX_CONTENT_CHARS), "memory_type": MEMORY_TYPE, "importance": IMPORTANCE,
              "tags": TAGS, "metadata": METADATA}
UPDATE = {**_object(_UPDATABLE, (), ("lang",)),
          # at least one field to update, not null
          "anyOf": [{"required": [name], "properties": {name: {"not": {"type": "null"}}}} for name in _UPDATABLE]}

FORGET = _object({"agent_id": AGENT_ID,
                  "memory_ids": {"type": "array", "minItems": 1, "maxItems": v.MAX_BATCH, "items": MEMORY_ID}},
                 ("agent_id", "memory_ids"))

RECALL = _object({
    "agent_id": AGENT_ID,
    "query": text(v.MAX_CONTENT_CHARS),
    "top_k": {"type": "integer", "minimum": 1, "maximum": v.MAX_TOP_K},
    "routing": any_case(*v.ROUTINGS),
    "fusion": any_case(*v.FUSIONS),
    "vector_weight": {"type": "number", "minimum": 0.0, "maximum": 1.0},
    "consistency": {"type": "string", "enum": list(v.CONSISTENCIES)},  # exact: the router reads it too
    "tags": TAGS,
    "min_importance": IMPORTANCE,
    "memory_type": MEMORY_TYPE,
    "session_id": SESSION_ID,
    "since": TIME_BOUND,
    "until": TIME_BOUND,
}, ("agent_id", "query"), v.RECALL_IGNORED)

_FILTER_FIELDS = {"tags": TAGS, "min_importance": IMPORTANCE, "max_importance": IMPORTANCE,
                  "created_after": TIMESTAMP, "created_before": TIMESTAMP, "memory_type": MEMORY_TYPE,
                  "session_id": SESSION_ID}
FILTER = _object(_FILTER_FIELDS)
BATCH_RECALL = _object({"agent_id": AGENT_ID, "filter": FILTER,
                        "limit": {"type": "integer", "minimum": 1, "maximum": v.MAX_LIST_LIMIT}},
                       ("agent_id",), ("min_importance",))
# forgetting by filter needs at least one predicate that is not null
BATCH_FORGET = _object({"agent_id": AGENT_ID,
                        "filter": {**FILTER, "anyOf": [{"required": [name], "properties": {name: {"not": {"type": "null"}}}}
                                                       for name in _FILTER_FIELDS]}},
                       ("agent_id", "filter"))

#: query parameters (name, schema, required) of the memory routes that take them
GET_QUERY = (("agent_id", AGENT_ID, True), ("consistency", {"type": "string", "enum": list(v.CONSISTENCIES)}, False))
UPDATE_QUERY = (("agent_id", AGENT_ID, True),)
AGENT_PAGE_QUERY = (("limit", {"type": "integer", "minimum": 1, "maximum": v.MAX_AGENT_PAGE}, False),
                    ("offset", {"type": "integer", "minimum": 0, "maximum": v.MAX_OFFSET}, False))
LISTING_QUERY = (("limit", {"type": "integer", "minimum": 1, "maximum": v.MAX_LIST_LIMIT}, False),
                 ("offset", {"type": "integer", "minimum": 0, "maximum": v.MAX_OFFSET}, False),
                 ("memory_type", {"type": "string", "enum": list(MEMORY_TYPES)}, False))

IMPORTANCE_BODY = _object({"agent_id": AGENT_ID, "memory_id": MEMORY_ID, "importance": IMPORTANCE},
                          ("agent_id", "memory_id", "importance"))
IMPORTANCE_PATCH = _object({"agent_id": AGENT_ID, "importance": IMPORTANCE}, ("agent_id", "importance"))
SESSION_SUFFIX: Schema = {"type": "string", "pattern": "^" + sessions.SUFFIX_RE.pattern + "$",
                          "description": f"the id's suffix: the session's id is <agent_id>{sessions.SEPARATOR}<this>"}
#: a session id in a path: ``<agent_id>~<suffix>`` (ASCII: an agent id's bytes are its characters)
SESSION_PATH_ID: Schema = {
    "type": "string",
    "pattern": f"^[A-Za-z0-9][A-Za-z0-9_.-]{{0,{v.MAX_AGENT_ID_BYTES - 1}}}{sessions.SEPARATOR}"
               f"{sessions.SUFFIX_RE.pattern}$",
    "description": "<agent_id>~<suffix>: the agent part routes the request to its shard's owner"}
SESSION_START = _object({"agent_id": AGENT_ID, "metadata": METADATA, "session_id": SESSION_SUFFIX,
                         "idle_timeout_secs": {"type": "integer", "minimum": 0,
                                               "maximum": sessions.MAX_IDLE_TIMEOUT_SECS,
                                               "description": "0: never ended for inactivity; absent: the "
                                                              "server's DAKERA_SESSION_IDLE_TIMEOUT_SECS"}},
                        ("agent_id",))
SESSION_END = _object({"summary": {"type": "string", "maxLength": v.MAX_CONTENT_CHARS}}, (), ("auto_summarize",))
SESSION_LISTING_QUERY = (("active_only", {"type": "string", "enum": ["true", "false"]}, False),
                         ("limit", {"type": "integer", "minimum": 1, "maximum": v.MAX_SESSION_PAGE}, False),
                         ("offset", {"type": "integer", "minimum": 0, "maximum": v.MAX_OFFSET}, False))
SESSION_LIST_QUERY = (("agent_id", AGENT_ID, False), *SESSION_LISTING_QUERY)
SESSION_MEMORIES_QUERY = (("limit", {"type": "integer", "minimum": 1, "maximum": v.MAX_SESSION_MEMORY_PAGE}, False),
                          ("offset", {"type": "integer", "minimum": 0, "maximum": v.MAX_OFFSET}, False),
                          ("content_preview_chars", {"type": "integer", "minimum": 1,
                                                     "maximum": v.MAX_PREVIEW_CHARS}, False))
