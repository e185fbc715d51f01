"""Helpers of the client tests: a scripted MockTransport handler, the async facade."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx

from azure_sessions_kernel.client import AsyncSessionsClient, SessionsClient

#: A path-prefixed pool endpoint, as ARM reports poolManagementEndpoint (reference §2).
ENDPOINT = "https://eastus.dynamicsessions.io/subscriptions/S/resourceGroups/R/sessionPools/P"
PREFIX = "/subscriptions/S/resourceGroups/R/sessionPools/P"
TOKEN = "tok-SECRET-0123456789"
SESSION = "sess-0001"


class Recorder:
    """A MockTransport handler that records requests and answers from a script.

    ``responses`` are httpx.Responses, exceptions (raised with the request
    attached) or callables taking the request; the last one repeats.
    """

    def __init__(self, *responses: Any) -> None:
        self.responses = list(responses) or [httpx.Response(204)]
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        if callable(answer) and not isinstance(answer, httpx.Response):
            answer = answer(request)
        if isinstance(answer, type) and issubclass(answer, Exception):
            answer = answer("simulated", request=request)
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer.stream, httpx.ByteStream):
            # A fresh copy each time: a response object can be sent only once.
            return httpx.Response(answer.status_code, headers=answer.headers, content=answer.read())
        return answer

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


class FakeClock:
    """The clients' monotonic clock and sleep: sleeping only moves the time on."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class AsyncFacade:
    """Calls an AsyncSessionsClient synchronously on one event loop (per test)."""

    def __init__(self, client: AsyncSessionsClient, runner: asyncio.Runner) -> None:
        self.client = client
        self._runner = runner
        self.clock = client._clock = FakeClock()
        self.sleeps = self.clock.sleeps

        async def sleep(seconds: float) -> None:
            self.clock.sleep(seconds)

        client._sleep = sleep

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attr(*args, **kwargs)
            if inspect.iscoroutine(result):
                return self._runner.run(result)
            if hasattr(result, "__aiter__"):
                return self._runner.run(_collect(result))
            return result

        return call

    def __repr__(self) -> str:
        return repr(self.client)


async def _collect(iterator: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in iterator]


def sync_client(*args: Any, **kwargs: Any) -> SessionsClient:
    client = SessionsClient(*args, **kwargs)
    client.clock = client._clock = FakeClock()  # type: ignore[attr-defined]
    client.sleeps = client.clock.sleeps  # type: ignore[attr-defined]
    client._sleep = client.clock.sleep  # type: ignore[attr-defined]
    return client


def body_stream(kind: str, chunks: Callable[[], Iterator[bytes]]) -> Any:
    """A response body for the client kind: MockTransport passes it through as is."""
    if kind == "sync":
        return chunks()

    async def agen() -> AsyncIterator[bytes]:
        for chunk in chunks():
            yield chunk

    return agen()
