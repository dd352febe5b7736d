"""Every X-MSYS-API field and option is honoured, ignored where SparkPost ignores it, or refused with a reason."""

from __future__ import annotations

import json

import pytest

from engaged.smtpapi.header import HeaderError, XMsysApi, decode_xmsysapi
from engaged.smtpapi.options import HONOURED_OPTIONS


@pytest.mark.parametrize("option", sorted(HONOURED_OPTIONS))
def test_each_honoured_option_is_accepted(option: str) -> None:
    value = "key-1" if option in ("ip_pool", "dkim_key") else True
    assert isinstance(decode_xmsysapi(json.dumps({"options": {option: value}})), XMsysApi)


@pytest.mark.parametrize("field", ["cc", "bcc", "archive"])
def test_the_recipient_lists_are_honoured(field: str) -> None:
    decoded = decode_xmsysapi(json.dumps({field: ["a@example.com"]}))
    assert isinstance(decoded, XMsysApi) and getattr(decoded, field)[0].email == "a@example.com"


def test_substitution_data_is_accepted_and_ignored_as_sparkpost_does_over_smtp() -> None:
    decoded = decode_xmsysapi(json.dumps({"campaign_id": "c", "substitution_data": {"name": "Ann"}}))
    assert isinstance(decoded, XMsysApi) and decoded.campaign_id == "c"


@pytest.mark.parametrize(("header", "reason"), [
    ({"template_id": "welcome"}, "X-MSYS-API field 'template_id' is not supported"),
    ({"options": {"start_time": "now"}}, "X-MSYS-API option 'options.start_time' is not supported"),
    ({"options": {"open_tracking": True, "perform_substitutions": True}},
     "X-MSYS-API option 'options.perform_substitutions'"),
])
def test_what_engaged_would_drop_is_refused_with_a_reason(header: dict[str, object], reason: str) -> None:
    decoded = decode_xmsysapi(json.dumps(header))
    assert isinstance(decoded, HeaderError) and decoded.reason.startswith(reason)
