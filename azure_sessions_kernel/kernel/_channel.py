"""The long-poll channel, kernel side: one notebook cell through short execute calls.

Used by :class:`._remote.RemoteSession` for every pool that speaks only the
Azure contract (Azure itself, a local pool in Azure-strict mode). The session
side is :mod:`._session_helper`, whose :func:`start` runs the cell in a worker
thread of the session and whose :func:`poll` hands out what it produced.

Cadence, chosen for real Azure, where each call is an HTTPS round trip through
Azure's front end and billing is per session-time, not per call:

* ``start`` waits up to :data:`START_WAIT` for the cell to end: a short cell
  takes ONE execute call, as before the channel existed.
* Each ``poll`` waits up to :data:`POLL_HOLD` for news, so a silent running
  cell costs about one call per second; with output, a call returns
  :data:`LINGER` after it began, so a chatty cell costs at most about one call
  per ``LINGER`` plus a round trip (about 6 a second on Azure), and its output
  appears that much after it is printed.
* Executions are serialised per session, so an interrupt (or an ``input()``
  answer) rides the next poll: it reaches the session at most ``POLL_HOLD``
  plus a round trip after the user asked. A poll never waits past the cell's
  deadline, so a timeout is acted on at once.

Every call is safe to repeat: the kernel acknowledges the outputs it has
published (``ack``), a repeated ``start`` never runs the cell twice, and an
input answer is taken once. So the client may resend them like any
idempotent request, and a lost response loses no output.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from ..wire import JupyterCell
from . import _calls

#: Longest a ``start`` call waits for the cell to end before answering.
START_WAIT = 1.0
#: Longest a ``poll`` call waits for news of a running cell.
POLL_HOLD = 1.0
#: Once there is news, how long after its start a call may still collect more.
LINGER = 0.1
#: How long an interrupted cell may take to stop before the kernel stops waiting.
INTERRUPT_GRACE = 3.0
#: timeoutInSeconds of each call: Azure's cap. A call answers within about a
#: second unless the session's Python cannot run it (a C call that holds the GIL).
CALL_TIMEOUT = 220

#: ``call(code)`` runs one execute call and returns the helper's decoded answer
#: (raising the remote session's errors); supplied by the remote session.
Call = Callable[[str, bool], Awaitable[dict[str, Any]]]
#: ``publish(msg_type, content, owner, extra)``: relay one output of ``owner`` (a cell id, or
#: a frontend comm message's id); ``extra`` holds a comm message's ``metadata`` and ``buffers``.
Publish = Callable[[str, dict[str, Any], "str | None", dict[str, Any]], None]
#: ``ask(prompt, password)``: the frontend's answer to ``input()``.
AskInput = Callable[[str, bool], Awaitable[str]]


class ChannelInterrupted(Exception):
    """The cell did not stop within :data:`INTERRUPT_GRACE` of an interrupt or timeout."""

    def __init__(self, why: str, where: str | None) -> None:
        super().__init__(why)
        self.why, self.where = why, where


@dataclasses.dataclass
class Outcome:
    """How a cell ended: the helper's reply, and whether the kernel interrupted it (and why)."""

    reply: dict[str, Any]
    interrupted_for: str | None = None


class Channel:
    """The long-poll channel to one session; created per session by the remote session.

    Keeps, across cells, the last output sequence number the kernel has
    published (:attr:`ack`): the next call acknowledges it, so outputs a
    thread prints after its cell ended arrive with the next cell's first call
    and are still published with their own cell's parent.
    """

    def __init__(self, call: Call) -> None:
        self._call = call
        self.ack = 0

    async def run(
        self,
        cell_id: str,
        code: str,
        cell: JupyterCell,
        *,
        allow_stdin: bool,
        deadline: float | None,
        publish: Publish,
        interrupted: asyncio.Event,
        ask_input: AskInput | None,
        notice: Callable[[str], None],
    ) -> Outcome:
        """Run one cell; publish its outputs as they arrive; return how it ended.

        ``deadline`` is on the event loop's clock (``None``: no timeout).
        ``interrupted`` is set by the kernel on SIGINT (cleared here once acted
        on, so a second interrupt is noticed too). ``notice`` shows the user a
        line about the wait (an earlier cell still running). Raises
        :class:`ChannelInterrupted` when an interrupted cell does not stop.
        """
        loop = asyncio.get_running_loop()

        def start(wait: float) -> str:  # the ack moves on while an earlier cell is waited for
            return _calls.start_code(
                cell_id, code, cell.execution_count, silent=cell.silent, user_expressions=dict(cell.user_expressions),
                allow_stdin=allow_stdin, ack=self.ack, wait=wait, linger=LINGER,
            )  # fmt: skip

        answer = await self._call(start(START_WAIT), True)
        interrupt_at: float | None = None
        why: str | None = None
        busy_told = False
        pending: tuple[int, str] | None = None
        while True:
            self._publish(answer, publish)
            if answer.get("busy"):
                # An earlier cell, interrupted inside a blocking call, still runs.
                if not busy_told:
                    where = answer["busy"].get("where")
                    notice(
                        "Waiting for the previous cell, which is still running in the session"
                        + (f" (at {where})" if where else "")
                        + "; this cell starts when it ends. Interrupt to stop waiting."
                    )
                    busy_told = True
                if interrupted.is_set():
                    raise ChannelInterrupted("interrupt", answer["busy"].get("where"))
                answer = await self._call(start(POLL_HOLD), True)
                continue
            if answer.get("done"):
                return Outcome(dict(answer.get("reply") or {"status": "error", "ename": "SessionError", "evalue": "no reply"}), why)
            if answer.get("input") is not None and pending is None:
                request = answer["input"]
                if ask_input is None:  # the helper only asks when stdin is allowed
                    raise RuntimeError("the session asked for input the kernel cannot relay")
                try:
                    pending = (int(request["id"]), await ask_input(str(request.get("prompt", "")), bool(request.get("password"))))
                except KeyboardInterrupt:
                    interrupted.set()
            now = loop.time()
            send_interrupt = False
            if interrupt_at is None:
                if interrupted.is_set():
                    why, send_interrupt, interrupt_at = "interrupt", True, now
                elif deadline is not None and now >= deadline:
                    why, send_interrupt, interrupt_at = "timeout", True, now
            elif interrupted.is_set() and why == "timeout":
                why = "interrupt"
            elif now - interrupt_at >= INTERRUPT_GRACE:
                raise ChannelInterrupted(why or "interrupt", answer.get("where"))
            if send_interrupt:
                interrupted.clear()
            wait = 0.0 if answer.get("more") else POLL_HOLD
            if interrupt_at is not None:
                wait = min(wait, max(0.0, interrupt_at + INTERRUPT_GRACE - now), 0.5)
            elif deadline is not None:
                wait = min(wait, max(0.0, deadline - now))
            poll = _calls.poll_code(cell_id, ack=self.ack, wait=wait, linger=LINGER, interrupt=send_interrupt, answer=pending)
            answer = await self._call(poll, True)
            pending = None

    async def deliver(self, msg_id: str, msg_type: str, content: dict[str, Any], metadata: dict[str, Any], buffers: list[bytes], publish: Publish) -> dict[str, Any] | None:
        """A frontend's comm message to the session's comm manager; publishes what the handler produced.

        One execute call, not repeated (a button click must not count twice).
        Returns the ``comm_info_reply`` content for a ``comm_info_request``.
        """
        answer = await self._call(_calls.comm_code(msg_id, msg_type, content, metadata, buffers, ack=self.ack), False)
        self._publish(answer, publish)
        return answer.get("reply")

    async def idle_poll(self, publish: Publish) -> None:
        """Fetch what the session published between cells (threads, widget callbacks): one short call."""
        answer = await self._call(_calls.poll_code("", ack=self.ack, wait=0, linger=0), True)
        self._publish(answer, publish)

    def _publish(self, answer: dict[str, Any], publish: Publish) -> None:
        for name, text in answer.get("streams") or ():
            publish("stream", {"name": name, "text": text}, None, {})
        for output in answer.get("outputs") or ():
            seq = int(output.get("seq") or 0)
            if seq <= self.ack:
                continue  # a repeated answer: already published
            extra = {k: output[k] for k in ("metadata", "buffers") if k in output}
            publish(str(output["msg_type"]), dict(output.get("content") or {}), output.get("cell"), extra)
            self.ack = seq
