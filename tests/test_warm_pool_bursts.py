"""The warm pool under bursts of new identifiers (issue 12): bounded parallel starts, arrival order, refill.

The session manager runs for real; only the sandbox start is replaced by a
stand-in that takes a while and counts how many run at once, so that the
allocation logic is tested exactly and fast. (Real sandboxes: test_warm_pool.py.)
"""

from __future__ import annotations

import asyncio
import queue
from typing import Any

import pytest

from azure_sessions_kernel.pool.sandbox import Launcher, Sandbox, SandboxError
from azure_sessions_kernel.pool.errors import PoolError
from azure_sessions_kernel.pool.sessions import PoolConfig, SessionManager


class FakeSandbox(Sandbox):
    def __init__(self, number: int, preload: tuple[str, ...]) -> None:
        self.number, self.preload, self.killed = number, preload, False

    def is_alive(self) -> bool:
        return not self.killed

    def death_reason(self) -> str | None:
        return None if not self.killed else "killed"

    async def kill(self) -> None:
        self.killed = True


class FakeKernelClient:
    async def get_iopub_msg(self, timeout: float) -> Any:
        await asyncio.sleep(timeout)
        raise queue.Empty

    def stop_channels(self) -> None:
        pass


class FakeLauncher(Launcher):
    isolation: dict[str, Any] = {}

    async def start(self) -> Sandbox:
        raise AssertionError("the manager's _new_sandbox is replaced in these tests")


class Starts:
    """Stands in for ``SessionManager._new_sandbox``: each start takes ``seconds``; some may fail."""

    def __init__(self, seconds: float = 0.05, failing: set[int] = frozenset()) -> None:
        self.seconds, self.failing = seconds, failing
        self.running = self.peak = self.count = 0

    async def __call__(self, preload: tuple[str, ...] = ()) -> tuple[Sandbox, Any]:
        self.count += 1
        number = self.count
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(self.seconds)
        finally:
            self.running -= 1
        if number in self.failing:
            raise SandboxError(f"start {number} failed")
        return FakeSandbox(number, preload), FakeKernelClient()


def manager(starts: Starts, **config: Any) -> SessionManager:
    m = SessionManager(FakeLauncher(), PoolConfig(refill_delay=0.0, preload=("numpy",), **config))
    m._new_sandbox = starts  # type: ignore[method-assign]
    return m


async def settled(m: SessionManager, ready: int) -> None:
    for _ in range(500):
        if m.stats()["startingSessions"] == 0 and m.stats()["readySessions"] == ready:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the pool did not settle: {m.stats()}")


async def burst(m: SessionManager, count: int, prefix: str = "burst") -> tuple[list[str], list[Any]]:
    """``count`` new identifiers arriving one after another; returns completion order and outcomes."""
    finished: list[str] = []

    async def claim(identifier: str) -> Any:
        try:
            return await m.get_or_create(identifier)
        finally:
            finished.append(identifier)

    tasks = []
    for i in range(count):
        tasks.append(asyncio.create_task(claim(f"{prefix}-{i:02d}")))
        await asyncio.sleep(0)  # arrival order
    return finished, await asyncio.gather(*tasks, return_exceptions=True)


def test_a_burst_starts_sandboxes_in_parallel_up_to_the_bound_in_arrival_order_and_refills() -> None:
    async def main() -> None:
        starts = Starts()
        m = manager(starts, ready_sessions=2, parallel_starts=3)
        await m.start()
        try:
            await settled(m, 2)
            finished, sessions = await burst(m, 12)
            assert finished == [f"burst-{i:02d}" for i in range(12)]  # first come, first served
            assert len({id(s.sandbox) for s in sessions}) == 12
            assert starts.peak == 3  # in parallel, and never more than the bound
            # The ready ones went first; the others were started for their claims, without preload.
            assert [s.sandbox.preload for s in sessions[:2]] == [("numpy",)] * 2
            assert all(s.sandbox.preload == () for s in sessions[2:])
            await settled(m, 2)  # and the ready pool is back at its target
            assert starts.count == 2 + 10 + 2
        finally:
            await m.close()

    asyncio.run(main())


def test_a_failed_start_fails_one_waiting_claim_and_the_others_are_served() -> None:
    async def main() -> None:
        starts = Starts(failing={2})
        m = manager(starts, ready_sessions=0, parallel_starts=2)
        await m.start()
        try:
            _, outcomes = await burst(m, 4)
            errors = [o for o in outcomes if isinstance(o, Exception)]
            assert len(errors) == 1 and isinstance(errors[0], PoolError) and errors[0].status == 503
            assert "start 2 failed" in str(errors[0])
            assert len({id(o.sandbox) for o in outcomes if not isinstance(o, Exception)}) == 3
        finally:
            await m.close()

    asyncio.run(main())


def test_a_claim_that_goes_away_leaves_its_sandbox_to_the_ready_pool() -> None:
    async def main() -> None:
        starts = Starts(seconds=0.2)
        m = manager(starts, ready_sessions=0, parallel_starts=2)
        await m.start()
        try:
            waiting = asyncio.create_task(m.get_or_create("gone-away"))
            await asyncio.sleep(0.05)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            await settled(m, 1)
            session = await m.get_or_create("next-one")  # gets that sandbox at once
            assert starts.count == 1 and session.sandbox.is_alive()
        finally:
            await m.close()

    asyncio.run(main())


def test_max_sessions_bounds_the_ready_target() -> None:
    async def main() -> None:
        starts = Starts()
        m = manager(starts, ready_sessions=3, parallel_starts=4, max_sessions=4)
        await m.start()
        try:
            await settled(m, 3)
            await burst(m, 2)
            await settled(m, 2)  # room for two more sessions only
            _, outcomes = await burst(m, 2, "second")
            assert not [o for o in outcomes if isinstance(o, Exception)]
            await settled(m, 0)
            with pytest.raises(PoolError) as full:
                await m.get_or_create("one-too-many")
            assert full.value.status == 429
        finally:
            await m.close()

    asyncio.run(main())
