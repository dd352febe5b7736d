"""SparkPost's advanced Metrics filters (`query_filters`) into FilterGroups, and every way to get them wrong."""

from __future__ import annotations

import json

import pytest

from engaged.api.filters import MAX_GROUPINGS, InvalidFilters, parse_query_filters
from engaged.types import FieldFilter, FilterGroup

SPARKPOSTS_EXAMPLE = {"groupings": [
    {"AND": {"domains": {"eq": ["gmail.com", "yahoo.com", "hotmail.com"], "like": ["mail"]},
             "sending_domains": {"notEq": ["sparkpost.com"]}}},
    {"OR": {"templates": {"eq": ["default"]}, "campaigns": {"like": ["333", "344", "355"]}}},
    {"OR": {"campaigns": {"notLike": ["Friday"], "notEq": ["stuff", "things"]}}},
]}


def test_sparkposts_documented_example_becomes_three_groups() -> None:
    assert parse_query_filters(json.dumps(SPARKPOSTS_EXAMPLE)) == (
        FilterGroup((FieldFilter("recipient_domain", ("gmail.com", "yahoo.com", "hotmail.com")),
                     FieldFilter("recipient_domain", ("mail",), substring=True),
                     FieldFilter("sending_domain", ("sparkpost.com",), negated=True))),
        FilterGroup((FieldFilter("template_id", ("default",)),
                     FieldFilter("campaign_id", ("333", "344", "355"), substring=True)), any_of=True),
        FilterGroup((FieldFilter("campaign_id", ("Friday",), substring=True, negated=True),
                     FieldFilter("campaign_id", ("stuff", "things"), negated=True)), any_of=True),
    )


def test_an_empty_object_filters_nothing() -> None:
    assert parse_query_filters("{}") == () and parse_query_filters('{"groupings": []}') == ()


@pytest.mark.parametrize(("document", "path", "words"), [
    ([], "", "must be an object"),
    ({"groupings": {}}, "groupings", "must be an array"),
    ({"groupings": [], "extra": 1}, "extra", "is not allowed"),
    ({"groupings": [{"XOR": {"domains": {"eq": ["a"]}}}]}, "groupings[0]", "AND or OR"),
    ({"groupings": [{"AND": {}}]}, "groupings[0].AND", "at least one filter key"),
    ({"groupings": [{"AND": {"colours": {"eq": ["red"]}}}]}, "groupings[0].AND.colours", "not a filter key"),
    ({"groupings": [{"AND": {"subject_campaigns": {"eq": ["x"]}}}]}, "groupings[0].AND.subject_campaigns",
     "Deliverability Add-On"),
    ({"groupings": [{"AND": {"domains": {"gt": ["a"]}}}]}, "groupings[0].AND.domains.gt", "not a comparator"),
    ({"groupings": [{"AND": {"domains": {"eq": []}}}]}, "groupings[0].AND.domains.eq", "array of 1 to"),
    ({"groupings": [{"AND": {"domains": {"eq": "gmail.com"}}}]}, "groupings[0].AND.domains.eq", "array of 1 to"),
    ({"groupings": [{"AND": {"domains": {"eq": [None]}}}]}, "groupings[0].AND.domains.eq[0]", "must be a string"),
    ({"groupings": [{"AND": {"domains": {"like": ["ab"]}}}]}, "groupings[0].AND.domains.like[0]", "3 to"),
    ({"groupings": [{"AND": {"domains": {"eq": ["a"]}}}] * (MAX_GROUPINGS + 1)}, "groupings", "at most"),
])
def test_each_violation_is_named_by_its_path(document: object, path: str, words: str) -> None:
    with pytest.raises(InvalidFilters) as invalid:
        parse_query_filters(json.dumps(document))
    (problem,) = invalid.value.errors
    assert problem["path"] == path and words in problem["message"]


def test_text_that_is_not_json_is_refused() -> None:
    with pytest.raises(InvalidFilters) as invalid:
        parse_query_filters("{groupings")
    assert invalid.value.errors[0]["path"] == "" and "JSON" in invalid.value.errors[0]["message"]
