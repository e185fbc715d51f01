"""Install or remove the ``azure-sessions`` kernelspec, like ``python -m ipykernel install``.

``azure-sessions-kernel install [--user | --sys-prefix | --prefix P] [--name N]
[--display-name D] [--endpoint URL] [--image NAME] [--egress HOSTS]`` and ``azure-sessions-kernel uninstall``;
also ``python -m azure_sessions_kernel.kernel.install``. The kernelspec comes
from the package's ``resources`` (the repository's ``kernelspec/`` folder),
with ``argv[0]`` set to the Python running this, so the kernel starts in the
environment it was installed from.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from jupyter_client.kernelspec import KernelSpecManager, _is_valid_kernel_name

from .._runtime import EgressListError, parse_egress

KERNEL_NAME = "azure-sessions"
LOGOS = ("logo-32x32.png", "logo-64x64.png")


def write_kernelspec(
    directory: Path,
    *,
    display_name: str | None = None,
    endpoint: str | None = None,
    image: str | None = None,
    egress: str | None = None,
    python: str | None = None,
) -> dict:
    """Write ``kernel.json`` and the logos into ``directory``; returns the kernel.json content.

    ``egress`` is written normalised (:func:`parse_egress`), so kernels of
    differently spelt lists share a pool; a bad list raises
    :class:`~azure_sessions_kernel._runtime.EgressListError` (a ``ValueError``)
    before anything is written.
    """
    try:
        hosts = ",".join(parse_egress(egress or ""))
    except EgressListError as exc:
        raise EgressListError(f"--egress: {exc}") from None
    source = resources.files(__package__).joinpath("resources")
    spec = json.loads(source.joinpath("kernel.json").read_text(encoding="utf-8"))
    spec["argv"][0] = python or sys.executable
    if display_name:
        spec["display_name"] = display_name
    if endpoint:
        spec["argv"].append(f"--AzureSessionsKernel.endpoint={endpoint}")
    if image:
        spec["argv"].append(f"--AzureSessionsKernel.image={image}")
    if hosts:
        spec["argv"].append(f"--AzureSessionsKernel.egress={hosts}")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "kernel.json").write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    for logo in LOGOS:
        (directory / logo).write_bytes(source.joinpath(logo).read_bytes())
    return spec


def install(
    *,
    user: bool = False,
    prefix: str | None = None,
    kernel_name: str = KERNEL_NAME,
    display_name: str | None = None,
    endpoint: str | None = None,
    image: str | None = None,
    egress: str | None = None,
) -> str:
    """Install the kernelspec and return the directory it went to.

    Parameters
    ----------
    user
        Install for the current user (``jupyter --data-dir``) instead of system-wide.
    prefix
        Install under ``PREFIX/share/jupyter/kernels`` (``sys.prefix`` for a virtualenv).
    kernel_name
        The kernelspec name notebooks refer to.
    display_name
        The name frontends show; default "Python 3 (Azure Sessions)".
    endpoint
        An Azure session pool management endpoint to run cells in; default: the
        ``AZURE_CONTAINER_APP_SESSION_POOL_MANAGEMENT_ENDPOINT`` variable, else the local pool.
    image
        The session image of the local pool (``AzureSessionsKernel.image``); default: the default image.
    egress
        The hosts the local pool's sessions may reach, comma-separated, e.g. ``"pypi"``
        (``AzureSessionsKernel.egress``); default: none, as on Azure. A bad list raises
        ``ValueError`` and nothing is installed.
    """
    if not _is_valid_kernel_name(kernel_name):
        raise ValueError(f"{kernel_name!r} is not a valid kernel name: use letters, digits, '.', '_' and '-'.")
    with tempfile.TemporaryDirectory() as tmp:
        write_kernelspec(Path(tmp), display_name=display_name, endpoint=endpoint, image=image, egress=egress)
        return KernelSpecManager().install_kernel_spec(tmp, kernel_name, user=user, prefix=prefix)


def _location_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="for the current user only (jupyter --data-dir)")
    where.add_argument("--sys-prefix", action="store_true", help=f"into this Python's environment ({sys.prefix})")
    where.add_argument("--prefix", help="under PREFIX/share/jupyter/kernels")
    parser.add_argument("--name", default=KERNEL_NAME, help=f"kernelspec name (default: {KERNEL_NAME})")


def _prefix(args: argparse.Namespace) -> str | None:
    return sys.prefix if args.sys_prefix else args.prefix


def install_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="azure-sessions-kernel install", description="Install the Python 3 (Azure Sessions) kernelspec.")
    _location_options(parser)
    parser.add_argument("--display-name", help='name shown in frontends (default: "Python 3 (Azure Sessions)")')
    parser.add_argument("--endpoint", help="Azure session pool management endpoint (default: $AZURE_CONTAINER_APP_SESSION_POOL_MANAGEMENT_ENDPOINT, else the local pool)")
    parser.add_argument("--image", help="session image of the local pool: a name from 'azure-sessions-kernel image list' (default: the default image)")
    parser.add_argument("--egress", metavar="HOSTS",
                        help="hosts the local pool's sessions may reach, comma-separated; 'pypi' lets %%pip install work "
                             "(default: none, no network, as on Azure; on Azure the pool's own setting decides)")
    args = parser.parse_args(argv)
    try:
        path = install(user=args.user, prefix=_prefix(args), kernel_name=args.name, display_name=args.display_name,
                       endpoint=args.endpoint, image=args.image, egress=args.egress)
    except PermissionError as exc:
        print(f"Cannot write {exc.filename}: install with --user or --sys-prefix instead.", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(f"Installed kernelspec {args.name} in {path}")
    return 0


def uninstall_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="azure-sessions-kernel uninstall",
        description="Remove the kernelspec (from the given location, else from wherever Jupyter finds it first).",
    )
    _location_options(parser)
    args = parser.parse_args(argv)
    manager = KernelSpecManager()
    if args.user or args.sys_prefix or args.prefix:
        # The same directory install_kernel_spec chose for these options.
        path = Path(manager._get_destination_dir(args.name, user=args.user, prefix=_prefix(args)))
        if not (path / "kernel.json").exists():
            print(f"No kernelspec {args.name} in {path.parent}.", file=sys.stderr)
            return 1
        shutil.rmtree(path)
    else:
        try:
            path = Path(manager.remove_kernel_spec(args.name))
        except KeyError:
            print(f"No kernelspec named {args.name} is installed.", file=sys.stderr)
            return 1
    print(f"Removed kernelspec {args.name} from {path}")
    return 0


if __name__ == "__main__":
    sys.exit(install_main())
