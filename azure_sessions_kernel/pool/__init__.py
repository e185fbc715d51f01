"""The local session pool: an HTTP server speaking Azure's dynamic-sessions
data-plane API, running each session in a sandboxed ipykernel on this machine.

``http`` (routes, one module per resource) → ``sessions`` (lifecycle, executions) → ``launcher`` (the
sandbox seam: ``bwrap``, ``insecure``) → ``runner/session_kernel.py`` (inside
the sandbox); ``files`` does host-side file operations, ``image`` builds the
sandbox's Python environment, ``server`` is ``azure-sessions-kernel serve``.
Nothing here imports the kernel.
"""
