"""The sessions client, imported when first used rather than when the kernel starts.

Importing ``azure_sessions_kernel.client`` (httpx, h11, the client modules)
takes ~60 ms, most of a kernel's own start-up beyond ipykernel's. The kernel
needs it only to connect, which it does right after answering the frontend's
first ``kernel_info_request`` (the frontend then waits for iopub to settle, so
the import costs nobody anything there). :data:`client` is the module, loaded
on first attribute access by the standard library's ``LazyLoader``.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy_module(name: str) -> ModuleType:
    """``name`` as a module object whose code runs on first attribute access."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ImportError(f"No module named {name!r}")
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module


client = lazy_module("azure_sessions_kernel.client")
