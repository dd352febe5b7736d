"""The sandbox: what scripts cannot reach, and the instruction, CPU and memory limits of each call."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from engaged.errors import ConfigError
from engaged.policy.engine import Continue, PolicyEngine, PolicyFailure
from engaged.policy.runtime import Sandbox, chunk_labels, split_position
from tests.policy.lua import at_data, engine_with, script


def connect(engine: PolicyEngine) -> object:
    return engine.session(peer_ip="192.0.2.7", listener="x", tls=False).validate_connect()


def probe(tmp_path: Path, expression: str) -> str:
    """The value of a Lua expression evaluated inside a callout, as a string."""
    engine = engine_with(tmp_path, f"""
function mod:validate_connect(ac, vctx)
  vctx:set(msys.core.VCTX_CONN, "probe", tostring({expression}))
  return msys.core.VALIDATE_CONT
end""")
    session = engine.session(peer_ip="192.0.2.7", listener="x", tls=False)
    assert session.validate_connect() == Continue()
    return session.connection_context()["probe"]


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("escape_os_execute", "attempt to index a nil value (global 'os')"),
        ("escape_require_os", "module 'os' not found"),
        ("escape_string_dump", "attempt to call a nil value (field 'dump')"),
        ("escape_load_bytecode", "only text chunks are allowed"),
        ("escape_string_metatable", "attempt to index a boolean value"),
    ],
)
def test_escape_attempts_fail_to_load_with_file_and_line(name: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        PolicyEngine.load([script(name)])
    [problem] = caught.value.problems
    assert problem.startswith(script(name) + ":")
    assert fragment in problem


def test_io_open_in_a_callout_fails_the_call() -> None:
    engine = PolicyEngine.load([script("escape_io_open")])
    with pytest.raises(PolicyFailure, match=r"attempt to index a nil value \(global 'io'\)") as caught:
        connect(engine)
    assert caught.value.line == 5


def test_string_dump_is_not_reachable_through_string_methods() -> None:
    assert PolicyEngine.load([script("escape_dump_method")]).active


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("os", "nil"), ("io", "nil"), ("debug", "nil"), ("package", "nil"), ("python", "nil"),
        ("dofile", "nil"), ("loadfile", "nil"), ("warn", "nil"), ("string.dump", "nil"),
        ("getmetatable('')", "false"), ("getmetatable(vctx)", "false"), ("type(vctx.set)", "function"),
        ("_G == _ENV", "true"), ("select(2, pcall(require, 'msys.db')):match('not found') ~= nil", "true"),
        ("select(2, pcall(collectgarbage, 'collect')):match('only') ~= nil", "true"),
        ("collectgarbage('count') > 0", "true"),
        ("select(2, pcall(setmetatable, {}, {__gc = print})):match('__gc') ~= nil", "true"),
        ("type(print)", "function"), ("type(msys.registerModule)", "function"),
    ],
)
def test_dangerous_globals_are_absent_or_locked(tmp_path: Path, expression: str, expected: str) -> None:
    assert probe(tmp_path, expression) == expected


def test_scripts_do_not_share_globals(tmp_path: Path) -> None:
    first = tmp_path / "first.lua"
    first.write_text('string.upper = nil\nshared = "first"\nrequire("msys.core")\n'
                     'msys.registerModule("first", {validate_connect = function() return 0 end})')
    second = tmp_path / "second.lua"
    second.write_text('require("msys.core")\nlocal mod = {}\nfunction mod:validate_connect(ac, vctx)\n'
                      '  vctx:set(msys.core.VCTX_CONN, "seen", tostring(shared) .. string.upper("x"))\n'
                      '  return msys.core.VALIDATE_CONT\nend\nmsys.registerModule("second", mod)')
    engine = PolicyEngine.load([str(first), str(second)])
    session = engine.session(peer_ip="192.0.2.7", listener="x", tls=False)
    session.validate_connect()
    assert session.connection_context()["seen"] == "nilX"


@pytest.mark.parametrize(
    "body",
    [
        "while true do end",
        "while true do pcall(function() while true do end end) end",
        "while true do coroutine.wrap(function() for i = 1, 999 do end end)() end",
        "local co = coroutine.create(function() while true do end end) coroutine.resume(co) while true do end",
        "while true do xpcall(function() while true do end end, function() while true do end end) end",
        "local function f() return f() end return f()",
        "local t = setmetatable({}, {__index = function(t, k) while true do end end}) return t.x",
        "table.move({}, 1, 1e12, 2)",
        "local t = {} for i = 1, 1e5 do t[i] = i end while true do table.insert(t, 1, 0) end",
        "local s = string.rep('x', 1e6) while true do s:find('y') end",
        "local s = string.rep('é', 5e5) while true do utf8.len(s) end",
        "string.rep('x', 1e9)",
    ],
)
def test_runaway_callouts_are_stopped_quickly_and_the_next_call_works(tmp_path: Path, body: str) -> None:
    engine = engine_with(tmp_path, f"""
local calls = 0
function mod:validate_connect(ac, vctx)
  calls = calls + 1
  if calls == 1 then {body} end
  return msys.core.VALIDATE_CONT
end""", max_seconds=600.0)  # only the budget may stop it, however busy the machine
    # "Quickly" in this thread's CPU time: the work the budget allows, not what a loaded machine adds.
    started = time.thread_time()
    with pytest.raises(PolicyFailure, match="instruction budget exhausted"):
        connect(engine)
    assert time.thread_time() - started < 1.0
    assert connect(engine) == Continue()


def test_expensive_instructions_are_stopped_by_the_cpu_limit(tmp_path: Path) -> None:
    engine = engine_with(tmp_path, """
function mod:validate_connect(ac, vctx)
  local a, b = ("x"):rep(4e6) .. "a", ("x"):rep(4e6) .. "b"
  local n = 0
  while true do if a == b then n = n + 1 end end
end""", max_instructions=100_000_000, max_seconds=0.05)
    started = time.thread_time()
    with pytest.raises(PolicyFailure, match="CPU time limit exhausted"):
        connect(engine)
    assert time.thread_time() - started < 2.0


def test_budget_applies_to_the_top_level_of_a_script(tmp_path: Path) -> None:
    path = tmp_path / "spin.lua"
    path.write_text("local n = 0\nwhile true do n = n + 1 end\n")
    with pytest.raises(ConfigError, match=r"spin.lua:2: instruction budget exhausted"):
        PolicyEngine.load([str(path)])


def test_a_loop_inside_the_instruction_budget_completes(tmp_path: Path) -> None:
    assert probe(tmp_path, "(function() local n = 0 for i = 1, 100000 do n = n + i end return n end)()") == (
        "5000050000"
    )


def test_memory_cap_failure_then_recovery(tmp_path: Path) -> None:
    engine = engine_with(tmp_path, """
local calls = 0
function mod:validate_data(msg, ac, vctx)
  calls = calls + 1
  if calls == 1 then local t = {} for i = 1, 1e9 do t[i] = ("%d"):format(i) .. "........" end end
  return msys.core.VALIDATE_CONT
end""", max_memory=8 << 20, max_instructions=100_000_000, max_seconds=10)
    session, message = at_data(engine)
    with pytest.raises(PolicyFailure, match="not enough memory"):
        session.validate_data(message)
    assert session.validate_data(message) == Continue()


def test_error_objects_that_are_not_strings_are_described(tmp_path: Path) -> None:
    engine = engine_with(tmp_path, """
function mod:validate_connect()
  error(setmetatable({}, {__tostring = function() while true do end end}))
end""")
    with pytest.raises(PolicyFailure, match=r"\(error object is a table value\)"):
        connect(engine)


def test_limits_below_the_minimum_are_refused() -> None:
    with pytest.raises(ValueError, match="max_memory"):
        Sandbox(max_memory=1024, max_instructions=1_000_000, max_seconds=1)


def test_long_script_paths_get_short_labels_that_map_back() -> None:
    long = "/" + "d" * 80 + "/policy.lua"
    labels = chunk_labels(["short.lua", long])
    assert labels == {"short.lua": "short.lua", long: "policy.lua#1"}
    mapping = {label: path for path, label in labels.items()}
    assert split_position("policy.lua#1:7: boom", mapping.get) == (long, 7, "boom")
    assert split_position('[string "x"]:1: boom', mapping.get) == (None, 0, '[string "x"]:1: boom')
    assert split_position('[string "<python>"]:9: instruction budget exhausted', mapping.get) == (
        None, 0, "instruction budget exhausted"
    )


def test_budget_exhausted_inside_a_resumed_coroutine_still_fails_the_call(tmp_path: Path) -> None:
    engine = engine_with(tmp_path, """
local stored = coroutine.create(function() while true do end end)
function mod:validate_connect()
  coroutine.resume(stored)
  return msys.core.VALIDATE_CONT
end""")
    with pytest.raises(PolicyFailure) as caught:
        connect(engine)
    assert caught.value.message == "instruction budget exhausted"
