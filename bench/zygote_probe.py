"""What a preloaded template forked per session would save (an estimate; not shipped).

Runs outside any sandbox, on the session image's interpreter, with no user
code: a template imports what a preloaded session holds (ipykernel, numpy,
pandas, matplotlib.pyplot), calls ``gc.freeze()`` and forks children; each
child then does a small first cell's worth of work (a DataFrame, a plot) and
idles. The children's PSS is what a zygote pool's sessions would cost; an
unforked process doing the same is the per-session sandbox's cost. Printed
as JSON ``{"forked": [PSS...], "forked_private": [Private_Dirty...], "template": PSS}``
or ``{"unforked": PSS}``, in bytes.

Why it is not shipped is in the README (Performance): forked children share
the template's ASLR layout, hash seed and PRNG states, and would have to
enter their namespaces, uid, cgroups and seccomp filter after the fork in
place of bubblewrap.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time

WORK = """
import numpy as np, pandas as pd, matplotlib.pyplot as plt, io
df = pd.DataFrame(np.random.default_rng().random((1000, 10)))
s = df.describe().to_html()
fig = plt.figure(); plt.plot(df[0]); fig.savefig(io.BytesIO(), format="png"); plt.close(fig)
"""


def pss(pid: int, field: str = "Pss") -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def preload() -> None:
    os.environ.setdefault("MPLBACKEND", "agg")
    import ipykernel.ipkernel  # noqa: F401  the kernel a session runs
    import matplotlib.pyplot  # noqa: F401
    import numpy  # noqa: F401
    import pandas  # noqa: F401


def child(ready_w: int) -> None:
    exec(compile(WORK, "<first cell>", "exec"), {})
    gc.collect()  # a real session collects too; frozen objects stay untouched
    os.write(ready_w, b"x")
    time.sleep(60)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    mode = sys.argv[2] if len(sys.argv) > 2 else "forked"
    preload()
    if mode == "unforked":
        exec(compile(WORK, "<first cell>", "exec"), {})
        gc.collect()
        print(json.dumps({"unforked": pss(os.getpid())}))
        return
    gc.freeze()  # keep the collector from writing to (and so copying) the template's pages
    r, w = os.pipe()
    kids = []
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            os.close(r)
            child(w)
            os._exit(0)
        kids.append(pid)
    for _ in kids:
        os.read(r, 1)
    time.sleep(0.5)
    # Private_Dirty: what each child copied; its PSS tends to this as more children share the template.
    out = {"forked": [pss(p) for p in kids], "forked_private": [pss(p, "Private_Dirty") for p in kids], "template": pss(os.getpid())}
    for p in kids:
        os.kill(p, 9)
        os.waitpid(p, 0)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
