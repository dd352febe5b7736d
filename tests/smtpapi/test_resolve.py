"""Precedence: policy context > X-MSYS-API > listener override > [smtpapi] > built-in default."""

from __future__ import annotations

import pytest

from engaged.config import EngagementTrackerConfig, SmtpapiSettings
from engaged.recipient import RecipientIdentity, TrackingPlan
from engaged.smtpapi.header import XMsysApi
from engaged.smtpapi.resolve import PlanError, resolve_recipient
from tests.records import recipient_identity

TRACKER = EngagementTrackerConfig()
DEFAULTS = SmtpapiSettings()


def resolved(settings: SmtpapiSettings = DEFAULTS, header: XMsysApi | None = None,
             context: dict[str, str] | None = None, customer: str = "") -> tuple[RecipientIdentity, TrackingPlan]:
    result = resolve_recipient(settings, TRACKER, header, context or {}, recipient_identity(customer_id=customer))
    if isinstance(result, PlanError):
        raise AssertionError(result.reason)
    return result


def plan(settings: SmtpapiSettings = DEFAULTS, header: XMsysApi | None = None,
         context: dict[str, str] | None = None) -> TrackingPlan:
    return resolved(settings, header, context)[1]


def identity(header: XMsysApi | None = None, context: dict[str, str] | None = None,
             customer: str = "") -> RecipientIdentity:
    return resolved(DEFAULTS, header, context, customer)[0]


def test_tracking_is_off_unless_something_turns_it_on() -> None:
    result = plan()
    assert (result.open_tracking, result.click_tracking) == (False, False)


def test_config_then_header_then_context() -> None:
    on = SmtpapiSettings(open_tracking_enabled=True, click_tracking_enabled=True)
    assert plan(on).open_tracking is True
    assert plan(on, XMsysApi(open_tracking=False)).open_tracking is False
    assert plan(on, XMsysApi(open_tracking=False), {"smtpapi_open_tracking": "1"}).open_tracking is True
    assert plan(SmtpapiSettings(), XMsysApi(click_tracking=True), {"smtpapi_click_tracking": "false"}).click_tracking \
        is False


def test_context_data_replaces_header_data() -> None:
    header = XMsysApi(campaign_id="h", metadata={"a": 1}, tags=["h"])
    context = {"smtpapi_campaign_id": "c", "smtpapi_metadata": '{"b": 2}', "smtpapi_tags": '["c"]'}
    result = identity(header, context)
    assert (result.campaign_id, result.metadata, result.tags) == ("c", {"b": 2}, ("c",))
    assert identity(header).campaign_id == "h"


def test_empty_context_values_count_as_unset() -> None:
    assert identity(XMsysApi(campaign_id="h"), {"smtpapi_campaign_id": ""}).campaign_id == "h"


def test_scheme_domain_and_expiry_come_only_from_context_or_config() -> None:
    settings = SmtpapiSettings(tracking_domain="t.example", click_tracking_scheme="HTTPS", tracking_link_expiry=60)
    result = plan(settings)
    assert (result.tracking_domain, result.click_scheme, result.link_expiry) == ("t.example", "https", 60)
    result = plan(settings, context={"smtpapi_tracking_domain": "c.example", "smtpapi_open_tracking_scheme": "https",
                                     "smtpapi_tracking_link_expiry": "86400"})
    assert (result.tracking_domain, result.open_scheme, result.link_expiry) == ("c.example", "https", 86400)


def test_customer_id_from_auth_is_overridden_by_mo_customer_id() -> None:
    assert identity(customer="42").customer_id == "42"
    assert identity(customer="42", context={"mo_customer_id": "7"}).customer_id == "7"


@pytest.mark.parametrize(
    ("context", "reason"),
    [
        ({"smtpapi_open_tracking": "yes"}, "smtpapi_open_tracking context must be one of 1, 0, true, false"),
        ({"smtpapi_metadata": "[1]"}, "smtpapi_metadata context must be of type 'json object'"),
        ({"smtpapi_metadata": "{bad"}, "smtpapi_metadata context must be of type 'json object'"),
        ({"smtpapi_tags": '{"a": 1}'}, "smtpapi_tags context must be of type 'json array' of strings"),
        ({"smtpapi_campaign_id": "x" * 65}, "smtpapi_campaign_id context is limited to 64 bytes"),
        ({"smtpapi_click_tracking_scheme": "ftp"}, "smtpapi_click_tracking_scheme context must be http or https"),
        ({"smtpapi_tracking_link_expiry": "soon"}, "smtpapi_tracking_link_expiry context must be an integer"),
    ],
)
def test_invalid_context_values_name_the_variable(context: dict[str, str], reason: str) -> None:
    result = resolve_recipient(SmtpapiSettings(), TRACKER, None, context, recipient_identity())
    assert isinstance(result, PlanError)
    assert result.reason.startswith(reason)


def test_tracker_settings_travel_in_the_plan() -> None:
    tracker = EngagementTrackerConfig(click_tracking_include_metadata=False, max_metadata_len=10)
    result = resolve_recipient(SmtpapiSettings(), tracker, None, {}, recipient_identity())
    assert not isinstance(result, PlanError)
    assert (result[1].include_metadata_in_clicks, result[1].max_metadata_len) == (False, 10)


def test_dkim_key_comes_from_context_over_header_and_inline_css_from_the_header() -> None:
    header = XMsysApi(dkim_key="header-key", inline_css=True)
    resolved = plan(header=header)
    assert isinstance(resolved, TrackingPlan) and (resolved.dkim_key, resolved.inline_css) == ("header-key", True)
    steered = plan(header=header, context={"smtpapi_dkim_key": "policy-key"})
    assert isinstance(steered, TrackingPlan) and steered.dkim_key == "policy-key"
