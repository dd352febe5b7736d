"""The declared table of policy callouts: Momentum's names, arguments and allowed returns, refused if unknown."""

from __future__ import annotations

import msgspec


class HookSpec(msgspec.Struct, frozen=True):
    """One callout a module may define with colon syntax (`function mod:name(...)`).

    `args` are the values passed after `self`, by Momentum's names: `str` (the SMTP argument), `msg`, `ac`
    (accept construct) and `vctx`. `returns` are the allowed return values: names of `msys.core.VALIDATE_*`
    constants, or `true` for init/deinit.
    """

    name: str
    args: tuple[str, ...]
    returns: tuple[str, ...]
    when: str


RETURN_VALUES = {"VALIDATE_CONT": 0, "VALIDATE_DONE": 1, "VALIDATE_AGAIN": 2}
"""msys.core's VALIDATE_* constants."""
CONT_DONE_AGAIN = ("VALIDATE_CONT", "VALIDATE_DONE", "VALIDATE_AGAIN")

HOOKS: tuple[HookSpec, ...] = (
    HookSpec("init", (), ("true",), "once, after the script that registers the module has loaded"),
    HookSpec("deinit", (), ("true",), "once, when the engine is closed"),
    HookSpec("validate_connect", ("ac", "vctx"), CONT_DONE_AGAIN, "after the client connects, before the greeting"),
    HookSpec("validate_ehlo", ("str", "ac", "vctx"), CONT_DONE_AGAIN, "on EHLO/HELO; str is the argument"),
    HookSpec("validate_mailfrom", ("str", "ac", "vctx"), CONT_DONE_AGAIN, "on MAIL FROM; str is the sender"),
    HookSpec("validate_rcptto", ("msg", "str", "ac", "vctx"), CONT_DONE_AGAIN, "on each RCPT TO; str is the recipient"),
    HookSpec("validate_data", ("msg", "ac", "vctx"), CONT_DONE_AGAIN, "after DATA content is received"),
    HookSpec("validate_data_spool", ("msg", "ac", "vctx"), CONT_DONE_AGAIN, "once per message, before the split"),
    HookSpec(
        "validate_data_spool_each_rcpt",
        ("msg", "ac", "vctx"),
        CONT_DONE_AGAIN,
        "once per recipient; where smtpapi_* variables are normally set",
    ),
    HookSpec("validate_set_binding", ("msg",), ("VALIDATE_CONT", "VALIDATE_DONE"), "when the binding is chosen"),
    HookSpec("core_final_validation", ("msg", "ac", "vctx"), CONT_DONE_AGAIN, "last, before the message is accepted"),
)

HOOKS_BY_NAME: dict[str, HookSpec] = {hook.name: hook for hook in HOOKS}

PHASES: tuple[str, ...] = tuple(hook.name for hook in HOOKS if hook.name not in ("init", "deinit"))

UNSUPPORTED: dict[str, str] = {
    "validate_rcptto_list": "recipient list nodes are not emulated",
    "validate_rcptto_list_final": "recipient list nodes are not emulated",
    "validate_dealloc": "validation contexts are plain dictionaries here",
    "validate_auth": "use the auth_* connection variables from validate_mailfrom on",
}


def check_return(value: object, spec: HookSpec) -> int | bool | None:
    """The callout's status if `value` is one `spec` allows (True for init/deinit), else None."""
    if spec.returns == ("true",):
        return True if value is True else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        return None
    allowed = {RETURN_VALUES[name] for name in spec.returns}
    return int(value) if int(value) in allowed else None


def describe_value(value: object) -> str:
    """How a returned Lua value is named in a PolicyFailure message."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, bytes):
        return "a string"
    return "a table or function"
