"""Both clients against a real local pool, every api-version, end to end.

The pools are the suite's shared, sandboxed ones (``tests/conftest.py``):
the client is tested against exactly what users run.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import secrets

import pytest

from azure_sessions_kernel import wire
from azure_sessions_kernel.client import (
    AsyncSessionsClient,
    ExecutionStatus,
    ExtensionUnavailableError,
    SessionNotFoundError,
    SessionsClient,
    UnsupportedOperationError,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pools(local_pool, strict_pool):
    return local_pool, strict_pool


def fresh_identifier() -> str:
    return "client-" + secrets.token_hex(8)


@pytest.mark.parametrize("version", wire.API_VERSIONS)
def test_every_operation_the_version_has(pools, version):
    pool, _ = pools
    sid = fresh_identifier()
    with SessionsClient(pool.endpoint, token=pool.token, api_version=version) as client:
        execution = client.execute(sid, "x = 6 * 7\nprint('hi')\nx")
        assert (execution.status, execution.stdout, execution.result) == (ExecutionStatus.SUCCEEDED, "hi\n", 42)
        assert client.execute(sid, "x + 1").result == 43  # state persists in the session

        remote = client.upload(sid, b"a,b\n1,2\n", "data.csv", path="inputs")
        assert (remote.name, remote.size) == ("data.csv", 8)
        assert [f.path for f in client.list_files(sid, path="inputs")] == ["data.csv"]
        assert client.download(sid, "inputs/data.csv") == b"a,b\n1,2\n"
        assert client.execute(sid, "open('inputs/data.csv').read()").result == "a,b\n1,2\n"  # cwd is /mnt/data

        if version == "2024-02-02-preview":
            with pytest.raises(UnsupportedOperationError):
                client.get_file(sid, "data.csv", path="inputs")
        else:
            assert client.get_file(sid, "data.csv", path="inputs").size == 8
            client.delete_file(sid, "data.csv", path="inputs")
            assert client.list_files(sid, path="inputs") == []

        if version >= "2024-10":
            started = client.start_execution(sid, "import time; time.sleep(0.5); 5")
            assert started.status in (ExecutionStatus.NOT_STARTED, ExecutionStatus.RUNNING) and started.id
            assert client.wait_execution(sid, started.id, poll_interval=0.1).result == 5

        if version >= "2025-02":
            assert client.get_session(sid).identifier == sid
            assert sid in {s.identifier for s in client.list_sessions()}
            assert set(client.metadata().extensions["extensions"]) >= {"stream", "interrupt", "complete", "inspect"}
            client.delete_session(sid)
            with pytest.raises(SessionNotFoundError):
                client.get_session(sid)


def test_local_extensions_and_their_absence_on_a_strict_pool(pools):
    pool, strict = pools
    sid = fresh_identifier()
    with SessionsClient(pool.endpoint, token=pool.token) as client:
        events = list(client.execute_stream(sid, "print('a')\n1 + 1"))
        assert [(e.type, e.msg_type) for e in events] == [("iopub", "stream"), ("iopub", "execute_result"), ("done", None)]
        assert events[-1].status == "ok" and events[-1].execution.result == 2
        assert "append" in client.complete(sid, "[].app", 6)["matches"]
        assert client.inspect(sid, "len", 3)["found"] is True
    with SessionsClient(strict.endpoint, token=strict.token) as client:
        with pytest.raises(ExtensionUnavailableError):
            list(client.execute_stream(sid, "1"))
        with pytest.raises(ExtensionUnavailableError):
            client.complete(sid, "le", 2)
        assert client.metadata().extensions is None


def test_async_client_streams_interrupts_and_transfers(pools, tmp_path):
    pool, _ = pools
    sid = fresh_identifier()
    payload = os.urandom(20 * 1024 * 1024)
    (tmp_path / "big.bin").write_bytes(payload)

    async def scenario() -> None:
        async with AsyncSessionsClient(pool.endpoint, token=pool.token) as client:
            await client.execute(sid, "n = 1")

            async def run_forever() -> list:
                return [e async for e in client.execute_stream(sid, "import time\nprint('started', flush=True)\nwhile True: time.sleep(0.05)")]

            task = asyncio.create_task(run_forever())
            await asyncio.sleep(1.5)
            await client.interrupt(sid)
            events = await asyncio.wait_for(task, 30)
            assert any(e.msg_type == "error" and e.content["ename"] == "KeyboardInterrupt" for e in events)
            assert (await client.execute(sid, "n")).result == 1  # interrupted, not restarted

            sent: list[int] = []
            remote = await client.upload(sid, tmp_path / "big.bin", "big.bin", progress=sent.append)
            assert remote.size == len(payload) == sum(sent)
            sink = io.BytesIO()
            assert await client.download_to(sid, "big.bin", sink) == len(payload)
            assert hashlib.sha256(sink.getvalue()).digest() == hashlib.sha256(payload).digest()
            await client.delete_session(sid)

    asyncio.run(scenario())
