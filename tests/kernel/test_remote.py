"""``RemoteSession`` on the Azure contract, driven through httpx's MockTransport.

A scripted "Azure pool" answers the helper's install, start and poll calls the
way a session would (each call's result value is the helper's JSON answer), so
the kernel side of the long-poll channel is pinned without a session: one
execute call for a short cell, interrupts, timeouts and input answers riding
the next poll, repeated polls after a lost response, and how a pool error, a
lost session or throttling in the middle of a long cell ends it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from azure_sessions_kernel import wire
from azure_sessions_kernel.kernel import _calls
from azure_sessions_kernel.kernel._remote import BackendError, CellTimeoutError, RemoteSession, SessionLostError

ENDPOINT = "https://eastus.dynamicsessions.io/subscriptions/S/resourceGroups/R/sessionPools/P"
VERSION = wire.api_version(wire.DEFAULT_API_VERSION)
_ARG = re.compile(r"\.(start|poll)\('([A-Za-z0-9+/=]+)'")


def execution(result: Any, *, error: tuple[str, str] | None = None) -> httpx.Response:
    ex = wire.Execution(
        status=wire.ExecutionStatus.FAILED if error else wire.ExecutionStatus.SUCCEEDED,
        result=result, identifier="s", id="e", error=wire.ErrorInfo(*error) if error else None,
    )  # fmt: skip
    status, body, headers = wire.render_execution(VERSION, ex)
    return httpx.Response(status, json=body, headers=headers)


def answer(cell: str, *, outputs: list[tuple[int, str, dict[str, Any]]] = (), done: bool = False, **extra: Any) -> str:  # type: ignore[assignment]
    body = {"azure_sessions_kernel": 3, "cell": cell, "more": False, "done": done, **extra}
    body["outputs"] = [{"seq": seq, "cell": cell, "msg_type": kind, "content": content} for seq, kind, content in outputs]
    if done:
        body.setdefault("reply", {"status": "ok", "user_expressions": {}, "payload": []})
    return json.dumps(body)


def stream(seq: int, text: str) -> tuple[int, str, dict[str, Any]]:
    return (seq, "stream", {"name": "stdout", "text": text})


class FakePool:
    """Answers metadata (404: an Azure pool without it), the install, and then ``script`` per call.

    ``script`` items are callables ``(kind, args) -> httpx.Response`` or responses;
    ``calls`` records ``(kind, decoded args)`` of every start/poll, resent ones included.
    """

    def __init__(self, *script: Any) -> None:
        self.script = list(script)
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/metadata"):
            return httpx.Response(404, json={"error": {"code": "NotFound", "message": "no"}})
        code = json.loads(request.content)["code"]
        match = _ARG.search(code)
        if match is None:  # the install call
            return execution(_calls.INSTALLED)
        kind, args = match.group(1), json.loads(base64.b64decode(match.group(2)))
        self.calls.append((kind, args))
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, type) and issubclass(step, httpx.TransportError):
            raise step("simulated", request=request)
        return step(kind, args) if callable(step) else step

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.calls]


class Run:
    """One cell through a RemoteSession on the fake pool, collecting what the kernel would publish."""

    def __init__(self, pool: FakePool) -> None:
        self.remote = RemoteSession(endpoint=ENDPOINT, token="t", api_version=VERSION.name, identifier="s-0001", transport=httpx.MockTransport(pool))
        self.published: list[tuple[str, dict[str, Any], str | None]] = []
        self.interrupted = asyncio.Event()
        self.prompts: list[tuple[str, bool]] = []

    def emit(self, msg_type: str, content: dict[str, Any], cell_id: str | None = None) -> None:
        self.published.append((msg_type, content, cell_id))

    async def ask(self, prompt: str, password: bool) -> str:
        self.prompts.append((prompt, password))
        return "ada"

    async def cell(self, code: str = "x", *, timeout: float | None = None, setup: Callable[[RemoteSession], None] | None = None) -> Any:
        await self.remote.connect()
        if setup is not None:
            setup(self.remote)
        try:
            return await self.remote.run_cell(
                code, cell_id="c1", execution_count=3, timeout=timeout, emit=self.emit, interrupted=self.interrupted,
                allow_stdin=True, ask_input=self.ask,
            )  # fmt: skip
        finally:
            await self.remote.close(delete=False)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def no_sleep(remote: RemoteSession) -> None:
    async def sleep(seconds: float) -> None:
        return None

    remote.client._sleep = sleep  # type: ignore[attr-defined]


def test_a_short_cell_is_one_execute_call() -> None:
    pool = FakePool(execution(answer("c1", outputs=[stream(1, "hi\n"), (2, "execute_result", {"data": {"text/plain": "2"}, "metadata": {}})], done=True)))
    r = Run(pool)
    reply = run(r.cell("print('hi')\n1+1"))
    assert reply.status == "ok" and pool.kinds() == ["start"]
    assert [m for m, _, _ in r.published] == ["stream", "execute_result"]
    assert r.published[1][1]["execution_count"] == 3


def test_outputs_arrive_over_polls_and_a_repeated_answer_is_published_once() -> None:
    pool = FakePool(
        execution(answer("c1", outputs=[stream(1, "a\n")])),
        execution(answer("c1", outputs=[stream(1, "a\n"), stream(2, "b\n")])),  # seq 1 again: its ack was lost
        execution(answer("c1", outputs=[stream(3, "c\n")], done=True)),
    )
    r = Run(pool)
    run(r.cell())
    assert [c["text"] for _, c, _ in r.published] == ["a\n", "b\n", "c\n"]
    assert [args["ack"] for kind, args in pool.calls] == [0, 1, 2]


def test_a_poll_lost_in_transit_is_sent_again() -> None:
    pool = FakePool(
        execution(answer("c1", outputs=[stream(1, "a\n")])),
        httpx.ReadError,
        execution(answer("c1", outputs=[stream(2, "b\n")], done=True)),
    )
    r = Run(pool)
    reply = run(r.cell(setup=no_sleep))
    assert reply.status == "ok" and pool.kinds() == ["start", "poll", "poll"]
    assert [c["text"] for _, c, _ in r.published] == ["a\n", "b\n"]


def test_throttling_during_a_long_cell_ends_it_with_one_clear_error() -> None:
    throttled = httpx.Response(429, headers={"Retry-After": "1", "x-ms-error-code": "TooManyRequests"},
                               json={"error": {"code": "TooManyRequests", "message": "Too many requests"}})
    pool = FakePool(execution(answer("c1", outputs=[stream(1, "a\n")])), throttled)
    r = Run(pool)
    with pytest.raises(BackendError) as info:
        run(r.cell(setup=no_sleep))
    assert "429" in str(info.value)
    assert pool.kinds()[0] == "start" and set(pool.kinds()[1:]) == {"poll"} and 2 <= len(pool.calls) <= 6


@pytest.mark.parametrize("status", [503, 502])
def test_a_pool_error_during_a_long_cell_ends_it_with_one_clear_error(status: int) -> None:
    pool = FakePool(execution(answer("c1")), httpx.Response(status, json={"error": {"code": "ServiceUnavailable", "message": "down"}}))
    with pytest.raises(BackendError) as info:
        run(Run(pool).cell(setup=no_sleep))
    assert str(status) in str(info.value)


def test_a_session_that_loses_its_helper_mid_cell_is_lost_with_its_state() -> None:
    pool = FakePool(execution(answer("c1", outputs=[stream(1, "a\n")])), execution(_calls.HELPER_MISSING))
    r = Run(pool)
    with pytest.raises(SessionLostError) as info:
        run(r.cell())
    assert "while this cell was running" in str(info.value) and "lost" in str(info.value)


def test_a_session_not_found_before_the_cell_started_says_it_did_not_run() -> None:
    missing = httpx.Response(404, headers={"x-ms-error-code": "SessionNotFound"}, json={"error": {"code": "SessionNotFound", "message": "gone"}})
    with pytest.raises(SessionLostError) as info:
        run(Run(FakePool(missing)).cell())
    assert "did not run" in str(info.value)


def test_interrupt_rides_the_next_poll() -> None:
    r: Run

    def reply_to(kind: str, args: dict[str, Any]) -> httpx.Response:
        if args.get("interrupt"):
            reply = {"status": "error", "ename": "KeyboardInterrupt", "evalue": "", "traceback": ["KeyboardInterrupt"]}
            return execution(answer("c1", outputs=[(2, "error", {"ename": "KeyboardInterrupt", "evalue": "", "traceback": []})], done=True, reply=reply))
        if kind == "poll":
            r.interrupted.set()  # the user presses stop while this poll waits in the session
        return execution(answer("c1", outputs=[stream(1, "a\n")] if kind == "start" else []))

    pool = FakePool(reply_to)
    r = Run(pool)
    reply = run(r.cell())
    assert reply.ename == "KeyboardInterrupt"
    assert [bool(args.get("interrupt")) for _, args in pool.calls] == [False, False, True]


def test_a_timeout_interrupts_and_is_reported_as_timeout_error() -> None:
    def reply_to(kind: str, args: dict[str, Any]) -> httpx.Response:
        if args.get("interrupt"):
            reply = {"status": "error", "ename": "KeyboardInterrupt", "evalue": "", "traceback": ["frame", "KeyboardInterrupt"]}
            error = {"ename": "KeyboardInterrupt", "evalue": "", "traceback": ["frame", "KeyboardInterrupt"]}
            return execution(answer("c1", outputs=[(5, "error", error)], done=True, reply=reply))
        return execution(answer("c1"))

    pool = FakePool(reply_to)
    r = Run(pool)
    with pytest.raises(CellTimeoutError) as info:
        run(r.cell(timeout=0.2))
    assert "0.2 s timeout" in str(info.value) and "variables are kept" in str(info.value)
    assert info.value.traceback[0] == "frame", "the traceback shows where the code was stopped"
    assert r.published == [], "the interrupt's KeyboardInterrupt is folded into the one TimeoutError"
    polls = [args for kind, args in pool.calls if kind == "poll"]
    assert polls[-1]["interrupt"] is True and all(p["wait"] <= 1.0 for p in polls)


def test_input_is_asked_once_and_the_answer_rides_the_next_poll() -> None:
    def reply_to(kind: str, args: dict[str, Any]) -> httpx.Response:
        if kind == "start":
            return execution(answer("c1", input={"id": 1, "prompt": "Name? ", "password": False}))
        assert args["input"] == {"id": 1, "value": "ada"}
        return execution(answer("c1", done=True))

    r = Run(FakePool(reply_to))
    reply = run(r.cell())
    assert reply.status == "ok" and r.prompts == [("Name? ", False)]


def test_output_of_an_earlier_cell_keeps_its_cell() -> None:
    late = {"azure_sessions_kernel": 3, "cell": "c1", "more": False, "done": True,
            "reply": {"status": "ok"}, "outputs": [{"seq": 1, "cell": "c0", "msg_type": "stream", "content": {"name": "stdout", "text": "late\n"}}]}
    r = Run(FakePool(execution(json.dumps(late))))
    run(r.cell())
    assert r.published == [("stream", {"name": "stdout", "text": "late\n"}, "c0")]
