"""The API policy scripts see (msys.*, require, print, msg:*, vctx:*), backed by the Python state of the call."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from engaged.policy.context import CONNECTION, HEADER_MODES, MESSAGE, HeaderEditError, PolicyMessage
from engaged.policy.hooks import CONT_DONE_AGAIN, HOOKS_BY_NAME, RETURN_VALUES, UNSUPPORTED
from engaged.policy.runtime import Sandbox

log = logging.getLogger("engaged.policy")

VALIDATE_CONT, VALIDATE_DONE, VALIDATE_AGAIN = (RETURN_VALUES[name] for name in CONT_DONE_AGAIN)
_MACRO = re.compile(rb"%\{vctx_(conn|mess):([^}]*)\}")
_ENHANCED = re.compile(r"([245])\.\d{1,3}\.\d{1,3}\Z")
DEFAULT_ENHANCED = {4: "4.7.1", 5: "5.7.1"}
MAX_KEY_BYTES, MAX_VALUE_BYTES, MAX_VARIABLES = 256, 65_536, 1_000
"""Context bounds: the dictionaries live in Python, outside the Lua memory cap."""
DEFAULT_TEXT = {4: "Temporarily rejected by policy", 5: "Rejected by policy"}

_API = rb"""
local py, known, unsupported, CONST = ...
local error, type, tostring, select, pcall = error, type, tostring, select, pcall
local setmetatable, next = setmetatable, next
local concat, format, math_type = table.concat, string.format, math.type

-- Python answers (true, value) or (false, reason); only msg:code() answers (true, code, text).
local function call(what, f, ...)
  local ok, status, value, more = pcall(f, ...)
  if not ok then error(what .. ": internal error", 3) end
  if status ~= true then error(what .. ": " .. tostring(value), 3) end
  return value, more
end
local function kind(what, t)
  if t ~= CONST.VCTX_MESS and t ~= CONST.VCTX_CONN then
    error(what .. ": type must be msys.core.VCTX_MESS or msys.core.VCTX_CONN", 3)
  end
  return t
end
local function key(what, k)
  if type(k) == "string" then return k end
  if type(k) == "number" then return tostring(k) end
  error(what .. ": key must be a string", 3)
end
local function value(what, v)
  local tv = type(v)
  if tv == "string" or tv == "nil" then return v end
  if tv == "boolean" then return tostring(v) end
  if tv == "number" then return math_type(v) == "integer" and tostring(v) or format("%.14g", v) end
  error(what .. ": value must be a string, number, boolean or nil", 3)
end
local function number(what, n)
  if type(n) ~= "number" then error(what .. ": code must be a number", 3) end
  return n
end
local function text(what, s)
  if s == nil or type(s) == "string" then return s end
  error(what .. ": message must be a string", 3)
end

local vctx_methods = {
  get = function(self, t, k) local v = call("vctx:get", py.get, kind("vctx:get", t), key("vctx:get", k)) return v end,
  set = function(self, t, k, v)
    call("vctx:set", py.set, kind("vctx:set", t), key("vctx:set", k), value("vctx:set", v))
  end,
  set_code = function(self, code, message)
    call("vctx:set_code", py.set_code, number("vctx:set_code", code), text("vctx:set_code", message))
  end,
}
local msg_methods = {
  context_get = function(self, t, k)
    local v = call("msg:context_get", py.get, kind("msg:context_get", t), key("msg:context_get", k)) return v
  end,
  context_set = function(self, t, k, v)
    call("msg:context_set", py.set, kind("msg:context_set", t), key("msg:context_set", k), value("msg:context_set", v))
  end,
  context_exists = function(self, t, k)
    local v = call("msg:context_exists", py.exists, kind("msg:context_exists", t), key("msg:context_exists", k))
    return v
  end,
  context_delete = function(self, t, k)
    local v = call("msg:context_delete", py.delete, kind("msg:context_delete", t), key("msg:context_delete", k))
    return v
  end,
  header = function(self, name, v, mode)
    if type(name) ~= "string" then error("msg:header: name must be a string", 2) end
    if v == nil then local values = call("msg:header", py.header_get, name) return values end
    if type(v) ~= "string" then error("msg:header: value must be a string", 2) end
    if mode ~= nil and type(mode) ~= "string" then error("msg:header: mode must be a string", 2) end
    call("msg:header", py.header_set, name, v, mode)
  end,
  mailfrom = function(self) local v = call("msg:mailfrom", py.mailfrom) return v end,
  rcptto = function(self) local v = call("msg:rcptto", py.rcptto) return v end,
  code = function(self, code, message)
    if code == nil then local c, m = call("msg:code", py.code_get) return c, m end
    call("msg:code", py.code_set, number("msg:code", code), text("msg:code", message))
  end,
}
local function locked(methods, what)
  return {__index = methods, __metatable = false, __newindex = function() error(what .. " is read-only", 2) end}
end
local msg_mt, vctx_mt, ac_mt = locked(msg_methods, "msg"), locked(vctx_methods, "vctx"), locked({}, "ac")

local PROVIDED = "engaged provides msys, msys.core, msys.extended.message, msys.extended.vctx, msys.extended.ac"

return function(env, label)
  local core = {}
  for k, v in next, CONST do core[k] = v end
  local msys = {core = core, extended = {message = {}, vctx = {}, ac = {}}}
  local modules = {["msys"] = msys, ["msys.core"] = core, ["msys.extended.message"] = msys.extended.message,
                   ["msys.extended.vctx"] = msys.extended.vctx, ["msys.extended.ac"] = msys.extended.ac}
  for _, lib in next, {"string", "table", "math", "utf8", "coroutine"} do modules[lib] = env[lib] end

  msys.registerModule = function(name, mod)
    if type(name) ~= "string" or name == "" then error("msys.registerModule: name must be a non-empty string", 2) end
    if type(mod) ~= "table" then error("msys.registerModule: module must be a table", 2) end
    local callouts, count = {}, 0
    for k, f in next, mod do
      if type(f) == "function" and type(k) == "string" and k:sub(1, 1) ~= "_" then
        if unsupported[k] then
          local why = unsupported[k]
          error(format("msys.registerModule: callout '%s' of module '%s' is not supported: %s", k, name, why), 2)
        elseif not known[k] then
          error(format("msys.registerModule: unknown callout '%s' in module '%s'", k, name), 2)
        end
        callouts[k] = f
        count = count + 1
      end
    end
    if count == 0 then error(format("msys.registerModule: no usable methods found in module '%s'", name), 2) end
    local record = {name = name, self = mod, callouts = callouts, msg = setmetatable({}, msg_mt),
                    vctx = setmetatable({}, vctx_mt), ac = setmetatable({}, ac_mt)}
    call("msys.registerModule", py.register, label, record)
  end
  msys.expandMacro = function(s)
    if type(s) ~= "string" then error("msys.expandMacro: argument must be a string", 2) end
    local v = call("msys.expandMacro", py.expand, s) return v
  end
  env.msys = msys
  env.require = function(name)
    local found = modules[name]
    if found == nil then error(format("module '%s' not found (%s)", tostring(name), PROVIDED), 2) end
    return found
  end
  env.print = function(...)
    local parts = {}
    for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
    call("print", py.log, label, concat(parts, "\t"))
  end
end
"""


class Refusal(Exception):
    """An API call a script may not make; the text becomes the Lua error after the function's name."""


class CallState:
    """What the API functions act on during one phase call; the engine creates one per phase."""

    __slots__ = ("code", "connection", "enhanced", "mail_from", "mess", "message", "phase", "rcpt_tos", "recipient",
                 "text")

    def __init__(
        self,
        phase: str,
        connection: dict[str, str],
        mess: dict[str, str] | None,
        *,
        message: PolicyMessage | None = None,
        mail_from: str = "",
        rcpt_tos: list[str] | None = None,
        recipient: str | None = None,
    ) -> None:
        self.phase = phase
        self.connection = connection
        self.mess = mess
        self.message = message
        self.mail_from = message.mail_from if message is not None else mail_from
        self.rcpt_tos = message.rcpt_tos if message is not None else (rcpt_tos or [])
        self.recipient = recipient
        self.code = 0
        self.enhanced = ""
        self.text = ""


class ScriptApi:
    """The Python half of the script API; `state` is the phase being called (None between calls).

    Scripts only ever hold Lua tables and Lua closures built here; the closures call the Python methods of
    `ScriptApi` through `pcall` and turn a refusal into a Lua error at the script's line ("vctx:set: …").
    What exists (see docs/policy/README.md for the details):

    * `msys.core`: VALIDATE_CONT=0, VALIDATE_DONE=1, VALIDATE_AGAIN=2, VCTX_MESS=ECMESS_CTX_MESS=1,
      VCTX_CONN=ECMESS_CTX_CONN=2; `msys.registerModule(name, table)`; `msys.expandMacro(text)` for
      `%{vctx_conn:key}` and `%{vctx_mess:key}` (unset keys expand to ""; other macros stay as written).
    * `require(name)` resolves msys, msys.core, msys.extended.message, msys.extended.vctx, msys.extended.ac and
      the standard string/table/math/utf8/coroutine; anything else (os, io, msys.db …) is a load error.
    * `vctx:get(type, key)` → string or nil; `vctx:set(type, key, value)` stores a string (numbers as Lua 5.1
      prints them, booleans as "true"/"false"; nil deletes); `vctx:set_code(code, message)`.
    * `msg:context_get/set/exists/delete(type, key[, value])` (exists/delete return 1 or 0), `msg:header(name[,
      value[, mode]])`, `msg:mailfrom()`, `msg:rcptto()`, `msg:code([code, text])`.
    * Contexts live in Python, outside the Lua memory cap, so they are bounded: keys up to 256 bytes, values
      and header values up to 64 KiB, 1,000 variables per context.
    """

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox
        self.state: CallState | None = None
        self.loading = False
        self.registered: list[tuple[str, Any]] = []
        self._names: set[str] = set()
        functions: dict[str, Callable[..., tuple[object, ...]]] = {
            "get": self._get, "set": self._set, "exists": self._exists, "delete": self._delete,
            "set_code": self._set_code, "code_get": self._code_get, "code_set": self._code_set,
            "header_get": self._header_get, "header_set": self._header_set, "mailfrom": self._mailfrom,
            "rcptto": self._rcptto, "expand": self._expand, "log": self._log, "register": self._register,
        }
        lua = sandbox.lua
        py = lua.table_from({name.encode(): _guard(name, function) for name, function in functions.items()})
        known = lua.table_from({name.encode(): True for name in HOOKS_BY_NAME})
        unsupported = lua.table_from({name.encode(): reason.encode() for name, reason in UNSUPPORTED.items()})
        constants = lua.table_from({
            b"VALIDATE_CONT": VALIDATE_CONT, b"VALIDATE_DONE": VALIDATE_DONE, b"VALIDATE_AGAIN": VALIDATE_AGAIN,
            b"VCTX_MESS": MESSAGE, b"VCTX_CONN": CONNECTION, b"ECMESS_CTX_MESS": MESSAGE,
            b"ECMESS_CTX_CONN": CONNECTION,
        })
        self._populate: Any = sandbox.trusted(_API, py, known, unsupported, constants)

    def populate(self, env: Any, label: str) -> None:
        """Give a script environment its msys table, require and print."""
        self._populate(env, label.encode("utf-8", "surrogateescape"))

    def _state(self) -> CallState:
        if self.state is None:
            raise Refusal("only available while a policy callout runs")
        return self.state

    def _charge(self, units: int) -> None:
        if units and self._sandbox.charge(units):
            raise Refusal("instruction budget exhausted")

    def _context(self, kind: object) -> dict[str, str]:
        state = self._state()
        if kind == CONNECTION:
            return state.connection
        if state.mess is None:
            raise Refusal("there is no message context before MAIL FROM")
        return state.mess

    def _get(self, kind: int, key: bytes) -> tuple[object, ...]:
        value = self._context(kind).get(_text(key, "key"))
        return True, None if value is None else value.encode("utf-8", "surrogateescape")

    def _set(self, kind: int, key: bytes, value: bytes | None) -> tuple[object, ...]:
        context = self._context(kind)
        if value is None:
            context.pop(_text(key, "key"), None)
            return (True,)
        if len(key) > MAX_KEY_BYTES or len(value) > MAX_VALUE_BYTES:
            raise Refusal(f"keys are limited to {MAX_KEY_BYTES} bytes and values to {MAX_VALUE_BYTES}")
        name = _text(key, "key")
        if name not in context and len(context) >= MAX_VARIABLES:
            raise Refusal(f"a context holds at most {MAX_VARIABLES} variables")
        context[name] = _text(value, "value")
        return (True,)

    def _exists(self, kind: int, key: bytes) -> tuple[object, ...]:
        return True, 1 if _text(key, "key") in self._context(kind) else 0

    def _delete(self, kind: int, key: bytes) -> tuple[object, ...]:
        return True, 1 if self._context(kind).pop(_text(key, "key"), None) is not None else 0

    def _set_code(self, code: float, message: bytes | None) -> tuple[object, ...]:
        state = self._state()
        if isinstance(code, bool) or code != int(code) or not 400 <= int(code) <= 599:
            raise Refusal("code must be a 4xx or 5xx reply code")
        number = int(code)
        words = _text(message or b"", "message").strip()
        if "\r" in words or "\n" in words or "\0" in words:
            raise Refusal("message must not contain CR, LF or NUL")
        first, _, rest = words.partition(" ")
        if first == str(number):
            words = rest.strip()
            first, _, rest = words.partition(" ")
        klass = number // 100
        enhanced = DEFAULT_ENHANCED[klass]
        found = _ENHANCED.match(first)
        if found is not None:
            words = rest.strip()
            if int(found.group(1)) == klass:
                enhanced = first
        state.code, state.enhanced, state.text = number, enhanced, words or DEFAULT_TEXT[klass]
        return (True,)

    def _code_get(self) -> tuple[object, ...]:
        state = self._state()
        if state.code == 0:
            return True, 250, b""
        return True, state.code, f"{state.enhanced} {state.text}".encode()

    def _code_set(self, code: float, message: bytes | None) -> tuple[object, ...]:
        if self._state().phase == "validate_set_binding":
            raise Refusal("the message code cannot be set in validate_set_binding")
        return self._set_code(code, message)

    def _message(self) -> PolicyMessage:
        message = self._state().message
        if message is None:
            raise Refusal("there is no message content before DATA")
        return message

    def _header_get(self, name: bytes) -> tuple[object, ...]:
        message = self._message()
        self._charge(len(message.content) // 4096)
        return True, self._sandbox.table(*message.header(name))

    def _header_set(self, name: bytes, value: bytes, mode: bytes | None) -> tuple[object, ...]:
        chosen = "replace" if mode is None else mode.decode("ascii", "replace").lower()
        if chosen not in HEADER_MODES:
            raise Refusal(f"unknown mode '{chosen}' (replace, append or prepend)")
        message = self._message()
        self._charge(len(message.content) // 1024)
        try:
            message.edit_header(name, value, chosen)
        except HeaderEditError as error:
            raise Refusal(str(error)) from None
        return (True,)

    def _mailfrom(self) -> tuple[object, ...]:
        return True, self._state().mail_from.encode("utf-8", "surrogateescape")

    def _rcptto(self) -> tuple[object, ...]:
        state = self._state()
        recipient = state.recipient if state.recipient is not None else next(iter(state.rcpt_tos), None)
        return True, None if recipient is None else recipient.encode("utf-8", "surrogateescape")

    def _expand(self, text: bytes) -> tuple[object, ...]:
        state = self._state()
        self._charge(len(text) // 32)

        def value(found: re.Match[bytes]) -> bytes:
            context = state.connection if found.group(1) == b"conn" else (state.mess or {})
            return context.get(found.group(2).decode("utf-8", "replace"), "").encode("utf-8", "surrogateescape")

        return True, _MACRO.sub(value, text)

    def _log(self, label: bytes, text: bytes) -> tuple[object, ...]:
        log.info("policy %s: %s", label.decode("utf-8", "replace"), text[:2000].decode("utf-8", "replace"))
        return (True,)

    def _register(self, label: bytes, record: Any) -> tuple[object, ...]:
        if not self.loading:
            raise Refusal("modules can only be registered while the scripts load")
        name = record[b"name"].decode("utf-8", "replace")
        if name in self._names:
            raise Refusal(f"module '{name}' is already registered")
        self._names.add(name)
        self.registered.append((label.decode("utf-8"), record))
        return (True,)


def _text(value: bytes, what: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise Refusal(f"{what} is not valid UTF-8") from None


def _guard(name: str, function: Callable[..., tuple[object, ...]]) -> Callable[..., tuple[object, ...]]:
    def guarded(*args: Any) -> tuple[object, ...]:
        try:
            return function(*args)
        except Refusal as refusal:
            return False, str(refusal).encode("utf-8", "surrogateescape")
        except Exception:
            log.exception("policy API %s failed", name)
            return False, b"internal error"

    return guarded
