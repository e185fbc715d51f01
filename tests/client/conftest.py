"""Fixtures that run every client test against both clients.

``make_client(handler, ...)`` returns the sync :class:`SessionsClient`, or the
:class:`AsyncSessionsClient` behind a facade that runs each coroutine on one
event loop, so a single test body checks both. Requests go to
``httpx.MockTransport(handler)`` (or any transport given); sleeps are
recorded in ``client.sleeps`` instead of slept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from azure_sessions_kernel.client import AsyncSessionsClient

from .helpers import ENDPOINT, TOKEN, AsyncFacade, sync_client


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as loop_runner:
        yield loop_runner


@pytest.fixture
def make_client(kind: str, runner: asyncio.Runner) -> Iterator[Callable[..., Any]]:
    """``make_client(handler_or_transport, endpoint=ENDPOINT, **client_kwargs)``."""
    made: list[Any] = []

    def make(handler: Any = None, *, endpoint: str = ENDPOINT, **kwargs: Any) -> Any:
        if handler is not None:
            kwargs["transport"] = handler if isinstance(handler, (httpx.BaseTransport, httpx.AsyncBaseTransport)) else httpx.MockTransport(handler)
        if "credential" not in kwargs:
            kwargs.setdefault("token", TOKEN)
        if kind == "sync":
            client = sync_client(endpoint, **kwargs)
        else:
            client = AsyncFacade(AsyncSessionsClient(endpoint, **kwargs), runner)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()
