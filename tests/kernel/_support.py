"""Shared pieces of the kernel tests: kernel environments, running cells, checking PNGs."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from azure_sessions_kernel.kernel.install import install

KERNEL_NAME = "azure-sessions"


def install_kernelspec(prefix: Path) -> Path:
    """Install the kernelspec under ``prefix``; returns the ``JUPYTER_PATH`` entry that finds it."""
    install(prefix=str(prefix))
    return prefix / "share" / "jupyter"


def write_kernel_config(ipython_dir: Path, **options: Any) -> Path:
    """A Jupyter config file for the kernel (``ipython_kernel_config.py`` of the default profile)."""
    profile = ipython_dir / "profile_default"
    profile.mkdir(parents=True, exist_ok=True)
    lines = [f"c.AzureSessionsKernel.{name} = {value!r}" for name, value in options.items()]
    path = profile / "ipython_kernel_config.py"
    path.write_text("\n".join(lines) + "\n")
    return path


def first_cell(tmp_path: Path, code: str, timeout: float = 120, **options: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run ``code`` as the first cell of a fresh kernel configured with ``options``, on a local pool
    of its own (a private runtime directory under ``tmp_path``); the kernel is shut down after."""
    from jupyter_client.manager import start_new_kernel

    ipython_dir = tmp_path / "ipython"
    write_kernel_config(ipython_dir, **options)
    prefix = tmp_path / "prefix"
    install_kernelspec(prefix)
    with environment(JUPYTER_PATH=str(prefix / "share" / "jupyter"), IPYTHONDIR=str(ipython_dir),
                     AZURE_SESSIONS_KERNEL_RUNTIME_DIR=str(tmp_path / "runtime")):
        km, kc = start_new_kernel(kernel_name=KERNEL_NAME, startup_timeout=90, cwd=str(tmp_path))
        try:
            return execute(kc, code, timeout=timeout)
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=False)


@contextlib.contextmanager
def environment(**variables: str) -> Iterator[None]:
    """Set environment variables for this process and the kernels it starts."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def execute(kc: Any, code: str, timeout: float = 60, **kwargs: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run ``code``; return the execute_reply and the output messages (each with ``at``: seconds since sending)."""
    sent = time.monotonic()
    msg_id = kc.execute(code, **kwargs)
    outputs = []
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind = msg["msg_type"]
        if kind == "status" and msg["content"]["execution_state"] == "idle":
            break
        if kind not in ("status", "execute_input"):
            msg["at"] = time.monotonic() - sent
            outputs.append(msg)
    while True:
        reply = kc.get_shell_msg(timeout=timeout)
        if reply["parent_header"].get("msg_id") == msg_id:
            reply["at"] = time.monotonic() - sent
            return reply, outputs


def readable_text(outputs: list[dict[str, Any]]) -> str:
    """Everything a person would read in the outputs: streams, error values, plain-text results."""
    parts = []
    for msg in outputs:
        c = msg["content"]
        parts += [c.get("text", ""), c.get("evalue", ""), str(c.get("data", {}).get("text/plain", ""))]
    return "\n".join(p for p in parts if p)


def kinds(outputs: list[dict[str, Any]]) -> list[str]:
    """Message types, with consecutive stream messages of one stream counted once."""
    out: list[str] = []
    for msg in outputs:
        kind = msg["msg_type"]
        if kind == "stream":
            kind = f"stream:{msg['content']['name']}"
        if not out or out[-1] != kind or not kind.startswith("stream"):
            out.append(kind)
    return out


def png_info(data: bytes) -> tuple[int, int, int]:
    """Width, height and number of distinct pixel rows of a PNG.

    Checks the signature, every chunk's CRC and that the image data
    decompresses to exactly the size the header promises. Distinct
    (filtered) rows are a cheap sign that the image is not blank.
    """
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body), f"bad CRC in {kind!r}"
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert header is not None, "no IHDR chunk"
    width, height, depth, color = header[:4]
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color]
    stride = 1 + (width * channels * depth + 7) // 8
    raw = zlib.decompress(idat)
    assert len(raw) == height * stride, "image data does not match the header"
    rows = {raw[i * stride : (i + 1) * stride] for i in range(height)}
    return width, height, len(rows)


@dataclasses.dataclass
class Setup:
    mode: str  # "live" or "strict"
    pool: Any
    workdir: Path

    @property
    def live(self) -> bool:
        return self.mode == "live"


@dataclasses.dataclass
class Kernel:
    km: Any
    kc: Any
    setup: Setup

    def run(self, code: str, timeout: float = 60, **kwargs: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        return execute(self.kc, code, timeout, **kwargs)

    def identifier(self) -> str:
        _, outputs = self.run("%session")
        return re.search(r"identifier\s+(\S+)", outputs[0]["content"]["text"]).group(1)


def content(outputs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m["content"] for m in outputs if m["msg_type"] == kind]
