"""Headless Chromium for the UI tests, driven by ``driver.mjs`` (playwright-core) in a Node process.

Why playwright-core over selenium: its locators wait for elements by themselves, keyboard input
goes to the focused element as a user's would, and it talks to Debian's ``/usr/bin/chromium``
over the DevTools protocol, so no chromedriver has to match the browser's version. It is used
without its browser download (``npx playwright install`` cannot work on a machine without
internet beyond the package registries): ``make ui-deps`` runs ``npm ci`` in ``tests/ui``.

The test sends one command per line (``{"id", "op", ...}``) and reads one answer per line; every
wait has a timeout on both sides, so a hung page or driver fails the test instead of hanging it.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CHROMIUM = Path(os.environ.get("UI_TEST_CHROMIUM", "/usr/bin/chromium"))

#: Seconds the driver may take beyond a command's own timeout before the test gives up on it.
SLACK = 15.0


class BrowserError(RuntimeError):
    """The driver could not do what it was asked (a selector never matched, the page crashed...)."""


def missing_prerequisites() -> str | None:
    """Why the browser cannot start here, or None. The UI tests fail with this; they never skip."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        return (
            f"chromium is not installed ({CHROMIUM} is missing): `make test` installs Debian's "
            "chromium when run as root with apt-get (.ci/system-packages.sh); otherwise install it "
            "by hand (sudo apt-get install chromium)."
        )
    if shutil.which("node") is None:
        return "node is not on PATH: the UI tests drive chromium with Node.js (apt-get install nodejs npm)."
    if not (HERE / "node_modules" / "playwright-core").is_dir():
        return "playwright-core is not installed in tests/ui: run `make ui-deps` (npm ci in tests/ui)."
    return None


class Browser:
    """One headless Chromium with one page; ``call(op, **args)`` runs one ``driver.mjs`` operation.

    Created by the ``browser`` fixture (``launch``); ``close`` ends the driver, which closes
    the browser, and is called at the end of the test module.
    """

    def __init__(self, process: subprocess.Popen[str], log: Path) -> None:
        self.process = process
        self.log = log
        self._answers: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._next_id = 0
        threading.Thread(target=self._read, daemon=True).start()
        hello = self._answer(60, "start")
        self.user_agent: str = hello["userAgent"]

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._answers.put(json.loads(line))
        self._answers.put(None)  # the driver exited

    def _answer(self, timeout: float, what: str) -> dict[str, Any]:
        try:
            answer = self._answers.get(timeout=timeout)
        except queue.Empty:
            raise BrowserError(f"the browser driver did not answer {what} within {timeout:.0f} s") from None
        if answer is None:
            raise BrowserError(f"the browser driver exited during {what} (rc={self.process.wait()}):\n{self.log_tail()}")
        return answer

    def call(self, op: str, *, timeout: float = 30.0, **args: Any) -> Any:
        """Run one operation; ``timeout`` (seconds) bounds the wait inside the page, too."""
        self._next_id += 1
        command = {"id": self._next_id, "op": op, "timeout": timeout * 1000, **args}
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        answer = self._answer(timeout + SLACK, f"{op} {args}")
        if answer.get("id") != self._next_id:
            raise BrowserError(f"answer out of order: {answer}")
        if not answer["ok"]:
            raise BrowserError(f"{op} {args}: {answer['error']}")
        return answer["value"]

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()  # the driver closes the browser and exits
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def launch(workdir: Path) -> Browser:
    """Start the driver with a fresh Chromium profile under ``workdir`` (its log goes there too)."""
    problem = missing_prerequisites()
    if problem:
        raise BrowserError(problem)
    profile = workdir / "chromium-profile"
    profile.mkdir(parents=True)
    log = workdir / "driver.log"
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            ["node", str(HERE / "driver.mjs"), str(profile)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=HERE,
        )
    try:
        return Browser(process, log)
    except BaseException:
        process.kill()
        process.wait(5)
        raise
