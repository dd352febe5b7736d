"""The sandboxed Lua 5.4 state behind the policy engine: what scripts may reach, and how each call is bounded."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

import lupa.lua54 as lua54

LuaError = lua54.LuaError
HOOK_STEP = 100
"""Instructions between two hook calls (a hook call costs about as much as 100 instructions)."""
HOOK_FINE_STEP = 10
"""The step once an interval took longer than SLOW_INTERVAL seconds (instructions on huge strings)."""
SLOW_INTERVAL = 0.0005

_PRELUDE = rb"""
local STEP, FINE, SLOW, LIMIT, SECONDS = ...
local sethook, gethook, getinfo, clock = debug.sethook, debug.gethook, debug.getinfo, os.clock
local error, type, pairs, select, rawget, rawlen = error, type, pairs, select, rawget, rawlen
local pack, unpack = table.pack, table.unpack
local real_load, real_pcall, real_setmetatable = load, pcall, setmetatable
-- The clock starts at the call's first hook (100 instructions in), which spares a clock read for short calls.
local budget = {used = 0, limit = LIMIT, deadline = nil, last = 0, reason = nil}

local hook
hook = function()
  local _, _, count = gethook()
  local used = budget.used + count
  budget.used = used
  local reason = budget.reason
  local now = clock()
  if budget.deadline == nil then
    budget.deadline, budget.last = now + SECONDS, now
  end
  if reason == nil then
    if used > budget.limit then
      reason = "instruction budget exhausted"
    elseif now > budget.deadline then
      reason = "CPU time limit exhausted"
    end
  end
  if reason ~= nil then
    budget.reason = reason
    if count ~= 1 then sethook(hook, "", 1) end
    error(reason, 2)
  end
  -- Instructions on huge strings (==, <, ..) cost up to milliseconds each: check the clock more often then.
  local step = (count == FINE or now - budget.last > SLOW) and FINE or STEP
  budget.last = now
  if count ~= step then sethook(hook, "", step) end
end

-- Arms the hook, then tail-calls pcall: once pcall returns, no Lua instruction of ours runs under the hook
-- (an exhausted budget would fail it); Python removes the hook with a direct call to the C function.
local function run(f, ...)
  budget.used, budget.reason, budget.deadline = 0, nil, nil
  sethook(hook, "", STEP)
  return real_pcall(f, ...)
end

local function charge(units)
  local used = budget.used + units
  budget.used = used
  if used > budget.limit then
    budget.reason = "instruction budget exhausted"
    error("instruction budget exhausted", 3)
  end
end

local function bytes(s) return type(s) == "string" and #s // 32 or 0 end

-- String functions are patched in the real string table: the string metatable's __index points at it.
local S = string
S.dump = nil
local rep, gsub, fmt = S.rep, S.gsub, S.format
local concat, move, insert, remove = table.concat, table.move, table.insert, table.remove
S.rep = function(s, n, sep)
  if type(n) == "number" and n > 0 then
    local unit = (type(s) == "string" and #s or 16) + (type(sep) == "string" and #sep or 0)
    charge(unit * n // 32)
  end
  return rep(s, n, sep)
end
S.gsub = function(s, p, r, n)
  charge(bytes(s))
  local out, count = gsub(s, p, r, n)
  charge(bytes(out))
  return out, count
end
S.format = function(...) local out = fmt(...) charge(bytes(out)) return out end
for _, name in pairs({"find", "match", "gmatch", "upper", "lower", "reverse"}) do
  local f = S[name]
  S[name] = function(s, ...) charge(bytes(s)) return f(s, ...) end
end
for _, name in pairs({"len", "offset", "codepoint"}) do
  local f = utf8[name]
  utf8[name] = function(s, ...) charge(bytes(s)) return f(s, ...) end
end
local sub = S.sub
S.sub = function(...) local out = sub(...) charge(bytes(out)) return out end
getmetatable("").__metatable = false

local T = table
T.concat = function(t, sep, i, j) local out = concat(t, sep, i, j) charge(bytes(out)) return out end
T.move = function(a, f, e, t, b)
  if type(f) == "number" and type(e) == "number" and e >= f then charge(e - f + 1) end
  return move(a, f, e, t, b)
end
-- insert/remove shift elements up to #t (which may come from __len): charge that many.
local function length(t) local n = #t return type(n) == "number" and n or 0 end
T.insert = function(t, ...)
  if select("#", ...) == 2 then charge(length(t)) end
  return insert(t, ...)
end
T.remove = function(t, pos)
  if pos ~= nil then charge(length(t)) end
  return remove(t, pos)
end

local cocreate, coresume = coroutine.create, coroutine.resume
local safe_coroutine = {}
for k, v in pairs(coroutine) do safe_coroutine[k] = v end
safe_coroutine.create = function(f)
  if type(f) ~= "function" then error("bad argument #1 to 'create' (function expected)", 2) end
  return cocreate(function(...) sethook(hook, "", STEP) return f(...) end)
end
safe_coroutine.wrap = function(f)
  local co = safe_coroutine.create(f)
  return function(...)
    local r = pack(coresume(co, ...))
    if r[1] then return unpack(r, 2, r.n) end
    error(r[2], 0)
  end
end

local function safe_xpcall(f, handler, ...)
  local r = pack(real_pcall(f, ...))
  if r[1] then return unpack(r, 1, r.n) end
  local ok, value = real_pcall(handler, r[2])
  return false, value
end

local function safe_setmetatable(t, mt)
  if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
    error("setmetatable: __gc metamethods are not allowed in policy scripts", 2)
  end
  return real_setmetatable(t, mt)
end

local real_collect = collectgarbage
local function safe_collect(option)
  if option == "count" then return real_collect("count") end
  error("collectgarbage: only 'count' is allowed in policy scripts", 2)
end

local BASICS = {"assert", "error", "ipairs", "next", "pairs", "pcall", "rawequal", "rawget", "rawlen", "rawset",
                "select", "tonumber", "tostring", "type", "getmetatable", "_VERSION"}
local LIBRARIES = {string = string, table = table, math = math, utf8 = utf8, coroutine = safe_coroutine}
local G = _G
local basics = {}
for _, name in pairs(BASICS) do basics[name] = G[name] end

local function copy(t) local c = {} for k, v in pairs(t) do c[k] = v end return c end

local function new_env()
  local env = copy(basics)
  for name, lib in pairs(LIBRARIES) do env[name] = copy(lib) end
  env.xpcall = safe_xpcall
  env.setmetatable = safe_setmetatable
  env.collectgarbage = safe_collect
  env.load = function(chunk, name, mode, chunk_env)
    if mode ~= nil and mode ~= "t" then return nil, "load: only text chunks are allowed in policy scripts" end
    if type(chunk) == "string" then charge(bytes(chunk)) end
    if chunk_env == nil then chunk_env = env end
    return real_load(chunk, name, "t", chunk_env)
  end
  env._G = env
  return env
end

local function compile(source, chunkname, env) return real_load(source, chunkname, "t", env) end

for _, name in pairs({"os", "io", "debug", "package", "require", "dofile", "loadfile", "load", "warn", "python",
                      "collectgarbage", "print"}) do G[name] = nil end

return {run = run, sethook = sethook, getinfo = getinfo, new_env = new_env,
        compile = compile, budget = budget}
"""

_POSITION = re.compile(rb"\A(.*?):(\d+): (.*)\Z", re.DOTALL)
_TRUSTED_CHUNK = '[string "<python>"]'
"""How Lua names the engine's own chunks (run through LuaRuntime.execute) in error positions."""


def _refuse_attribute(obj: object, name: object, is_setting: bool) -> object:
    raise AttributeError("Python attributes are not available to policy scripts")


class CallError(Exception):
    """A Lua chunk or function failed: `text` is Lua's message, usually `chunk:line: message`."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class Sandbox:
    """One Lua 5.4 state; every script gets its own environment, every call its own budget. Not thread-safe.

    Measures, all set up here before any script runs:

    * lupa is built with `register_eval=False`, `register_builtins=False`, `unpack_returned_tuples=True`,
      `encoding=None` (Lua strings cross as bytes, so no decoding error can surface inside Lua) and an
      attribute filter that refuses every attribute. Scripts are never handed a Python object: the API is
      made of Lua closures that keep the Python callables in upvalues, unreachable without `debug`.
    * Every script runs in its own environment table holding only: assert error ipairs next pairs pcall
      rawequal rawget rawlen rawset select tonumber tostring type _VERSION, copies of string (no `dump`),
      table, math, utf8 and coroutine, a text-only `load`, `xpcall`, `setmetatable` refusing `__gc`,
      `getmetatable`, `collectgarbage("count")`, plus what `msys.py` adds (msys, require, print).
      `os`, `io`, `debug`, `package`, `dofile`, `loadfile`, `warn` and lupa's `python` are absent, and are
      also deleted from the real global table. The string metatable is locked (`getmetatable("")` is false).
    * The memory cap is lupa's allocator limit (`max_memory`); an allocation over it fails the call with
      "not enough memory".
    * The instruction budget is a count hook (every 100 instructions) installed with `debug.sethook` before
      `debug` is removed. It keeps one counter per call, shared by coroutines (which are created with the
      hook installed; an exhaustion that coroutine.resume swallows still fails the call), switches to a hook
      on every instruction once exhausted so a `pcall` cannot swallow the error, and checks the process CPU
      clock against `max_seconds`, every 10 instructions once instructions turn slow (== or .. on strings
      of megabytes). C functions whose work grows with their input (string.rep, gsub, find, match, format,
      sub, upper, utf8.len, table.move, insert, remove, concat, load …) are charged one instruction per
      32 bytes or per element moved, and the API charges header work on large messages. `xpcall` runs its
      handler after unwinding, because Lua runs a message handler with hooks off when the error comes from
      the hook itself.
    * Known limit: a single pattern-matching call with heavy backtracking (`("a"):rep(1e5):find(".-.-.-b")`)
      runs inside C where no hook fires; the memory cap bounds the subject, not the matcher's time.
    """

    def __init__(self, *, max_memory: int, max_instructions: int, max_seconds: float) -> None:
        if max_memory < 1 << 20 or max_instructions < 1000 or max_seconds <= 0:
            raise ValueError("policy limits: max_memory >= 1 MiB, max_instructions >= 1000, max_seconds > 0")
        self.lua = lua54.LuaRuntime(
            encoding=None,
            register_eval=False,
            register_builtins=False,
            unpack_returned_tuples=True,
            attribute_filter=_refuse_attribute,
            max_memory=max_memory,
        )
        trusted = self.lua.execute(_PRELUDE, HOOK_STEP, HOOK_FINE_STEP, SLOW_INTERVAL, max_instructions, max_seconds)
        self._budget: Any = trusted[b"budget"]
        self._limit = max_instructions
        self._run: Any = trusted[b"run"]
        self._sethook: Any = trusted[b"sethook"]
        self._getinfo: Any = trusted[b"getinfo"]
        self._new_env: Any = trusted[b"new_env"]
        self._compile: Any = trusted[b"compile"]

    def trusted(self, source: bytes, *args: object) -> Any:
        """Run engine-owned Lua (not a script) in the real state, e.g. to build the msys API."""
        return self.lua.execute(source, *args)

    def new_env(self) -> Any:
        """A fresh script environment with only the safe globals."""
        return self._new_env()

    def compile(self, source: bytes, chunkname: str, env: Any) -> Any:
        """Compile text (never bytecode) into a function bound to `env`; CallError on a syntax error."""
        compiled = self._compile(source, b"@" + chunkname.encode("utf-8"), env)
        if isinstance(compiled, tuple):
            raise CallError(_text(compiled[1]))
        return compiled

    def call(self, function: Any, *args: object) -> tuple[Any, ...]:
        """Call a Lua function under the instruction budget; its results, or CallError."""
        try:
            outcome: Any = self._run(function, *args)
        except LuaError as error:
            outcome = (False, str(error).encode("utf-8", "replace"))
        finally:
            self._sethook()
        if not isinstance(outcome, tuple):
            outcome = (outcome,)
        exhausted = self._budget[b"reason"]
        if outcome[0] is True and exhausted is None:
            results: tuple[Any, ...] = outcome[1:]
            return results
        problem = outcome[1] if outcome[0] is not True and len(outcome) > 1 else None
        if exhausted is not None and exhausted not in _bytes(problem):
            # Swallowed by coroutine.resume or pcall and followed by success or another error: still exhausted.
            problem = exhausted
        if b"not enough memory" in _bytes(problem):
            self.lua.gccollect()
        raise CallError(_text(problem))

    def charge(self, units: int) -> bool:
        """Count work done in Python for the running call against its budget; True once it is exhausted."""
        used = self._budget[b"used"] + units
        self._budget[b"used"] = used
        return bool(used > self._limit)

    def defined_at(self, function: Any) -> int:
        """The line where a Lua function was defined (0 for C functions)."""
        info = self._getinfo(function, b"S")
        line = info[b"linedefined"]
        return line if isinstance(line, int) and line > 0 else 0

    def table(self, *values: object) -> Any:
        """A Lua array of the given values."""
        return self.lua.table(*values)


def _bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else b""


def _text(problem: object) -> str:
    if isinstance(problem, bytes):
        return problem.decode("utf-8", "replace")
    if isinstance(problem, (int, float)):
        return str(problem)
    return f"(error object is a {lua54.lua_type(problem) or 'nil'} value)"


def split_position(text: str, labels: Callable[[str], str | None]) -> tuple[str | None, int, str]:
    """(script, line, message) from `chunk:line: message`; script is None when the chunk is not a script."""
    found = _POSITION.match(text.encode("utf-8"))
    if found is not None:
        chunk, message = found.group(1).decode("utf-8", "replace"), found.group(3).decode("utf-8", "replace")
        script = labels(chunk)
        if script is not None:
            return script, int(found.group(2)), message
        if chunk == _TRUSTED_CHUNK:
            return None, 0, message
    return None, 0, text


def chunk_labels(scripts: list[str]) -> dict[str, str]:
    """Chunk name per script path: the path when short (Lua cuts names over ~57 bytes), else basename#index."""
    labels: dict[str, str] = {}
    for index, path in enumerate(scripts):
        labels[path] = path if len(path.encode("utf-8")) <= 55 else f"{os.path.basename(path)[-40:]}#{index}"
    return labels
