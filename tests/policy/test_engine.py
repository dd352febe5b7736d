"""PolicyEngine and PolicySession: the sample scripts, phase outcomes, and the contexts handed to smtpapi."""

from __future__ import annotations

from pathlib import Path

import pytest

from engaged.config import EngagementTrackerConfig, SmtpapiSettings
from engaged.errors import ConfigError
from engaged.headers import HeaderBlock
from engaged.policy.engine import Continue, PolicyEngine, PolicyFailure, PolicyMessage, Reject
from engaged.smtpapi.header import XMsysApi, read_xmsysapi
from engaged.smtpapi.resolve import PlanError, resolve_recipient
from tests.policy.lua import MESSAGE, at_data, engine_with, inline, module, script
from tests.records import recipient_identity


def test_engine_without_scripts_is_inactive_and_continues_everywhere() -> None:
    engine = PolicyEngine.load([])
    session, message = at_data(engine)
    assert not engine.active
    assert session.validate_data_spool_each_rcpt(message, 0) == Continue()
    assert session.recipient_context(0)["mailfrom_domain"] == "origin.example"


def test_minimal_spec_script_sets_smtpapi_variables_in_the_recipient_context() -> None:
    engine = PolicyEngine.load([script("minimal")])
    session, message = at_data(engine, ("a@one.example", "b@two.example"))
    assert engine.active
    assert session.validate_data(message) == Continue()
    assert session.validate_data_spool(message) == Continue()
    for index in range(2):
        assert session.validate_data_spool_each_rcpt(message, index) == Continue()
    merged = session.connection_context() | session.recipient_context(1)
    assert merged["smtpapi_open_tracking"] == "true"
    assert merged["smtpapi_click_tracking"] == "1"
    assert merged["smtpapi_campaign_id"] == "spring_sale"
    assert merged["smtpapi_tracking_domain"] == "click.example.com"
    assert merged["smtpapi_tags"] == '["promo","eu"]'
    assert merged["rcptto_string"] == "b@two.example"
    assert "smtpapi_campaign_id" not in session.message_context()


@pytest.mark.parametrize(
    "header",
    [b"", b'X-MSYS-API: {"campaign_id": "from_header", "options": {"open_tracking": false}}\r\n'],
)
def test_minimal_spec_script_turns_tracking_on_and_beats_the_x_msys_api_header(header: bytes) -> None:
    engine = PolicyEngine.load([script("minimal")])
    session, _ = at_data(engine)
    message = PolicyMessage(header + MESSAGE, "sender@origin.example", ["rcpt@dest.example"])
    session.validate_data_spool_each_rcpt(message, 0)
    parsed = read_xmsysapi(HeaderBlock(message.content))
    assert parsed is None or isinstance(parsed, XMsysApi)
    merged = session.connection_context() | session.recipient_context(0)
    resolved = resolve_recipient(SmtpapiSettings(), EngagementTrackerConfig(), parsed, merged, recipient_identity())
    assert not isinstance(resolved, PlanError)
    identity, plan = resolved
    assert (plan.open_tracking, plan.click_tracking, identity.campaign_id) == (True, True, "spring_sale")
    assert (plan.tracking_domain, identity.tags) == ("click.example.com", ("promo", "eu"))


@pytest.mark.parametrize(
    ("listener", "rcpt", "expected"),
    [
        ("127.0.0.1:2526", "a@public.example", "true"),
        ("127.0.0.1:2526", "a@Private.Example", "false"),
        ("127.0.0.1:2525", "a@private.example", "false"),
        ("127.0.0.1:2525", "a@public.example", None),
    ],
)
def test_tracking_script_turns_tracking_on_for_one_listener_and_off_for_a_domain(
    listener: str, rcpt: str, expected: str | None
) -> None:
    engine = PolicyEngine.load([script("tracking_by_listener")])
    session, message = at_data(engine, (rcpt,), listener=listener)
    assert session.validate_data_spool_each_rcpt(message, 0) == Continue()
    context = session.recipient_context(0)
    assert context.get("smtpapi_open_tracking") == expected
    assert context.get("smtpapi_click_tracking") == expected


def test_header_script_sets_campaign_tags_and_metadata_and_deletes_the_headers_byte_exactly() -> None:
    content = (
        b"Received: from x\r\n\tby y; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
        b"X-Campaign: black friday\r\n"
        b"Subject: =?iso-8859-1?q?caf=E9?=\r\n"
        b"X-Tags: promo, eu,\r\n  vip\r\n"
        b"X-User-Id: 42\"x\r\n"
        b"\r\n"
        b"X-Campaign: this is the body\r\n"
    )
    engine = PolicyEngine.load([script("campaign_from_headers")])
    session, _ = at_data(engine)
    message = PolicyMessage(content, "sender@origin.example", ["rcpt@dest.example"])
    assert session.validate_data_spool(message) == Continue()
    context = session.message_context()
    assert context["smtpapi_campaign_id"] == "black friday"
    assert context["smtpapi_tags"] == '["promo","eu","vip"]'
    assert context["smtpapi_metadata"] == '{"user_id":"42\\u0022x"}'
    assert message.content == (
        b"Received: from x\r\n\tby y; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
        b"Subject: =?iso-8859-1?q?caf=E9?=\r\n"
        b"\r\n"
        b"X-Campaign: this is the body\r\n"
    )


def test_reject_script_refuses_a_recipient_permanently_and_a_sender_temporarily() -> None:
    engine = PolicyEngine.load([script("reject")])
    session = engine.session(peer_ip="192.0.2.7", listener="127.0.0.1:2525", tls=False)
    assert session.validate_mailfrom("someone@later.example") == Reject(451, "4.7.1", "come back later")
    assert session.connection_context()["connection_message_count"] == "0"
    assert session.validate_mailfrom("someone@origin.example") == Continue()
    assert session.validate_rcptto("a@dest.example") == Continue()
    refused = session.validate_rcptto("b@blocked.example")
    assert refused == Reject(550, "5.7.1", "recipient b@blocked.example is blocked by policy")
    assert isinstance(refused, Reject)
    assert refused.reply == "550 5.7.1 recipient b@blocked.example is blocked by policy"
    assert session.message_context()["message_rcpt_count"] == "1"
    assert session.message_context()["rcptto_string"] == "a@dest.example"
    assert session.connection_context()["connection_rcpt_count"] == "1"


def test_per_recipient_script_gives_each_recipient_its_own_campaign() -> None:
    engine = PolicyEngine.load([script("per_recipient")])
    rcpts = ("a@one.example", "b@default.example", "c@two.example")
    session, message = at_data(engine, rcpts)
    session.validate_data_spool(message)
    for index in range(3):
        assert session.validate_data_spool_each_rcpt(message, index) == Continue()
    campaigns = [session.recipient_context(index)["smtpapi_campaign_id"] for index in range(3)]
    assert campaigns == ["campaign-one.example", "default", "campaign-two.example"]
    assert session.recipient_context(0)["x_rcptto"] == "a@one.example"
    assert "x_rcptto" not in session.recipient_context(1)
    assert session.message_context()["smtpapi_campaign_id"] == "default"


def test_connection_variables_set_for_one_recipient_do_not_leak_to_the_next(tmp_path: Path) -> None:
    engine = engine_with(tmp_path, """
function mod:validate_data_spool_each_rcpt(msg, ac, vctx)
  if msg:rcptto() == "a@one.example" then vctx:set(msys.core.VCTX_CONN, "mo_customer_id", "7") end
  return msys.core.VALIDATE_CONT
end""")
    session, message = at_data(engine, ("a@one.example", "b@two.example"))
    session.validate_data_spool_each_rcpt(message, 0)
    session.validate_data_spool_each_rcpt(message, 1)
    assert (session.connection_context() | session.recipient_context(0))["mo_customer_id"] == "7"
    assert "mo_customer_id" not in session.connection_context() | session.recipient_context(1)


def test_endless_loop_fails_the_call_and_the_engine_keeps_working() -> None:
    engine = PolicyEngine.load([script("forever")])
    session, message = at_data(engine)
    with pytest.raises(PolicyFailure) as caught:
        session.validate_data_spool_each_rcpt(message, 0)
    failure = caught.value
    assert failure.message == "instruction budget exhausted"
    assert failure.script == script("forever")
    assert failure.line == 12
    assert failure.phase == "validate_data_spool_each_rcpt"
    assert failure.module == "forever"
    assert "rcptto_string" in session.message_context()
    again = engine.session(peer_ip="192.0.2.8", listener="x", tls=False)
    assert again.validate_connect() == Continue()
    assert again.connection_context()["greeted"] == "yes"


def test_memory_bomb_is_stopped_by_the_memory_cap_and_the_engine_recovers() -> None:
    # Only the memory cap may stop it: a CPU-time limit far out of reach, so a busy machine cannot fire that first.
    engine = PolicyEngine.load([script("memory_bomb")], max_memory=48 << 20, max_instructions=50_000_000,
                               max_seconds=600.0)
    session, message = at_data(engine)
    with pytest.raises(PolicyFailure, match="not enough memory"):
        session.validate_data(message)
    assert engine.session(peer_ip="192.0.2.8", listener="x", tls=False).validate_connect() == Continue()


def test_syntax_error_gives_config_error_with_file_and_line() -> None:
    path = script("syntax_error")
    with pytest.raises(ConfigError) as caught:
        PolicyEngine.load([path])
    [problem] = caught.value.problems
    assert problem.startswith(f"{path}:5: ")
    assert "'end' expected" in problem


def test_every_failing_script_is_reported_at_once(tmp_path: Path) -> None:
    good = inline(tmp_path, module("function mod:validate_connect() return msys.core.VALIDATE_CONT end"), "good")
    bad = inline(tmp_path, "error('top level refuses')", "bad")
    with pytest.raises(ConfigError) as caught:
        PolicyEngine.load([script("syntax_error"), good, bad])
    assert len(caught.value.problems) == 2
    assert caught.value.problems[1] == f"{bad}:1: top level refuses"


def test_missing_script_file_is_a_config_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.lua")
    with pytest.raises(ConfigError, match="cannot read policy script"):
        PolicyEngine.load([missing])


def test_validate_done_skips_the_remaining_modules_of_the_phase_only(tmp_path: Path) -> None:
    first = inline(tmp_path, module("""
function mod:validate_connect(ac, vctx) vctx:set(msys.core.VCTX_CONN, "first", 1) return msys.core.VALIDATE_DONE end
function mod:validate_ehlo(s, ac, vctx) return msys.core.VALIDATE_CONT end""", "first"), "first")
    second = inline(tmp_path, module("""
function mod:validate_connect(ac, vctx) vctx:set(msys.core.VCTX_CONN, "second", 1) return msys.core.VALIDATE_CONT end
function mod:validate_ehlo(s, ac, vctx) vctx:set(msys.core.VCTX_CONN, "second_ehlo", s) return 0 end""", "second"),
                    "second")
    engine = PolicyEngine.load([first, second])
    session = engine.session(peer_ip="192.0.2.7", listener="x", tls=False)
    assert session.validate_connect() == Continue()
    assert session.validate_ehlo("client.example") == Continue()
    context = session.connection_context()
    assert context["first"] == "1"
    assert "second" not in context
    assert context["second_ehlo"] == "client.example"


def test_validate_again_is_a_temporary_failure(tmp_path: Path) -> None:
    engine = engine_with(tmp_path, "function mod:validate_connect() return msys.core.VALIDATE_AGAIN end")
    verdict = engine.session(peer_ip="192.0.2.7", listener="x", tls=False).validate_connect()
    assert isinstance(verdict, Reject)
    assert (verdict.code, verdict.enhanced) == (451, "4.3.0")


@pytest.mark.parametrize(("body", "shown"), [("", "nil"), ("return true", "a boolean"), ("return 7", "7"),
                                             ("return 'x'", "a string"), ("return {}", "a table or function")])
def test_invalid_return_values_are_policy_failures_at_the_function_line(tmp_path: Path, body: str, shown: str) -> None:
    engine = engine_with(tmp_path, f"\nfunction mod:validate_connect(ac, vctx)\n  {body}\nend")
    with pytest.raises(PolicyFailure) as caught:
        engine.session(peer_ip="192.0.2.7", listener="x", tls=False).validate_connect()
    assert caught.value.line == 4
    assert caught.value.message == (
        f"validate_connect returned {shown}; expected VALIDATE_CONT or VALIDATE_DONE or VALIDATE_AGAIN"
    )


def test_validate_again_is_refused_from_validate_set_binding(tmp_path: Path) -> None:
    engine = engine_with(tmp_path, "function mod:validate_set_binding(msg) return msys.core.VALIDATE_AGAIN end")
    session, message = at_data(engine)
    with pytest.raises(PolicyFailure, match="expected VALIDATE_CONT or VALIDATE_DONE"):
        session.validate_set_binding(message)


def test_runtime_error_in_a_callout_names_script_line_and_message(tmp_path: Path) -> None:
    engine = engine_with(tmp_path, "function mod:validate_data(msg, ac, vctx)\n  local x = nil\n  return x.y\nend")
    session, message = at_data(engine)
    with pytest.raises(PolicyFailure) as caught:
        session.validate_data(message)
    assert (caught.value.script, caught.value.line) == (str(tmp_path / "inline.lua"), 5)
    assert "attempt to index a nil value" in caught.value.message
    assert str(caught.value).startswith(f"{tmp_path / 'inline.lua'}:5: attempt to index")


def test_predefined_variables_follow_the_session(tmp_path: Path) -> None:
    engine = engine_with(tmp_path, "function mod:validate_connect() return msys.core.VALIDATE_CONT end")
    session = engine.session(peer_ip="192.0.2.7", listener="127.0.0.1:2525", tls=True)
    session.set_auth("alice", "pass", mechanism="PLAIN")
    session.validate_ehlo(" client.example extra ")
    session.validate_mailfrom("<Bob@Origin.example>")
    session.validate_rcptto("c@dest.example")
    session.validate_rcptto("d@dest.example")
    assert session.connection_context() == {
        "remote_ip": "192.0.2.7", "listener": "127.0.0.1:2525", "tls": "true", "connection_message_count": "1",
        "connection_rcpt_count": "2", "auth_user": "alice", "auth_status": "pass", "auth_name": "PLAIN",
        "can_relay": "true", "ehlo_string": "client.example extra", "ehlo_domain": "client.example",
    }
    assert session.message_context() == {
        "mailfrom_string": "<Bob@Origin.example>", "mailfrom_localpart": "Bob", "mailfrom_domain": "Origin.example",
        "message_rcpt_count": "2", "rcptto_string": "d@dest.example", "rcptto_localpart": "d",
        "rcptto_domain": "dest.example",
    }
    session.validate_mailfrom("")
    assert session.message_context()["mailfrom_domain"] == ""
    assert session.connection_context()["connection_message_count"] == "2"


def test_set_auth_refuses_an_unknown_status() -> None:
    session = PolicyEngine.load([]).session(peer_ip="192.0.2.7", listener="x", tls=False)
    with pytest.raises(ValueError, match="pass, fail or error"):
        session.set_auth("alice", "ok")


def test_message_phases_before_mail_from_are_a_programming_error() -> None:
    session = PolicyEngine.load([]).session(peer_ip="192.0.2.7", listener="x", tls=False)
    with pytest.raises(RuntimeError, match="no message in progress"):
        session.validate_data(PolicyMessage(MESSAGE, "", []))


def test_failure_in_rcptto_rolls_the_recipient_back(tmp_path: Path) -> None:
    engine = engine_with(tmp_path, """
function mod:validate_rcptto(msg, s, ac, vctx)
  if s == "bad@dest.example" then error("no") end
  return msys.core.VALIDATE_CONT
end""")
    session = engine.session(peer_ip="192.0.2.7", listener="x", tls=False)
    session.validate_mailfrom("a@origin.example")
    session.validate_rcptto("good@dest.example")
    with pytest.raises(PolicyFailure):
        session.validate_rcptto("bad@dest.example")
    assert session.message_context()["rcptto_string"] == "good@dest.example"
    assert session.message_context()["message_rcpt_count"] == "1"


def test_each_rcpt_index_out_of_range_is_refused() -> None:
    session, message = at_data(PolicyEngine.load([]))
    with pytest.raises(IndexError):
        session.validate_data_spool_each_rcpt(message, 1)


def test_init_runs_at_load_and_must_return_true(tmp_path: Path) -> None:
    ok = engine_with(tmp_path, "function mod:init() return true end\nfunction mod:validate_connect() return 0 end")
    assert ok.active
    with pytest.raises(ConfigError, match=r":3: init returned nil; expected true"):
        engine_with(tmp_path, "function mod:init() end\nfunction mod:validate_connect() return 0 end")


def test_close_runs_deinit_and_deactivates(tmp_path: Path) -> None:
    callouts = "function mod:deinit() return true end\nfunction mod:validate_connect() return 0 end"
    engine = engine_with(tmp_path, callouts)
    engine.close()
    assert not engine.active


def test_the_engine_module_exports_exactly_the_public_api() -> None:
    from engaged.policy import engine

    assert sorted(engine.__all__) == [
        "Continue", "PolicyEngine", "PolicyFailure", "PolicyMessage", "PolicySession", "Reject", "Verdict"
    ]
