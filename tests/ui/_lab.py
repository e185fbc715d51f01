"""A real JupyterLab server for the UI tests: loopback, a random token, everything in a temp dir.

``start_lab`` runs ``python -m jupyterlab`` from this venv (which has ``jupyterlab_widgets``, the
ipywidgets 8 frontend) on a free loopback port, with its root, config, data, runtime, workspaces
and settings under a temp dir, and with ``JUPYTER_PATH`` pointing at a temp ``share/jupyter``
into which tests write the kernelspecs they want (``Lab.kernels``); the server looks kernelspecs
up when a notebook starts its kernel, so a kernelspec written after the start is found.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

#: Frontend plugins that would put a notification or a dialog over the page: the news
#: ("announcements") prompt; extension-manager's warning about the missing network.
DISABLED_PLUGINS = ("@jupyterlab/apputils-extension:announcements", "@jupyterlab/extensionmanager-extension")


@dataclasses.dataclass
class Lab:
    """A running server. ``stop`` shuts it down through its API and checks that it exited."""

    url: str  # ends with "/"
    token: str
    root: Path
    kernels: Path  # the JUPYTER_PATH entry's kernels/ folder
    process: subprocess.Popen[bytes]
    log: Path

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"token {self.token}"}
        response = httpx.request(method, self.url + path, headers=headers, timeout=30, **kwargs)
        response.raise_for_status()
        return response

    def create_notebook(self, name: str, kernel_name: str, cells: list[str]) -> str:
        """Save a notebook of code ``cells`` whose kernel is the kernelspec ``kernel_name``.

        Returns the kernel's display name, which JupyterLab shows with its status.
        """
        spec = self.api("GET", f"api/kernelspecs/{quote(kernel_name)}").json()["spec"]
        content = {
            "nbformat": 4,
            "nbformat_minor": 5,
            "metadata": {"kernelspec": {"name": kernel_name, "display_name": spec["display_name"], "language": spec["language"]}},
            "cells": [
                {"cell_type": "code", "id": f"cell-{i}", "source": source, "metadata": {}, "outputs": [], "execution_count": None}
                for i, source in enumerate(cells)
            ],
        }
        self.api("PUT", f"api/contents/{quote(name)}", json={"type": "notebook", "format": "json", "content": content})
        return spec["display_name"]

    def notebook_url(self, name: str) -> str:
        """The page that opens notebook ``name`` alone, in a workspace of its own (nothing restored)."""
        workspace = "ws-" + secrets.token_hex(4)
        return f"{self.url}lab/workspaces/{workspace}/tree/{quote(name)}?token={self.token}"

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> int:
        """Shut the server down (its kernels with it); raise if it does not exit in time."""
        if self.process.poll() is None:
            try:
                self.api("POST", "api/shutdown")
            except httpx.HTTPError:
                self.process.send_signal(signal.SIGINT)  # the API is gone: the signal path
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
                raise AssertionError(f"JupyterLab did not exit within {timeout:.0f} s of its shutdown request") from None
        return self.process.returncode


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_lab(workdir: Path, *, startup_timeout: float = 90.0) -> Lab:
    """Start JupyterLab with everything under ``workdir`` and wait until its API answers."""
    dirs = {name: workdir / name for name in ("root", "config", "data", "runtime", "share", "workspaces", "settings")}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    kernels = dirs["share"] / "kernels"
    kernels.mkdir()
    labconfig = dirs["config"] / "labconfig"
    labconfig.mkdir()
    (labconfig / "page_config.json").write_text(json.dumps({"disabledExtensions": {p: True for p in DISABLED_PLUGINS}}))
    port, token = free_port(), secrets.token_hex(24)
    argv = [
        sys.executable, "-m", "jupyterlab",
        "--ServerApp.open_browser=False", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={dirs['root']}",
        "--ServerApp.allow_root=True", f"--LabApp.workspaces_dir={dirs['workspaces']}",
        f"--LabApp.user_settings_dir={dirs['settings']}", "--LabApp.news_url=None",
    ]
    env = {
        **os.environ,
        "JUPYTER_PATH": str(dirs["share"]),
        "JUPYTER_CONFIG_DIR": str(dirs["config"]),
        "JUPYTER_DATA_DIR": str(dirs["data"]),
        "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
    }
    log = workdir / "jupyterlab.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT, cwd=dirs["root"], env=env)
    lab = Lab(f"http://127.0.0.1:{port}/", token, dirs["root"], kernels, process, log)
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"JupyterLab exited at start (rc={process.returncode}):\n{lab.log_tail()}")
        try:
            lab.api("GET", "api/status")
            return lab
        except httpx.HTTPError:
            time.sleep(0.2)
    lab.stop()
    raise AssertionError(f"JupyterLab did not answer within {startup_timeout:.0f} s:\n{lab.log_tail()}")


def write_kernelspec(lab: Lab, name: str, spec: dict[str, Any]) -> str:
    """Add kernelspec ``name`` to the server's JUPYTER_PATH; returns the name."""
    directory = lab.kernels / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "kernel.json").write_text(json.dumps(spec, indent=2))
    return name
