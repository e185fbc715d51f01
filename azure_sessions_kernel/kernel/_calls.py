"""The code the kernel sends to a session, and the decoding of what comes back.

Every snippet here is one Python *expression*: its value is the execution's
result value (the one structured thing the Azure contract returns), and it
binds no name in the user's namespace. Payloads travel base64-encoded, so
user code is never quoted or rewritten.
"""

from __future__ import annotations

import ast
import base64
import json
from importlib import resources
from typing import Any

from . import _session_helper as helper

#: Result of a call when the session has no helper: it is a new session.
HELPER_MISSING = "azure-sessions-kernel:helper-missing"
#: Result of the install call when the session is not an IPython session.
NO_IPYTHON = "azure-sessions-kernel:no-ipython"
INSTALLED = f"azure-sessions-kernel:installed:{helper.PROTOCOL}"

_MODULES = '__import__("sys").modules'
_PRESENT = f"{helper.MODULE_NAME!r} in {_MODULES}"
_HELPER = f"{_MODULES}[{helper.MODULE_NAME!r}]"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def helper_source() -> str:
    # Read as a resource so that it works from a wheel as well as a checkout.
    return resources.files(__package__).joinpath("_session_helper.py").read_text(encoding="utf-8")


def install_code() -> str:
    """Install (or replace) the helper module in the session; evaluates to a status string."""
    installer = f"""
import sys, types
try:
    from IPython import get_ipython
except ImportError:
    get_ipython = lambda: None
if get_ipython() is None:
    status = {NO_IPYTHON!r}
else:
    import linecache
    module = types.ModuleType({helper.MODULE_NAME!r})
    module.__file__ = "<azure-sessions-kernel helper>"
    source = {helper_source()!r}
    # Tracebacks through the helper (input() refused) then show its lines, not "Could not get source".
    linecache.cache[module.__file__] = (len(source), None, source.splitlines(True), module.__file__)
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    sys.modules[module.__name__] = module
    status = {INSTALLED!r}
"""
    # exec in a throwaway globals dict, so that nothing lands in the user's namespace.
    return (
        '(lambda scope: (__import__("builtins").exec(__import__("base64").b64decode('
        f'{_b64(installer)!r}).decode("utf-8"), scope), scope["status"])[1])({{"__name__": "_azure_sessions_kernel_install"}})'
    )


def run_code(
    code: str,
    execution_count: int | None,
    *,
    silent: bool = False,
    user_expressions: dict[str, str] | None = None,
    top_level_await: bool = False,
) -> str:
    """Run a cell through the helper (:func:`_session_helper.run`)."""
    exprs = _b64(json.dumps(user_expressions)) if user_expressions else None
    args = f"{_b64(code)!r}, {execution_count!r}, {silent!r}, {exprs!r}"
    if top_level_await:
        # The session's IPython sees the await and runs this call on its own loop.
        call = f"(await {_HELPER}.run_async({args}))"
    else:
        call = f"{_HELPER}.run({args})"
    return f"{call} if {_PRESENT} else {HELPER_MISSING!r}"


def complete_code(code: str, cursor_pos: int) -> str:
    return f"{_HELPER}.complete({_b64(code)!r}, {int(cursor_pos)}) if {_PRESENT} else {HELPER_MISSING!r}"


def inspect_code(code: str, cursor_pos: int, detail_level: int = 0, omit_sections: tuple[str, ...] = ()) -> str:
    args = f"{_b64(code)!r}, {int(cursor_pos)}, {int(detail_level)}, {tuple(omit_sections)!r}"
    return f"{_HELPER}.inspect({args}) if {_PRESENT} else {HELPER_MISSING!r}"


class HelperMissing(Exception):
    """The session has no helper: it is not the session the helper was installed in."""


def _as_text(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    text = value.strip()
    # Azure returns a string result as the string itself; a pool asked for
    # Jupyter-format results returns its repr. Accept both.
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        try:
            literal = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
        return literal if isinstance(literal, str) else text
    return text


def decode(value: Any) -> Any:
    """Decode a helper call's result value (JSON text) into Python data.

    Raises :class:`HelperMissing` for the missing-helper sentinel and
    :class:`ValueError` when the value is not the helper's JSON.
    """
    if isinstance(value, dict):
        return value  # a backend that already parsed the JSON for us
    text = _as_text(value)
    if text is None:
        raise ValueError(f"expected the helper's JSON text, got {type(value).__name__}")
    if text == HELPER_MISSING:
        raise HelperMissing(text)
    return json.loads(text)


def decode_install(value: Any) -> str:
    """The install call's status: :data:`INSTALLED` or :data:`NO_IPYTHON`; ``ValueError`` otherwise."""
    text = _as_text(value)
    if text not in (INSTALLED, NO_IPYTHON):
        raise ValueError(f"unexpected result of the helper installation: {str(value)[:200]!r}")
    return text


def decode_cell_reply(value: Any) -> dict[str, Any]:
    """The helper's cell reply: ``status``, ``outputs`` and the execute_reply fields."""
    reply = decode(value)
    if not isinstance(reply, dict) or reply.get("azure_sessions_kernel") != helper.PROTOCOL:
        raise ValueError("the result is not a reply of this kernel's session helper")
    return reply
