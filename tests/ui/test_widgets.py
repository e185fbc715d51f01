"""Widgets in a real JupyterLab, in headless Chromium, for each kernel under test (conftest.KERNELS).

What a user sees: a slider that renders, moves with the arrow keys and whose new value the
kernel reads back; a tqdm.notebook progress bar that fills. Each wait stops at the first wrong
outcome too (an error text, a text repr), so a kernel without comms fails in seconds.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ._notebook import Notebook

pytestmark = pytest.mark.slow

#: The first cell also waits for the kernel (and, for our kernel, its session) to start.
FIRST_CELL = 120.0
#: A widget's view appears within this many seconds of its cell's end, or never.
WIDGET = 15.0
#: What JupyterLab shows instead of a widget view: the widget manager's error (a model it never
#: got a comm_open for), the text repr (no widget manager), tqdm's fallback without ipywidgets.
NOT_A_WIDGET = r"Error displaying widget|model not found|IntSlider\(|IProgress not found"


def widget_or_not(selector: str) -> dict[str, tuple[str, str | None]]:
    """The outcomes of a cell that should show the widget ``selector``: it, a traceback, or a text."""
    return {
        "the widget": (selector, None),
        "a traceback": ("[data-mime-type='application/vnd.jupyter.stderr']", None),
        "a text": (".jp-OutputArea-output", NOT_A_WIDGET),
    }


def test_int_slider_moves_with_the_arrow_keys_and_the_kernel_reads_the_new_value(notebook: Callable[[list[str]], Notebook]) -> None:
    nb = notebook(["import ipywidgets\ns = ipywidgets.IntSlider(value=3)\ns", "s.value"])
    nb.run(0, timeout=FIRST_CELL)
    shown = nb.wait_for(0, widget_or_not(".widget-hslider .noUi-handle"), timeout=WIDGET, what="the slider")
    assert shown == "the widget", f"{shown} instead of the slider: {nb.texts(0)}"
    assert nb.texts(0) == ["3"], "the slider's readout shows its value"
    nb.screenshot("rendered")

    nb.browser.call("focus", selector=f"{nb.output(0)} >> .noUi-handle")
    nb.browser.call("press", key="ArrowRight")
    nb.browser.call("press", key="ArrowRight")
    nb.wait_for(0, {"moved": (".widget-readout", r"^5$")}, timeout=WIDGET, what="the readout to show 5")

    nb.run(1)
    assert nb.texts(1) == ["5"], "the kernel's slider follows the view"
    print("slider moved:", nb.screenshot("moved"))


def test_tqdm_notebook_shows_a_progress_bar_that_fills(notebook: Callable[[list[str]], Notebook]) -> None:
    nb = notebook(["import time\nfrom tqdm.notebook import tqdm\nfor i in tqdm(range(50)):\n    time.sleep(0.01)"])
    nb.run(0, timeout=FIRST_CELL)
    shown = nb.wait_for(0, widget_or_not(".widget-hprogress"), timeout=WIDGET, what="the progress bar")
    assert shown == "the widget", f"{shown} instead of the progress bar: {nb.texts(0)}"
    # The label is updated by comm messages while the loop runs; at the end it counts all 50.
    nb.wait_for(0, {"full": (".widget-hbox", r"100%[\s\S]*50/50")}, timeout=WIDGET, what="the bar to reach 50/50")
    assert not any("IProgress not found" in text for text in nb.texts(0))
    print("progress bar:", nb.screenshot("bar"))
