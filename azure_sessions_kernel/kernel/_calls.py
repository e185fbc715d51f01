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
#: Result of the install call when the session has a helper of another protocol (another kernel version).
OTHER_HELPER = "azure-sessions-kernel:other-helper"

_MODULES = '__import__("sys").modules'
_PRESENT = f"{helper.MODULE_NAME!r} in {_MODULES}"
_HELPER = f"{_MODULES}[{helper.MODULE_NAME!r}]"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def helper_source() -> str:
    # Read as a resource so that it works from a wheel as well as a checkout.
    return resources.files(__package__).joinpath("_session_helper.py").read_text(encoding="utf-8")


def install_code() -> str:
    """Install the helper module in the session (once); evaluates to a status string.

    A session that already has this protocol's helper keeps it: its routing of
    the session's streams and hooks is bound to that module's state.
    """
    installer = f"""
import sys, types
try:
    from IPython import get_ipython
except ImportError:
    get_ipython = lambda: None
present = sys.modules.get({helper.MODULE_NAME!r})
if get_ipython() is None:
    status = {NO_IPYTHON!r}
elif present is not None:
    status = {INSTALLED!r} if getattr(present, "PROTOCOL", None) == {helper.PROTOCOL!r} else {OTHER_HELPER!r}
else:
    import linecache
    module = types.ModuleType({helper.MODULE_NAME!r})
    module.__file__ = "<azure-sessions-kernel helper>"
    source = {helper_source()!r}
    # Tracebacks through the helper (input() refused) then show its lines, not "Could not get source".
    linecache.cache[module.__file__] = (len(source), None, source.splitlines(True), module.__file__)
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    sys.modules[module.__name__] = module
    module._install()
    status = {INSTALLED!r}
"""
    # exec in a throwaway globals dict, so that nothing lands in the user's namespace.
    return (
        '(lambda scope: (__import__("builtins").exec(__import__("base64").b64decode('
        f'{_b64(installer)!r}).decode("utf-8"), scope), scope["status"])[1])({{"__name__": "_azure_sessions_kernel_install"}})'
    )


def start_code(
    cell_id: str,
    code: str,
    execution_count: int | None,
    *,
    silent: bool = False,
    user_expressions: dict[str, str] | None = None,
    allow_stdin: bool = False,
    ack: int = 0,
    wait: float,
    linger: float,
) -> str:
    """Start a cell in the session's worker thread (:func:`_session_helper.start`)."""
    spec = {
        "id": cell_id,
        "code": _b64(code),
        "count": execution_count,
        "silent": silent,
        "user_expressions": user_expressions or {},
        "allow_stdin": allow_stdin,
        "ack": ack,
    }
    call = f"{_HELPER}.start({_b64(json.dumps(spec))!r}, {float(wait)!r}, {float(linger)!r})"
    return f"{call} if {_PRESENT} else {HELPER_MISSING!r}"


def poll_code(
    cell_id: str, *, ack: int, wait: float, linger: float, interrupt: bool = False, answer: tuple[int, str] | None = None
) -> str:
    """Ask for the cell's news (:func:`_session_helper.poll`), carrying an interrupt or an input answer."""
    request: dict[str, Any] = {"cell": cell_id, "ack": ack, "wait": float(wait), "linger": float(linger)}
    if interrupt:
        request["interrupt"] = True
    if answer is not None:
        request["input"] = {"id": answer[0], "value": answer[1]}
    return f"{_HELPER}.poll({_b64(json.dumps(request))!r}) if {_PRESENT} else {HELPER_MISSING!r}"


def comm_code(msg_id: str, msg_type: str, content: dict[str, Any], metadata: dict[str, Any], buffers: list[bytes], *, ack: int) -> str:
    """Deliver a frontend's comm message to the session (:func:`_session_helper.comm`)."""
    request = {
        "id": msg_id, "msg_type": msg_type, "content": content, "metadata": metadata, "ack": ack,
        "buffers": [base64.b64encode(bytes(b)).decode("ascii") for b in buffers],
    }  # fmt: skip
    return f"{_HELPER}.comm({_b64(json.dumps(request))!r}) if {_PRESENT} else {HELPER_MISSING!r}"


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
    """The install call's status: :data:`INSTALLED`, :data:`NO_IPYTHON` or :data:`OTHER_HELPER`; ``ValueError`` otherwise."""
    text = _as_text(value)
    if text not in (INSTALLED, NO_IPYTHON, OTHER_HELPER):
        raise ValueError(f"unexpected result of the helper installation: {str(value)[:200]!r}")
    return text


def decode_answer(value: Any) -> dict[str, Any]:
    """A start or poll call's answer: ``outputs``, ``cell``, ``done``, ``reply``, ``input``, ... (or ``spilled``)."""
    answer = decode(value)
    if not isinstance(answer, dict) or answer.get("azure_sessions_kernel") != helper.PROTOCOL:
        raise ValueError("the result is not an answer of this kernel's session helper")
    return answer
