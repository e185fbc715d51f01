"""A notebook open in JupyterLab, as the tests see it: run a cell, wait for what it shows, read it.

Selectors are JupyterLab 4's and ipywidgets 8's own class names; ``cell(i)`` is the i-th cell of
the open notebook (playwright's ``>> nth=`` chaining).
"""

from __future__ import annotations

import re
from pathlib import Path

from ._browser import Browser, BrowserError
from ._lab import Lab

#: A finished cell's prompt: "[3]:". Queued or running cells show "[*]:", cells never run "[ ]:".
DONE = r"^\[\d+\]:$"
STARTED = r"^\[(\d+|\*)\]:$"
#: Seconds within which Shift+Enter shows that the cell was taken ("[*]:"), with a kernel idle.
TAKEN = 10.0


class Timeout(AssertionError):
    """An expected outcome did not appear in time: the notebook did not show what the test needs."""


class Notebook:
    """Created by ``open_notebook``: a notebook saved through the REST API and opened in the page.

    ``close`` shuts its kernel down (the server would otherwise keep it while other tests run).
    """

    def __init__(self, browser: Browser, lab: Lab, name: str, screenshots: Path) -> None:
        self.browser, self.lab, self.name, self.screenshots = browser, lab, name, screenshots
        self.saved: list[Path] = []  # screenshots taken, in order

    @staticmethod
    def cell(index: int) -> str:
        return f".jp-Notebook .jp-Cell >> nth={index}"

    def output(self, index: int) -> str:
        return f"{self.cell(index)} >> .jp-OutputArea-output"

    def run(self, index: int, *, timeout: float = 60.0) -> None:
        """Run cell ``index`` as a user does (click into it, Shift+Enter) and wait until it ends."""
        self.browser.call("click", selector=f"{self.cell(index)} >> .jp-InputArea-editor")
        self.browser.call("press", key="Shift+Enter")
        self.wait_for(index, {"taken": (".jp-InputArea-prompt", STARTED)}, timeout=TAKEN, what="the cell to start")
        self.wait_for(index, {"done": (".jp-InputArea-prompt", DONE)}, timeout=timeout, what="the cell to finish")

    def wait_for(self, index: int, outcomes: dict[str, tuple[str, str | None]], *, timeout: float, what: str) -> str:
        """The name of the first of ``outcomes`` (selector within cell ``index``, text pattern) to appear."""
        names = list(outcomes)
        spec = [{"selector": f"{self.cell(index)} >> {css}", "pattern": pattern} for css, pattern in outcomes.values()]
        try:
            return names[self.browser.call("first_of", outcomes=spec, timeout=timeout)]
        except BrowserError as error:
            if "appeared within" not in str(error):
                raise
            raise Timeout(
                f"waited {timeout:.0f} s for {what} in cell {index}; it shows {self.texts(index)!r}\n"
                f"page console: {self.browser.call('console')}"
            ) from None

    def texts(self, index: int) -> list[str]:
        """The text of each output of cell ``index``."""
        return [text.strip() for text in self.browser.call("texts", selector=self.output(index))]

    def screenshot(self, label: str) -> Path:
        """Save the page as ``<screenshots>/<notebook name>-<label>.png`` (kept as a test artefact)."""
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{Path(self.name).stem}-{label}")
        path = self.screenshots / f"{stem}.png"
        self.browser.call("screenshot", path=str(path))
        self.saved.append(path)
        return path

    def close(self) -> None:
        for session in self.lab.api("GET", "api/sessions").json():
            if session["path"] == self.name:
                self.lab.api("DELETE", f"api/sessions/{session['id']}")


def open_notebook(
    browser: Browser, lab: Lab, kernel_name: str, cells: list[str], *, name: str, screenshots: Path, timeout: float = 90.0
) -> Notebook:
    """Save a notebook of ``cells`` for ``kernel_name``, open it in a fresh page, wait for its kernel.

    A cell run before the page is connected to an idle kernel is not run at all (JupyterLab
    drops it), hence the wait for the status bar's "<kernel> | Idle".
    """
    display_name = lab.create_notebook(name, kernel_name, cells)
    browser.call("open", url=lab.notebook_url(name), timeout=60)
    idle = f"^{re.escape(display_name)} \\| Idle$"
    try:
        browser.call("first_of", outcomes=[{"selector": ".jp-StatusBar-TextItem", "pattern": idle}], timeout=timeout)
    except BrowserError as error:
        status = browser.call("texts", selector=".jp-StatusBar-TextItem")
        raise BrowserError(f"the notebook's kernel {kernel_name!r} did not become idle: {status}\n{error}") from None
    return Notebook(browser, lab, name, screenshots)
