"""The script API: msys.*, require, vctx:*, msg:* — values, errors at the script's line, and Momentum's returns."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from engaged.errors import ConfigError
from engaged.policy.engine import Continue, PolicyEngine, PolicyFailure, PolicyMessage, PolicySession, Reject
from tests.policy.lua import MESSAGE, at_data, engine_with, inline, module


def each_rcpt(tmp_path: Path, body: str, rcpts: tuple[str, ...] = ("rcpt@dest.example",)) -> PolicySession:
    """Run `body` as validate_data_spool_each_rcpt for the first recipient; the session afterwards."""
    engine = engine_with(tmp_path, f"""
function mod:validate_data_spool_each_rcpt(msg, ac, vctx)
  local MESS, CONN = msys.core.VCTX_MESS, msys.core.VCTX_CONN
  {body}
  return msys.core.VALIDATE_CONT
end""")
    session, message = at_data(engine, rcpts)
    assert session.validate_data_spool_each_rcpt(message, 0) == Continue()
    return session


def test_values_are_stored_as_strings_and_nil_deletes(tmp_path: Path) -> None:
    session = each_rcpt(tmp_path, """
vctx:set(MESS, "int", 86400)
vctx:set(MESS, "float", 1e5)
vctx:set(MESS, "fraction", 0.25)
vctx:set(MESS, "flag", true)
vctx:set(MESS, "gone", "x")
vctx:set(MESS, "gone", nil)
vctx:set(MESS, "kind", type(vctx:get(MESS, "int")))
vctx:set(MESS, "absent", tostring(vctx:get(MESS, "nothing")))""")
    context = session.recipient_context(0)
    assert [context[key] for key in ("int", "float", "fraction", "flag", "kind", "absent")] == [
        "86400", "100000", "0.25", "true", "string", "nil"
    ]
    assert "gone" not in context


def test_context_exists_and_delete_return_one_or_zero_like_momentum(tmp_path: Path) -> None:
    session = each_rcpt(tmp_path, """
local T = msys.core.ECMESS_CTX_MESS
msg:context_set(T, "k", "v")
msg:context_set(T, "r", table.concat({msg:context_exists(T, "k"), msg:context_exists(T, "nope"),
  msg:context_delete(T, "k"), msg:context_delete(T, "k"), msg:context_get(T, "rcptto_domain")}, ","))""")
    assert session.recipient_context(0)["r"] == "1,0,1,0,dest.example"


def test_connection_and_message_constants_are_interchangeable(tmp_path: Path) -> None:
    session = each_rcpt(tmp_path, """
msg:context_set(msys.core.VCTX_CONN, "a", "1")
vctx:set(msys.core.ECMESS_CTX_CONN, "b", vctx:get(CONN, "remote_ip"))""")
    context = session.recipient_context(0)
    assert (context["a"], context["b"]) == ("1", "192.0.2.7")


@pytest.mark.parametrize(
    ("call", "error"),
    [
        ('vctx:set(99, "k", "v")', "vctx:set: type must be msys.core.VCTX_MESS or msys.core.VCTX_CONN"),
        ('vctx:set(MESS, {}, "v")', "vctx:set: key must be a string"),
        ('vctx:set(MESS, "k", {})', "vctx:set: value must be a string, number, boolean or nil"),
        ('vctx:set(MESS, "k", "\\255")', "vctx:set: value is not valid UTF-8"),
        ('vctx:set(MESS, "k", ("x"):rep(65537))', "vctx:set: keys are limited to 256 bytes and values to 65536"),
        ('for i = 1, 1001 do vctx:set(MESS, "k" .. i, "v") end', "vctx:set: a context holds at most 1000 variables"),
        ('msg:header("X-A", ("x"):rep(65537))', "msg:header: header value is limited to 65536 bytes"),
        ('msg:header("X-A", "a\\r\\nBcc: x")', "msg:header: header value must not contain CR, LF or NUL"),
        ('msg:header("X A", "a")', "msg:header: header name must be printable ASCII without ':'"),
        ('msg:header("X-A", "a", "sideways")', "msg:header: unknown mode 'sideways'"),
        ('vctx:set_code(250, "fine")', "vctx:set_code: code must be a 4xx or 5xx reply code"),
        ('vctx:set_code(550, "a\\nb")', "vctx:set_code: message must not contain CR, LF or NUL"),
        ('msys.registerModule("late", {validate_data = print})', "msys.registerModule: modules can only be registered"),
        ('msg.header = nil', "msg is read-only"),
    ],
)
def test_api_misuse_fails_the_call_at_the_scripts_line(tmp_path: Path, call: str, error: str) -> None:
    engine = engine_with(tmp_path, f"""
function mod:validate_data_spool_each_rcpt(msg, ac, vctx)
  local MESS = msys.core.VCTX_MESS
  {call}
  return msys.core.VALIDATE_CONT
end""")
    session, message = at_data(engine)
    with pytest.raises(PolicyFailure) as caught:
        session.validate_data_spool_each_rcpt(message, 0)
    assert caught.value.message.startswith(error)
    assert caught.value.line == 6


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        ('vctx:set_code(550, "5.7.1 no thanks")', Reject(550, "5.7.1", "no thanks")),
        ('vctx:set_code(550, "550 5.7.0 no")', Reject(550, "5.7.0", "no")),
        ('vctx:set_code(554, "go away")', Reject(554, "5.7.1", "go away")),
        ('vctx:set_code(421, "")', Reject(421, "4.7.1", "Temporarily rejected by policy")),
        ('vctx:set_code(550, "4.7.1 mismatched class")', Reject(550, "5.7.1", "mismatched class")),
        ('msg:code(552, "5.3.4 too big")', Reject(552, "5.3.4", "too big")),
    ],
)
def test_set_code_turns_the_phase_into_a_rejection(tmp_path: Path, call: str, expected: Reject) -> None:
    engine = engine_with(tmp_path, f"function mod:validate_data(msg, ac, vctx)\n  {call}\n  return 0\nend")
    session, message = at_data(engine)
    assert session.validate_data(message) == expected


def test_msg_code_reads_back_the_code_and_is_refused_in_set_binding(tmp_path: Path) -> None:
    engine = engine_with(tmp_path, """
function mod:validate_data_spool_each_rcpt(msg, ac, vctx)
  local before = msg:code()
  vctx:set_code(451, "4.3.2 later")
  local code, text = msg:code()
  vctx:set(msys.core.VCTX_MESS, "codes", before .. "|" .. code .. "|" .. text)
  return msys.core.VALIDATE_CONT
end
function mod:validate_set_binding(msg)
  msg:code(550, "x")
  return msys.core.VALIDATE_CONT
end""")
    session, message = at_data(engine)
    assert session.validate_data_spool_each_rcpt(message, 0) == Reject(451, "4.3.2", "later")
    assert session.recipient_context(0)["codes"] == "250|451|4.3.2 later"
    with pytest.raises(PolicyFailure, match="cannot be set in validate_set_binding"):
        session.validate_set_binding(message)


def test_header_reads_every_value_decoded_to_utf8(tmp_path: Path) -> None:
    session = each_rcpt(tmp_path, """
local subject = msg:header("subject")
local missing = msg:header("X-Missing")
vctx:set(MESS, "r", subject[1] .. "|" .. #subject .. "|" .. #missing .. "|" .. msg:header("X-CAMPAIGN")[1])""")
    assert session.recipient_context(0)["r"] == "Grüße|1|0|spring_sale"


def test_header_set_append_prepend_and_delete_edit_only_the_header_block(tmp_path: Path) -> None:
    engine = engine_with(tmp_path, """
function mod:validate_data(msg, ac, vctx)
  msg:header("X-Campaign", "autumn")
  msg:header("X-Note", "first", "append")
  msg:header("X-Note", "second", "append")
  msg:header("X-Top", "café", "prepend")
  msg:header("To", "")
  return msys.core.VALIDATE_CONT
end""")
    session, message = at_data(engine)
    assert session.validate_data(message) == Continue()
    assert message.content == (
        b"X-Top: =?utf-8?b?Y2Fmw6k=?=\r\n"
        b"From: Sender <sender@origin.example>\r\n"
        b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
        b"X-Campaign: autumn\r\n"
        b"X-Note: first\r\n"
        b"X-Note: second\r\n"
        b"\r\n"
        b"Hello\r\n"
    )
    assert message.header(b"x-top") == ["café".encode()]


def test_header_access_before_data_is_refused(tmp_path: Path) -> None:
    engine = engine_with(tmp_path, "function mod:validate_rcptto(msg, s, ac, vctx)\n  msg:header('To')\nend")
    session = engine.session(peer_ip="192.0.2.7", listener="x", tls=False)
    session.validate_mailfrom("a@origin.example")
    with pytest.raises(PolicyFailure, match="msg:header: there is no message content before DATA"):
        session.validate_rcptto("b@dest.example")


def test_mailfrom_and_rcptto_name_the_envelope(tmp_path: Path) -> None:
    engine = engine_with(tmp_path, """
function mod:validate_rcptto(msg, s, ac, vctx)
  vctx:set(msys.core.VCTX_MESS, "seen", msg:mailfrom() .. ">" .. msg:rcptto() .. "=" .. s)
  return msys.core.VALIDATE_CONT
end
function mod:validate_data(msg, ac, vctx)
  vctx:set(msys.core.VCTX_MESS, "first", msg:rcptto())
  return msys.core.VALIDATE_CONT
end""")
    session, message = at_data(engine, ("a@dest.example", "b@dest.example"))
    assert session.message_context()["seen"] == "sender@origin.example>b@dest.example=b@dest.example"
    session.validate_data(message)
    assert session.message_context()["first"] == "a@dest.example"


def test_message_context_is_refused_before_mail_from(tmp_path: Path) -> None:
    engine = engine_with(tmp_path, "function mod:validate_connect(ac, v) v:set(msys.core.VCTX_MESS, 'k', 'v') end")
    with pytest.raises(PolicyFailure, match="no message context before MAIL FROM"):
        engine.session(peer_ip="192.0.2.7", listener="x", tls=False).validate_connect()


def test_expand_macro_reads_both_contexts(tmp_path: Path) -> None:
    session = each_rcpt(tmp_path, """
local text = "%{vctx_conn:ehlo_domain}/%{vctx_mess:rcptto_domain}/%{vctx_mess:no}/%{other}"
vctx:set(MESS, "r", msys.expandMacro(text))""")
    assert session.recipient_context(0)["r"] == "client.example/dest.example//%{other}"


def test_print_goes_to_the_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="engaged.policy"):
        each_rcpt(tmp_path, 'print("hello", 42, nil)')
    assert "hello\t42\tnil" in caplog.text


def test_require_returns_the_msys_tables(tmp_path: Path) -> None:
    session = each_rcpt(tmp_path, """
local core = require("msys.core")
vctx:set(MESS, "r", tostring(core == msys.core) .. tostring(require("msys") == msys) ..
  tostring(type(require("msys.extended.vctx"))) .. tostring(require("string") == string))""")
    assert session.recipient_context(0)["r"] == "truetruetabletrue"


@pytest.mark.parametrize(
    ("source", "error"),
    [
        (module("function mod:valdate_connect() return 0 end"), "unknown callout 'valdate_connect' in module 'test'"),
        ('require("msys.core")\nmsys.registerModule("empty", {config = {}})', "no usable methods found"),
        (module("function mod:validate_rcptto_list() return 0 end"), "'validate_rcptto_list' of module 'test'"),
        (module("function mod:validate_connect() return 0 end") + 'msys.registerModule("test", mod)\n',
         "module 'test' is already registered"),
        ('require("msys.datasource")', "module 'msys.datasource' not found"),
    ],
)
def test_bad_registrations_and_requires_fail_at_load(tmp_path: Path, source: str, error: str) -> None:
    with pytest.raises(ConfigError) as caught:
        PolicyEngine.load([inline(tmp_path, source)])
    [problem] = caught.value.problems
    assert problem.startswith(str(tmp_path / "inline.lua") + ":")
    assert error in problem


def test_underscore_functions_are_private_helpers_not_callouts(tmp_path: Path) -> None:
    source = module("function mod:_one() return 1 end\nfunction mod:validate_connect() return self:_one() - 1 end")
    engine = PolicyEngine.load([inline(tmp_path, source)])
    assert engine.session(peer_ip="192.0.2.7", listener="x", tls=False).validate_connect() == Continue()


def test_each_recipient_copy_keeps_its_own_header_edits(tmp_path: Path) -> None:
    engine = engine_with(tmp_path, """
function mod:validate_data_spool_each_rcpt(msg, ac, vctx)
  msg:header("X-Rcpt", msg:rcptto())
  vctx:set(msys.core.VCTX_MESS, "campaign", msg:header("X-Campaign")[1])
  msg:header("X-Campaign", "")
  return msys.core.VALIDATE_CONT
end""")
    session, message = at_data(engine, ("a@dest.example", "b@dest.example"))
    copies = [message.copy() for _ in message.rcpt_tos]
    for index, copy in enumerate(copies):
        assert session.validate_data_spool_each_rcpt(copy, index) == Continue()
        assert session.recipient_context(index)["campaign"] == "spring_sale"
    assert [copy.header(b"x-rcpt") for copy in copies] == [[b"a@dest.example"], [b"b@dest.example"]]
    assert message.content == MESSAGE


def test_header_work_on_a_large_message_is_charged_to_the_budget(tmp_path: Path) -> None:
    engine = engine_with(tmp_path, """
function mod:validate_data(msg, ac, vctx)
  for i = 1, 1e6 do msg:header("X-Count", tostring(i)) end
  return msys.core.VALIDATE_CONT
end""", max_seconds=600.0)  # only the budget may stop it, however busy the machine
    session, _ = at_data(engine)
    message = PolicyMessage(MESSAGE + b"x" * (4 << 20), "sender@origin.example", ["rcpt@dest.example"])
    started = time.thread_time()  # this thread's CPU time: the work charged, not the machine's load
    with pytest.raises(PolicyFailure, match="instruction budget exhausted"):
        session.validate_data(message)
    assert time.thread_time() - started < 2.0
