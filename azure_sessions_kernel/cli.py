"""``azure-sessions-kernel`` command line: one entry point, one module per subcommand.

``serve``      start the local session pool        (azure_sessions_kernel.pool.server)
``image``      build or inspect the session image  (azure_sessions_kernel.pool.image)
``install``    install the Jupyter kernelspec      (azure_sessions_kernel.kernel.install)
``uninstall``  remove the kernelspec               (azure_sessions_kernel.kernel.install)

Subcommand modules are imported only when used, so ``serve`` never loads the
kernel and ``install`` never loads the pool.
"""

from __future__ import annotations

import importlib
import sys

_COMMANDS = {
    "serve": ("azure_sessions_kernel.pool.server", "main", "start the local session pool"),
    "image": ("azure_sessions_kernel.pool.image", "main", "build or inspect the session image"),
    "install": ("azure_sessions_kernel.kernel.install", "install_main", "install the Jupyter kernelspec"),
    "uninstall": ("azure_sessions_kernel.kernel.install", "uninstall_main", "remove the Jupyter kernelspec"),
}


def _usage() -> str:
    lines = ["usage: azure-sessions-kernel COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, _, help_) in _COMMANDS.items()]
    lines += ["", "Run 'azure-sessions-kernel COMMAND --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command not in _COMMANDS:
        print(f"azure-sessions-kernel: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module, func, _ = _COMMANDS[command]
    return int(getattr(importlib.import_module(module), func)(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
