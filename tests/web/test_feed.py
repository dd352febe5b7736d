"""The dashboard's one-line event summaries (dashboard.js `summarize` follows the same rules)."""

from __future__ import annotations

import msgspec

from engaged.web.feed import summarize
from tests.sample_events import make_event


def test_an_out_of_band_bounce_reads_like_a_bounce() -> None:
    assert summarize(make_event("out_of_band", 1)) == summarize(make_event("bounce", 1)) == (
        "class 10 (Invalid recipient): 550 5.1.1 <ann@example.com>: unknown user")


def test_a_complaint_names_its_type_and_reporter() -> None:
    complaint = make_event("spam_complaint", 1)
    assert summarize(complaint) == "abuse complaint reported by fbl.example.org"
    assert summarize(msgspec.structs.replace(complaint, report_by="")) == "abuse complaint"


def test_a_list_unsubscribe_shows_the_agent_of_a_one_click_post_or_the_sender_of_a_mail() -> None:
    posted = make_event("list_unsubscribe", 1)
    assert summarize(posted) == "Mozilla/5.0 (X11; Linux x86_64)"
    mailed = msgspec.structs.replace(posted, user_agent="")
    assert summarize(mailed) == "by mail from ann@example.com"
