"""The policy engine the SMTP session calls: load Momentum-style Lua scripts once, run their callouts per phase."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import msgspec

from engaged.errors import ConfigError, EngagedError
from engaged.policy.context import PolicyMessage, connection_variables, recipient_variables, sender_variables
from engaged.policy.hooks import HOOKS_BY_NAME, PHASES, HookSpec, check_return, describe_value
from engaged.policy.msys import VALIDATE_AGAIN, VALIDATE_DONE, CallState, ScriptApi
from engaged.policy.runtime import CallError, Sandbox, chunk_labels, split_position

__all__ = ["Continue", "PolicyEngine", "PolicyFailure", "PolicyMessage", "PolicySession", "Reject", "Verdict"]

log = logging.getLogger("engaged.policy")

MiB = 1 << 20
AGAIN_TEXT = "Policy evaluation deferred, try again later"


class Continue(msgspec.Struct, frozen=True):
    """The phase lets the SMTP command go on."""


class Reject(msgspec.Struct, frozen=True):
    """The phase refuses: answer `code enhanced text` (4xx temporary, 5xx permanent)."""

    code: int
    enhanced: str
    text: str

    @property
    def reply(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"


Verdict = Continue | Reject
CONTINUE = Continue()


class PolicyFailure(EngagedError):
    """A callout failed (Lua error, budget, memory, bad return); answer 451 4.3.0 and log `str(failure)`."""

    def __init__(self, *, script: str, line: int, message: str, phase: str, module: str) -> None:
        where = f"{script}:{line}" if line else script
        super().__init__(f"{where}: {message} (module '{module}', {phase})")
        self.script = script
        self.line = line
        self.message = message
        self.phase = phase
        self.module = module


class _Callout:
    __slots__ = ("args", "function", "line", "module", "script")

    def __init__(self, script: str, module: str, function: Any, args: tuple[Any, ...], line: int) -> None:
        self.script = script
        self.module = module
        self.function = function
        self.args = args
        self.line = line


class PolicyEngine:
    """One Lua state and the registered modules; one engine per event-loop thread (it is not thread-safe).

    Outcomes: every PolicySession validate_* method returns a Verdict, `Continue()` or
    `Reject(code, enhanced, text)` (4xx is temporary), or raises `PolicyFailure` when a callout fails (Lua
    error, instruction/CPU budget, memory cap, invalid return value); the caller answers that with 451 4.3.0
    and logs it. Within a phase, modules run in load order; VALIDATE_DONE skips the remaining modules of the
    phase; VALIDATE_AGAIN ends the phase with Reject(451, "4.3.0", …) (no asynchronous continuation) unless a
    module already set a code; a code set with vctx:set_code or msg:code becomes the phase's Reject once the
    phase ends. A missing or invalid return value is a PolicyFailure at the function's definition line.
    """

    def __init__(self, sandbox: Sandbox | None, api: ScriptApi | None, labels: dict[str, str]) -> None:
        self._sandbox = sandbox
        self._api = api
        self._labels = labels
        self._phases: dict[str, list[_Callout]] = {phase: [] for phase in (*PHASES, "init", "deinit")}

    @classmethod
    def load(
        cls,
        scripts: list[str],
        *,
        max_memory: int = 32 * MiB,
        max_instructions: int = 1_000_000,
        max_seconds: float = 0.25,
    ) -> PolicyEngine:
        """Load every script now; raises ConfigError with one `file:line: message` per script that fails.

        `max_instructions` and `max_seconds` (process CPU time, a net for costly C calls) bound each callout
        and each script's top level; `max_memory` caps the whole Lua state.
        """
        if not scripts:
            return cls(None, None, {})
        sandbox = Sandbox(max_memory=max_memory, max_instructions=max_instructions, max_seconds=max_seconds)
        api = ScriptApi(sandbox)
        labels = chunk_labels(scripts)
        engine = cls(sandbox, api, {label: path for path, label in labels.items()})
        problems = [problem for path in scripts if (problem := engine._load_script(path, labels[path]))]
        if problems:
            raise ConfigError(problems)
        return engine

    @property
    def active(self) -> bool:
        """False when no module is registered: callers may skip every policy call."""
        return any(self._phases[phase] for phase in PHASES)

    def session(self, *, peer_ip: str, listener: str, tls: bool, can_relay: bool = False) -> PolicySession:
        """A policy session for one SMTP connection."""
        return PolicySession(self, peer_ip=peer_ip, listener=listener, tls=tls, can_relay=can_relay)

    def close(self) -> None:
        """Run every module's deinit (failures are logged) and forget the modules."""
        for callout in self._phases["deinit"]:
            try:
                self._call_checked(callout, "deinit", HOOKS_BY_NAME["deinit"])
            except PolicyFailure as failure:
                log.error("policy deinit failed: %s", failure)
        self._phases = {phase: [] for phase in self._phases}

    def run(self, state: CallState, argument: str | None = None) -> Verdict:
        """Run one phase's callouts against `state` (used by PolicySession)."""
        callouts = self._phases[state.phase]
        if not callouts or self._api is None:
            return CONTINUE
        spec = HOOKS_BY_NAME[state.phase]
        raw = None if argument is None else argument.encode("utf-8", "surrogateescape")
        self._api.state = state
        try:
            for callout in callouts:
                status = self._call_checked(callout, state.phase, spec, raw)
                if status == VALIDATE_AGAIN:
                    if state.code:
                        break
                    return Reject(451, "4.3.0", AGAIN_TEXT)
                if status == VALIDATE_DONE:
                    break
        finally:
            self._api.state = None
        if state.code:
            return Reject(state.code, state.enhanced, state.text)
        return CONTINUE

    def _call_checked(self, callout: _Callout, phase: str, spec: HookSpec, argument: bytes | None = None) -> object:
        if self._sandbox is None:
            return None
        args = [argument if slot is None else slot for slot in callout.args]
        try:
            results = self._sandbox.call(callout.function, *args)
        except CallError as error:
            script, line, message = split_position(error.text, self._labels.get)
            if script is None:
                script, line = callout.script, 0
            raise PolicyFailure(script=script, line=line, message=message, phase=phase, module=callout.module) from None
        first = results[0] if results else None
        status = check_return(first, spec)
        if status is None:
            expected = " or ".join(spec.returns)
            raise PolicyFailure(
                script=callout.script,
                line=callout.line,
                message=f"{phase} returned {describe_value(first)}; expected {expected}",
                phase=phase,
                module=callout.module,
            )
        return status

    def _load_script(self, path: str, label: str) -> str | None:
        sandbox, api = self._sandbox, self._api
        if sandbox is None or api is None:
            return None
        try:
            source = Path(path).read_bytes()
        except OSError as error:
            return f"{path}: cannot read policy script: {error.strerror}"
        env = sandbox.new_env()
        api.populate(env, label)
        api.loading, first = True, len(api.registered)
        try:
            sandbox.call(sandbox.compile(source, label, env))
        except CallError as error:
            script, line, message = split_position(error.text, self._labels.get)
            return f"{script or path}:{line}: {message}" if line else f"{path}: {message}"
        finally:
            api.loading = False
        for _, record in api.registered[first:]:
            problem = self._register(path, record)
            if problem:
                return problem
        return None

    def _register(self, path: str, record: Any) -> str | None:
        if self._sandbox is None:
            return None
        module = record[b"name"].decode("utf-8", "replace")
        slots = {"msg": record[b"msg"], "vctx": record[b"vctx"], "ac": record[b"ac"], "str": None}
        callouts = {name.decode("utf-8"): function for name, function in record[b"callouts"].items()}
        for name in (*PHASES, "init", "deinit"):
            function = callouts.get(name)
            if function is None:
                continue
            args = (record[b"self"], *(slots[arg] for arg in HOOKS_BY_NAME[name].args))
            line = self._sandbox.defined_at(function)
            self._phases[name].append(_Callout(path, module, function, args, line))
        init = next((c for c in self._phases["init"] if c.module == module and c.script == path), None)
        if init is not None:
            try:
                self._call_checked(init, "init", HOOKS_BY_NAME["init"])
            except PolicyFailure as failure:
                return f"{failure.script}:{failure.line}: {failure.message}"
        return None


class PolicySession:
    """The policy side of one SMTP connection: its connection context and the current message's context.

    Contexts are `dict[str, str]` (Momentum keeps every value as a string):

    * `connection_context()`: remote_ip, listener, tls, can_relay, connection_message_count,
      connection_rcpt_count, ehlo_domain, ehlo_string, auth_user, auth_status, auth_name, plus what scripts
      set with VCTX_CONN. It lives as long as the connection.
    * `message_context()`: mailfrom_string/localpart/domain, message_rcpt_count, rcptto_* of the last
      accepted recipient, plus what scripts set with VCTX_MESS up to and including validate_data_spool
      (and, later, validate_set_binding / core_final_validation). Emptied by each validate_mailfrom.
    * `recipient_context(i)`: the message context as validate_data_spool_each_rcpt left it for recipient
      i (rcptto_* are that recipient's), plus the connection variables that call set or changed. The
      message and connection contexts are restored after each recipient, so nothing one recipient sets
      leaks to another. Merge per recipient as `connection_context() | recipient_context(i)`; before
      validate_data_spool_each_rcpt ran for i, recipient_context(i) is `message_context()`.

    Predefined variables are set before the phase's callouts run. When a validate_mailfrom or
    validate_rcptto call does not Continue, the counters and variables it set are rolled back.
    """

    def __init__(self, engine: PolicyEngine, *, peer_ip: str, listener: str, tls: bool, can_relay: bool) -> None:
        self._engine = engine
        self._connection = connection_variables(peer_ip=peer_ip, listener=listener, tls=tls, can_relay=can_relay)
        self._mess: dict[str, str] | None = None
        self._mail_from = ""
        self._rcpt_tos: list[str] = []
        self._recipients: dict[int, dict[str, str]] = {}
        self._messages = 0
        self._rcpts = 0

    def set_auth(self, user: str, status: str, *, mechanism: str = "") -> None:
        """auth_user, auth_status ("pass", "fail" or "error") and auth_name (the SASL mechanism, if given).

        A "pass" also sets can_relay to "true", as authenticated clients may inject.
        """
        if status not in ("pass", "fail", "error"):
            raise ValueError(f"auth status must be pass, fail or error, not {status!r}")
        self._connection.update(auth_user=user, auth_status=status)
        if mechanism:
            self._connection["auth_name"] = mechanism
        if status == "pass":
            self._connection["can_relay"] = "true"

    def validate_connect(self) -> Verdict:
        return self._engine.run(CallState("validate_connect", self._connection, None))

    def validate_ehlo(self, helo: str) -> Verdict:
        """Sets ehlo_string (the argument) and ehlo_domain (its first word); a new EHLO drops any message."""
        words = helo.split()
        self._connection.update(ehlo_string=helo.strip(), ehlo_domain=words[0] if words else "")
        self.reset()
        return self._engine.run(CallState("validate_ehlo", self._connection, None), helo)

    def validate_mailfrom(self, address: str) -> Verdict:
        """Starts a new message context (mailfrom_* variables) and counts the message on the connection."""
        self.reset()
        self._mess, self._mail_from = sender_variables(address), address
        self._messages += 1
        self._connection["connection_message_count"] = str(self._messages)
        state = CallState("validate_mailfrom", self._connection, self._mess, mail_from=address)
        try:
            verdict = self._engine.run(state, address)
        except PolicyFailure:
            self._undo_mailfrom()
            raise
        if isinstance(verdict, Reject):
            self._undo_mailfrom()
        return verdict

    def validate_rcptto(self, address: str) -> Verdict:
        """Sets rcptto_* and counts the recipient (message_rcpt_count, connection_rcpt_count)."""
        mess = self._message_context()
        saved = {key: mess.get(key) for key in (*recipient_variables(""), "message_rcpt_count")}
        mess.update(recipient_variables(address))
        self._rcpt_tos.append(address)
        self._count_rcpts()
        state = CallState("validate_rcptto", self._connection, mess, mail_from=self._mail_from,
                          rcpt_tos=list(self._rcpt_tos), recipient=address)
        try:
            verdict = self._engine.run(state, address)
        except PolicyFailure:
            self._undo_rcptto(saved)
            raise
        if isinstance(verdict, Reject):
            self._undo_rcptto(saved)
        return verdict

    def validate_data(self, message: PolicyMessage) -> Verdict:
        return self._engine.run(CallState("validate_data", self._connection, self._message_context(), message=message))

    def validate_data_spool(self, message: PolicyMessage) -> Verdict:
        state = CallState("validate_data_spool", self._connection, self._message_context(), message=message)
        return self._engine.run(state)

    def validate_data_spool_each_rcpt(self, message: PolicyMessage, index: int) -> Verdict:
        """Runs for message.rcpt_tos[index]; what it sets is kept as recipient_context(index) only.

        Header edits change `message.content`: pass each recipient its own `message.copy()` when scripts
        may edit headers per recipient.
        """
        if not 0 <= index < len(message.rcpt_tos):
            raise IndexError(f"recipient index {index} out of range")
        recipient = message.rcpt_tos[index]
        mess, connection = self._message_context(), self._connection
        saved_mess, saved_connection = dict(mess), dict(connection)
        mess.update(recipient_variables(recipient))
        try:
            state = CallState("validate_data_spool_each_rcpt", connection, mess, message=message, recipient=recipient)
            verdict = self._engine.run(state)
            changed = {key: value for key, value in connection.items() if saved_connection.get(key) != value}
            self._recipients[index] = changed | mess
        finally:
            mess.clear()
            mess.update(saved_mess)
            connection.clear()
            connection.update(saved_connection)
        return verdict

    def validate_set_binding(self, message: PolicyMessage) -> Verdict:
        state = CallState("validate_set_binding", self._connection, self._message_context(), message=message)
        return self._engine.run(state)

    def final_validation(self, message: PolicyMessage) -> Verdict:
        """The core_final_validation hook: the last policy word before the message is accepted."""
        state = CallState("core_final_validation", self._connection, self._message_context(), message=message)
        return self._engine.run(state)

    def reset(self) -> None:
        """Forget the current message (RSET, a new EHLO, or the end of a transaction)."""
        self._mess, self._mail_from, self._rcpt_tos, self._recipients = None, "", [], {}

    def message_context(self) -> dict[str, str]:
        return dict(self._mess or {})

    def recipient_context(self, index: int) -> dict[str, str]:
        found = self._recipients.get(index)
        return dict(found) if found is not None else self.message_context()

    def connection_context(self) -> dict[str, str]:
        return dict(self._connection)

    def _message_context(self) -> dict[str, str]:
        if self._mess is None:
            raise RuntimeError("policy: no message in progress (validate_mailfrom was not called or was rejected)")
        return self._mess

    def _count_rcpts(self, step: int = 1) -> None:
        self._rcpts += step
        self._connection["connection_rcpt_count"] = str(self._rcpts)
        if self._mess is not None:
            self._mess["message_rcpt_count"] = str(len(self._rcpt_tos))

    def _undo_mailfrom(self) -> None:
        self._messages -= 1
        self._connection["connection_message_count"] = str(self._messages)
        self.reset()

    def _undo_rcptto(self, saved: dict[str, str | None]) -> None:
        self._rcpt_tos.pop()
        self._count_rcpts(-1)
        if self._mess is None:
            return
        for key, value in saved.items():
            if value is None:
                self._mess.pop(key, None)
            else:
                self._mess[key] = value
