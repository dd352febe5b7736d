"""The Metrics API's advanced filters, SparkPost's `query_filters`: the JSON object in, `FilterGroup`s out.

`{"groupings": [{"AND" | "OR": {filter key: {comparator: [values]}}}, …]}`: every grouping must hold;
inside one, its conditions (each key's each comparator) are joined by its operator. Comparators:
`eq` (one of the values, exactly), `like` (contains one of them, at least 3 characters, any case),
`notEq` and `notLike` (none of them; an event without the field holds). Violations are collected
with their path, as SparkPost's `validationErrors`. `SCHEMA` is the same rules as JSON Schema.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from engaged.types import FieldFilter, FilterGroup

__all__ = ["FILTER_FIELDS", "MAX_GROUPINGS", "SCHEMA", "InvalidFilters", "parse_query_filters"]

FILTER_FIELDS: Final[dict[str, str]] = {
    "domains": "recipient_domain", "campaigns": "campaign_id", "templates": "template_id",
    "sending_ips": "sending_ip", "ip_pools": "ip_pool", "sending_domains": "sending_domain",
    "subaccounts": "subaccount_id", "mailbox_providers": "mailbox_provider",
    "mailbox_provider_regions": "mailbox_provider_region",
}
"""SparkPost's filter keys and the event field each selects (shared with the simple filters)."""
_ADD_ON_KEYS = frozenset({"subject_campaigns"})
_COMPARATORS: Final = {"eq": (False, False), "like": (True, False), "notEq": (False, True), "notLike": (True, True)}
"""comparator -> (substring, negated)."""
_OPERATORS: Final = ("AND", "OR")
MAX_GROUPINGS: Final = 20
_MAX_VALUES = 1000
_MAX_VALUE_CHARS = 1024
_MIN_LIKE_CHARS = 3
_MAX_TEXT = 65536


class InvalidFilters(Exception):
    """`query_filters` broke the schema: each violation as `{"path", "message"}` (SparkPost's validationErrors)."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{item['path']}: {item['message']}" for item in errors))
        self.errors = errors


def parse_query_filters(text: str) -> tuple[FilterGroup, ...]:
    """The groups a `query_filters` value asks for; raises InvalidFilters listing every violation."""
    if len(text) > _MAX_TEXT:
        raise InvalidFilters([{"path": "", "message": f"must be at most {_MAX_TEXT} characters"}])
    try:
        document = msgspec.json.decode(text.encode("utf-8", "surrogateescape"))
    except (msgspec.DecodeError, UnicodeEncodeError) as problem:
        raise InvalidFilters([{"path": "", "message": f"must be a JSON object: {problem}"}]) from None
    errors: list[dict[str, str]] = []
    groups = _document(document, errors)
    if errors:
        raise InvalidFilters(errors[:20])
    return groups


def _document(document: Any, errors: list[dict[str, str]]) -> tuple[FilterGroup, ...]:
    if not isinstance(document, dict):
        errors.append({"path": "", "message": "must be an object"})
        return ()
    for key in document:
        if key != "groupings":
            errors.append({"path": key, "message": "is not allowed (only 'groupings')"})
    groupings = document.get("groupings", [])  # `{}` filters nothing (SparkPost's own example sends it)
    if not isinstance(groupings, list):
        errors.append({"path": "groupings", "message": "must be an array"})
        return ()
    if len(groupings) > MAX_GROUPINGS:
        errors.append({"path": "groupings", "message": f"must hold at most {MAX_GROUPINGS} groupings"})
        return ()
    return tuple(group for index, grouping in enumerate(groupings)
                 if (group := _grouping(grouping, f"groupings[{index}]", errors)) is not None)


def _grouping(grouping: Any, path: str, errors: list[dict[str, str]]) -> FilterGroup | None:
    if not isinstance(grouping, dict) or len(grouping) != 1 or next(iter(grouping)) not in _OPERATORS:
        errors.append({"path": path, "message": "must be an object with exactly one key, AND or OR"})
        return None
    ((operator, filters),) = grouping.items()
    path = f"{path}.{operator}"
    if not isinstance(filters, dict) or not filters:
        errors.append({"path": path, "message": "must be an object of at least one filter key"})
        return None
    conditions: list[FieldFilter] = []
    for key, comparisons in filters.items():
        where = f"{path}.{key}"
        if key in _ADD_ON_KEYS:
            errors.append({"path": where, "message": "subject campaigns are a SparkPost Deliverability Add-On "
                                                     "feature engaged does not have"})
            continue
        if key not in FILTER_FIELDS:
            errors.append({"path": where, "message": f"is not a filter key (one of {', '.join(FILTER_FIELDS)})"})
            continue
        if not isinstance(comparisons, dict) or not comparisons:
            errors.append({"path": where, "message": "must be an object of at least one comparator"})
            continue
        for comparator, values in comparisons.items():
            condition = _condition(FILTER_FIELDS[key], comparator, values, f"{where}.{comparator}", errors)
            if condition is not None:
                conditions.append(condition)
    return FilterGroup(tuple(conditions), any_of=operator == "OR") if conditions else None


def _condition(field: str, comparator: str, values: Any, path: str, errors: list[dict[str, str]]) -> (
        FieldFilter | None):
    if comparator not in _COMPARATORS:
        errors.append({"path": path, "message": f"is not a comparator (one of {', '.join(_COMPARATORS)})"})
        return None
    if not isinstance(values, list) or not 1 <= len(values) <= _MAX_VALUES:
        errors.append({"path": path, "message": f"must be an array of 1 to {_MAX_VALUES} strings"})
        return None
    substring, negated = _COMPARATORS[comparator]
    shortest = _MIN_LIKE_CHARS if substring else 1
    for index, value in enumerate(values):
        if not isinstance(value, str | int) or isinstance(value, bool):
            errors.append({"path": f"{path}[{index}]", "message": "must be a string"})
        elif not shortest <= len(str(value)) <= _MAX_VALUE_CHARS:
            errors.append({"path": f"{path}[{index}]",
                           "message": f"must be {shortest} to {_MAX_VALUE_CHARS} characters long"})
    return FieldFilter(field, tuple(str(value) for value in values), substring=substring, negated=negated)


def _values(minimum: int) -> dict[str, Any]:
    return {"type": "array", "minItems": 1, "maxItems": _MAX_VALUES,
            "items": {"type": ["string", "integer"], "minLength": minimum, "maxLength": _MAX_VALUE_CHARS}}


SCHEMA: Final[dict[str, Any]] = {
    "$schema": "http://json-schema.org/draft-07/schema",
    "$id": "root",
    "type": "object",
    "title": "The root schema",
    "description": "engaged's query_filters: SparkPost's advanced Metrics API filters.",
    "default": {},
    "properties": {"groupings": {"$ref": "#/$defs/groupings"}},
    "additionalProperties": False,
    "$defs": {
        "groupings": {"type": "array", "maxItems": MAX_GROUPINGS, "items": {"$ref": "#/$defs/logicalOperators"}},
        "logicalOperators": {
            "type": "object", "minProperties": 1, "maxProperties": 1, "additionalProperties": False,
            "properties": {operator: {"$ref": "#/$defs/filters"} for operator in _OPERATORS},
        },
        "filters": {
            "type": "object", "minProperties": 1, "additionalProperties": False,
            "properties": {key: {"$ref": "#/$defs/comparators"} for key in FILTER_FIELDS},
        },
        "comparators": {
            "type": "object", "minProperties": 1, "additionalProperties": False,
            "properties": {"eq": _values(1), "notEq": _values(1), "like": _values(_MIN_LIKE_CHARS),
                           "notLike": _values(_MIN_LIKE_CHARS)},
        },
    },
}
"""The rules parse_query_filters applies, as SparkPost's `/deliverability/query-filters-schema` serves them."""
