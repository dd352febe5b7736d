"""The declared callout table: names, documentation pages, and the return values each callout may give."""

from __future__ import annotations

from pathlib import Path

import pytest

from engaged.policy.engine import PolicyEngine
from engaged.policy.hooks import HOOKS, HOOKS_BY_NAME, PHASES, UNSUPPORTED, check_return, describe_value

DOCS = Path(__file__).resolve().parents[2] / "docs" / "policy"


def test_phases_follow_momentums_order() -> None:
    assert PHASES == (
        "validate_connect", "validate_ehlo", "validate_mailfrom", "validate_rcptto", "validate_data",
        "validate_data_spool", "validate_data_spool_each_rcpt", "validate_set_binding", "core_final_validation",
    )


def test_unsupported_callouts_are_not_in_the_table() -> None:
    assert not set(UNSUPPORTED) & set(HOOKS_BY_NAME)


@pytest.mark.parametrize("hook", HOOKS, ids=lambda hook: hook.name)
def test_every_hook_has_a_documentation_page_with_its_signature(hook: object) -> None:
    name = getattr(hook, "name", "")
    args = ", ".join(getattr(hook, "args", ()))
    page = (DOCS / f"{name}.md").read_text(encoding="utf-8")
    assert f"function mod:{name}({args})" in page


def test_every_documentation_page_belongs_to_a_hook() -> None:
    pages = {path.stem for path in DOCS.glob("*.md")} - {"README"}
    assert pages == set(HOOKS_BY_NAME)


@pytest.mark.parametrize(
    ("value", "hook", "expected"),
    [
        (0, "validate_connect", 0),
        (2.0, "validate_connect", 2),
        (2, "validate_set_binding", None),
        (True, "validate_connect", None),
        (None, "validate_connect", None),
        (b"0", "validate_connect", None),
        (0.5, "validate_connect", None),
        (True, "init", True),
        (1, "init", None),
    ],
)
def test_check_return_accepts_only_the_declared_values(value: object, hook: str, expected: object) -> None:
    assert check_return(value, HOOKS_BY_NAME[hook]) == expected


def test_describe_value_names_lua_types() -> None:
    assert [describe_value(value) for value in (None, False, 3, b"x", object())] == [
        "nil", "a boolean", "3", "a string", "a table or function"
    ]


@pytest.mark.parametrize("hook", HOOKS, ids=lambda hook: hook.name)
def test_every_documentation_example_loads(hook: object, tmp_path: Path) -> None:
    page = (DOCS / f"{getattr(hook, 'name', '')}.md").read_text(encoding="utf-8")
    example = page.split("## Example\n\n```lua\n", 1)[1].split("```", 1)[0]
    if "registerModule" not in example:
        example = f"local mod = {{}}\n{example}\nmsys.registerModule('doc', mod)\n"
        if "function mod:validate" not in example and "function mod:core" not in example:
            callout = "function mod:validate_connect() return 0 end\n"
            example = example.replace("msys.registerModule", callout + "msys.registerModule")
    path = tmp_path / "example.lua"
    path.write_text('require("msys.core")\n' + example, encoding="utf-8")
    assert PolicyEngine.load([str(path)]).active
