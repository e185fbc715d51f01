"""Widget round trip (issue 10): a slider update from the frontend → the session → the observer's output.

What is timed, through jupyter_client as a frontend sends it: a ``comm_msg``
``update`` of an ``IntSlider`` whose observer prints, from sending it to the
printed line arriving on iopub. Ours on the local pool (native ``comms``
extension) and on an Azure-strict pool (the long-poll channel: one execute
call per message); the baseline is a plain local ipykernel on the session
image's Python, measured in the same run, samples interleaved.

Run: ``.venv/bin/python bench/widget_bench.py [--quick]``.
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
from pathlib import Path

from _common import ms, summary, table
from kernel_bench import LOCAL, OURS, Kernel, environment, interleaved, kernel_on_pool

OURS_STRICT = "bench-azure-sessions-strict-widgets"
SLIDER = (
    "import ipywidgets\ns = ipywidgets.IntSlider(value=0, max=10**9)\n"
    "s.observe(lambda change: print('value', change['new']), names='value')\ns"
)


class SliderKernel:
    """A kernel with a slider whose observer prints; ``move()`` times one update."""

    def __init__(self, name: str) -> None:
        self.kernel = Kernel(name)
        self.kernel.run(SLIDER)
        _, outputs = self.kernel.run("s.comm.comm_id")
        self.comm_id = ast.literal_eval(outputs[0]["content"]["data"]["text/plain"])
        self.value = 0

    def move(self) -> float:
        self.value += 1
        kc = self.kernel.kc
        msg = kc.session.msg("comm_msg", {"comm_id": self.comm_id, "data": {"method": "update", "state": {"value": self.value}, "buffer_paths": []}})
        started = time.perf_counter()
        kc.shell_channel.send(msg)
        want = f"value {self.value}\n"
        while True:
            m = kc.get_iopub_msg(timeout=60)
            if m["msg_type"] == "stream" and m["content"]["text"] == want and m["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
                return time.perf_counter() - started

    def close(self) -> None:
        self.kernel.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer samples")
    args = p.parse_args(argv)
    samples = 20 if args.quick else 100
    header = ["figure", "ours", "local ipykernel", "ratio", ""]
    rows = []
    with environment() as tmp:
        jupyter = tmp / "jupyter"
        local = SliderKernel(LOCAL)
        try:
            for label, name, serve_args in (("local pool (native)", OURS, ()), ("Azure-strict pool (channel)", OURS_STRICT, ("--azure-strict",))):
                with kernel_on_pool(jupyter, name, *serve_args):
                    ours = SliderKernel(name)
                    try:
                        for _ in range(5):
                            ours.move(), local.move()
                        o, l = interleaved(samples, ours.move, local.move)
                    finally:
                        ours.close()
                o50, o99 = summary(o)
                l50, l99 = summary(l)
                rows.append([f"slider update → observer output, {label}, p50", ms(o50), ms(l50), f"{o50 / l50:5.2f}", ""])
                rows.append(["  p99", ms(o99), ms(l99), f"{o99 / l99:5.2f}", ""])
        finally:
            local.close()
    table(f"9. Widget round trip ({samples} interleaved samples each)", header, rows)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
