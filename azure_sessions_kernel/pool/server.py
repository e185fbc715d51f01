"""``azure-sessions-kernel serve``: run the local session pool.

Prints the pool management endpoint on its first line of standard output
(``Pool management endpoint: http://127.0.0.1:PORT``) so scripts and the
kernel's auto-start can read it, requires a bearer token on every route, and
refuses to run without a sandbox unless told ``--insecure-no-sandbox``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import os
import resource
import secrets
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from .. import wire
from .._runtime import (
    EGRESS_ALIASES,
    POOL_TOKEN_PREFIX,
    POOL_TOKEN_SUFFIX,
    EgressListError,
    parse_egress,
    pid_alive,
    process_running,
    runtime_dir,
    token_file_pid,
    write_private,
)
from .egress import EgressPolicy, EgressProxy
from .image import DEFAULT_IMAGE_NAME, ImageInfo, find_image, resolve_image
from .sandbox import Launcher, SandboxError, SandboxLimits, SandboxLimitsError
from .sessions import PoolConfig, SessionManager

log = logging.getLogger("azure_sessions_kernel.pool")

EXTENSIONS = ("stream", "jupyter-cells", "stdin", "comms", "interrupt", "complete", "inspect")
#: What ``--preload`` imports by default: the code-interpreter staples.
DEFAULT_PRELOAD = ("numpy", "pandas", "matplotlib.pyplot")


def _size(text: str) -> int:
    """Parse ``512M``, ``1G``, ``65536`` into bytes."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 512M or 1G)") from None


def _modules(text: str) -> tuple[str, ...]:
    """Parse ``numpy,pandas`` (or ``none``) into module names."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if names in ((), ("none",)):
        return ()
    for n in names:
        if not all(part.isidentifier() for part in n.split(".")):
            raise argparse.ArgumentTypeError(f"not a module name: {n!r}")
    return names


def _egress(text: str) -> tuple[str, ...]:
    try:
        return parse_egress(text)
    except EgressListError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="azure-sessions-kernel serve",
        description="Run a local session pool that speaks the Azure Container Apps dynamic-sessions data-plane API.",
    )
    net = p.add_argument_group("network")
    net.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    net.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one (default: 0)")
    net.add_argument("--token", help="bearer token clients must send; default: a random one written to --token-file")
    net.add_argument("--token-file", type=Path, help="where a generated token is written (mode 0600); default: in the runtime directory")
    net.add_argument("--certfile", type=Path, help="serve HTTPS with this certificate (PEM)")
    net.add_argument("--keyfile", type=Path, help="private key for --certfile (PEM)")
    pool = p.add_argument_group("sessions")
    pool.add_argument("--max-sessions", type=int, default=100, help="sessions allowed at once; a new identifier beyond it gets 429 with Retry-After (default: 100)")
    pool.add_argument("--ready-sessions", type=int, default=1, help="sandboxes kept started for new identifiers, like Azure's ready sessions (default: 1)")
    pool.add_argument("--parallel-starts", type=int, default=PoolConfig().parallel_starts, metavar="N",
                      help="sandboxes started at once when a burst of new identifiers arrives or the ready pool "
                           "refills; the others wait their turn (default: 4 per CPU)")
    pool.add_argument("--preload", type=_modules, default=DEFAULT_PRELOAD, metavar="MODULES",
                      help="comma-separated modules imported into each ready session before it is claimed, bound to no "
                           f"name; 'none' turns it off (default: {','.join(DEFAULT_PRELOAD) or 'none'})")
    pool.add_argument("--cooldown", type=float, default=300, help="idle seconds before a session ends; Azure allows 300-3600 (default: 300)")
    pool.add_argument("--allow-short-cooldown", action="store_true", help="accept a --cooldown under 300 s (for tests)")
    pool.add_argument("--azure-strict", action="store_true", help="turn every extension beyond the Azure contract off (streaming, interrupt, completion, metadata block)")
    sb = p.add_argument_group("sandbox")
    sb.add_argument("--memory", type=_size, default=_size("1G"), help="memory per session (default: 1G)")
    sb.add_argument("--pids", type=int, default=256, help="processes and threads per session (default: 256)")
    sb.add_argument("--cpus", type=float, default=1.0, help="CPU cores per session (default: 1.0)")
    sb.add_argument("--data-size", type=_size, default=_size("1G"), help="size of each session's /mnt/data (default: 1G)")
    sb.add_argument("--data-inodes", type=int, default=65536, help="files and folders allowed in each session's /mnt/data (default: 65536)")
    sb.add_argument("--tmp-size", type=_size, default=_size("256M"), help="size of each session's private /tmp (default: 256M)")
    sb.add_argument("--image", default=DEFAULT_IMAGE_NAME, metavar="NAME|DIR",
                    help="the session image: a name from 'azure-sessions-kernel image list', or an image directory "
                         f"(default: {DEFAULT_IMAGE_NAME})")
    sb.add_argument("--egress", type=_egress, default=(), metavar="HOST[,HOST...]",
                    help="let sessions reach these hosts (and nothing else) through the pool's proxy, which connects by name "
                         "and refuses IP addresses, loopback, link-local and this machine; HOST:PORT for one port (else 443 "
                         f"and 80), *.DOMAIN for its subdomains, aliases {', '.join(EGRESS_ALIASES)} (pypi: %%pip install works). "
                         "Default: no network, as on Azure")
    sb.add_argument("--egress-log", type=Path, metavar="FILE", help="append one JSON line per egress connection to FILE "
                    "(the pool's log has a line each too)")
    sb.add_argument("--bwrap", metavar="PATH", help="the bubblewrap binary (default: bwrap on PATH, else /usr/bin/bwrap)")
    sb.add_argument("--insecure-no-sandbox", action="store_true", help="run sessions as plain processes with NO isolation (development only; dangerous)")
    run = p.add_argument_group("embedding")
    run.add_argument("--runtime-file", type=Path, help="write {endpoint, token, pid} here (mode 0600) once serving; removed on exit")
    run.add_argument("--lease-dir", type=Path, help="exit when no process holding a lease file in this directory is alive")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


def build_launcher(args: argparse.Namespace, image: ImageInfo, egress: EgressProxy | None = None) -> Launcher:
    """The sandbox launcher for these options. Raises SandboxError with a clear reason."""
    if args.insecure_no_sandbox:
        from .sandbox.insecure import InsecureLauncher

        return InsecureLauncher(image=image)
    from .sandbox.bwrap import BwrapLauncher

    limits = SandboxLimits(memory=args.memory, pids=args.pids, cpus=args.cpus, data_size=args.data_size,
                           data_inodes=args.data_inodes, tmp_size=args.tmp_size)
    return BwrapLauncher(image=image, limits=limits, bwrap=args.bwrap, egress=egress)


def metadata_provider(image: ImageInfo, launcher: Launcher, manager: SessionManager, strict: bool) -> Any:
    packages = tuple(sorted(image.packages))
    versions = {n.lower(): v for n, v in packages}
    started = _dt.datetime.now(_dt.timezone.utc)
    isolation = launcher.isolation

    def metadata() -> wire.PoolMetadata:
        ext = None
        if not strict:
            ext = {
                "extensions": list(EXTENSIONS),
                "image": {"name": image.name, "path": str(image.path)},
                "isolation": isolation,
                "cooldownSeconds": manager.config.cooldown,
                **manager.stats(),
            }
        return wire.PoolMetadata(
            runtimes=(("python", image.python_version),),
            packages=packages,
            created_at=started,
            last_updated_at=started,
            jupyter_kernel={
                "name": "python3",
                "version": versions.get("ipykernel", ""),
                "projectUrl": "https://github.com/ipython/ipykernel",
                "description": "IPython kernel in a sandboxed local session",
            },
            extensions=ext,
        )

    return metadata


def _live_leases(lease_dir: Path) -> tuple[int, int]:
    """Count lease files whose pid is alive, and all lease files; remove the dead ones."""
    alive = total = 0
    for f in list(lease_dir.glob("*")) if lease_dir.is_dir() else []:
        total += 1
        pid_text = f.name.split("-", 1)[0]
        if pid_text.isdigit() and pid_alive(int(pid_text)):
            alive += 1
        else:
            with contextlib.suppress(OSError):
                f.unlink()
    return alive, total


def _remove_dead_pools_token_files(directory: Path) -> None:
    """Delete the token files of pools that were killed (a pool removes its own when it exits normally)."""
    for path in directory.glob(f"{POOL_TOKEN_PREFIX}*{POOL_TOKEN_SUFFIX}"):
        pid = token_file_pid(path.name)
        if pid is not None and pid != os.getpid() and not process_running(pid):
            with contextlib.suppress(OSError):
                path.unlink()


async def _watch_leases(lease_dir: Path, stop: asyncio.Event, runtime_file: Path | None, grace: float = 2.0, first_lease_wait: float = 60.0) -> None:
    """Stop the pool once no lease holder is alive (the last kernel ended).

    A lease is a file named ``<pid>-<anything>`` created by
    :func:`azure_sessions_kernel.client.acquire_local_pool`; files of dead
    pids are removed here, so a SIGKILLed kernel still releases its lease.
    Before stopping, the runtime file is withdrawn and the leases counted
    once more, so a client that found the pool a moment ago is not stranded.
    """
    started = time.monotonic()
    seen_lease = False
    empty_since: float | None = None
    while not stop.is_set():
        await asyncio.sleep(0.5)
        now = time.monotonic()
        alive, total = _live_leases(lease_dir)
        # A dead holder's lease still proves a kernel came: the short grace applies from then on.
        seen_lease = seen_lease or total > 0
        if alive:
            seen_lease, empty_since = True, None
            continue
        empty_since = empty_since or now
        if now - empty_since < (grace if seen_lease else first_lease_wait):
            continue
        saved = runtime_file.read_text() if runtime_file and runtime_file.exists() else None
        if runtime_file is not None:
            with contextlib.suppress(OSError):
                runtime_file.unlink()
        await asyncio.sleep(0.3)
        if _live_leases(lease_dir)[0]:
            if saved is not None and runtime_file is not None:
                write_private(runtime_file, saved)
            seen_lease, empty_since = True, None
            continue
        log.info("no kernel holds a lease any more; shutting down")
        stop.set()


async def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .http import create_app

    if args.insecure_no_sandbox:
        print(
            "\n" + "!" * 78 + "\n"
            "WARNING: --insecure-no-sandbox: sessions run as ordinary processes of this user,\n"
            "with full access to this machine's files and network. Never use it with code\n"
            "you do not trust.\n" + "!" * 78 + "\n",
            file=sys.stderr,
            flush=True,
        )
    if args.egress and args.insecure_no_sandbox:
        print("error: --egress needs the sandbox: with --insecure-no-sandbox sessions already have this machine's whole network",
              file=sys.stderr)
        return 2
    egress = EgressProxy(EgressPolicy.from_text(args.egress), log_file=args.egress_log) if args.egress else None
    # Every session connection and egress tunnel is a descriptor of ours: use what we may.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        image = find_image(resolve_image(args.image))
        launcher = build_launcher(args, image, egress)
    except SandboxLimitsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SandboxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print("The local pool will not run sessions without a sandbox. Install bubblewrap (make setup does it), "
              "or pass --insecure-no-sandbox to run WITHOUT isolation.", file=sys.stderr)
        return 2
    except Exception as exc:  # e.g. the session image is missing
        print(f"error: {exc}", file=sys.stderr)
        return 2

    config = PoolConfig(max_sessions=args.max_sessions, ready_sessions=args.ready_sessions, cooldown=args.cooldown,
                        preload=args.preload, parallel_starts=args.parallel_starts, keep_events=not args.azure_strict)
    manager = SessionManager(launcher, config)
    token = args.token or secrets.token_urlsafe(32)
    runtime_dir_path = runtime_dir()
    _remove_dead_pools_token_files(runtime_dir_path)
    token_file: Path | None = None
    if not args.token:
        token_file = args.token_file or runtime_dir_path / f"{POOL_TOKEN_PREFIX}{os.getpid()}{POOL_TOKEN_SUFFIX}"
        write_private(token_file, token + "\n")

    app = create_app(manager, token=token, strict=args.azure_strict, metadata=metadata_provider(image, launcher, manager, args.azure_strict))
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only when
    # their proto says TCP; with proto 0 every response waited ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 2
    sock.listen(512)
    sock.setblocking(False)
    port = sock.getsockname()[1]
    if egress is not None:  # known only now, and before any session starts
        egress.policy = dataclasses.replace(egress.policy, pool_ports=frozenset({port}))
    scheme = "https" if args.certfile else "http"
    host = f"[{args.host}]" if family == socket.AF_INET6 else args.host
    endpoint = f"{scheme}://{host}:{port}"

    ssl_kwargs: dict[str, Any] = {}
    if args.certfile:
        ssl_kwargs = {"ssl_certfile": str(args.certfile), "ssl_keyfile": str(args.keyfile) if args.keyfile else None}
    config_uv = uvicorn.Config(app, log_level=args.log_level if args.log_level != "info" else "warning", access_log=False, lifespan="off", **ssl_kwargs)
    server = uvicorn.Server(config_uv)

    await manager.start()
    iso = launcher.isolation
    print(f"Pool management endpoint: {endpoint}", flush=True)
    print(f"Token: {'given with --token' if args.token else f'in {token_file}'}", flush=True)
    print(f"Isolation: {iso.get('level')} ({', '.join(iso.get('protections', []))})", flush=True)
    for missing in iso.get("missing", []):
        print(f"  not active: {missing}", flush=True)
    print(f"Image: {image.name} ({len(image.packages)} packages, {image.path})", flush=True)
    if egress is not None:
        print(f"Egress: {', '.join(egress.policy.hosts)} through the pool's proxy"
              + (f" (log: {args.egress_log})" if args.egress_log else ""), flush=True)
    else:
        print("Egress: none (sessions have no network, as on Azure; --egress pypi allows the package index)", flush=True)
    if args.azure_strict:
        print("Azure-strict: extensions are off; only the Azure data-plane contract is served.", flush=True)
    if args.runtime_file:
        write_private(args.runtime_file, json.dumps({"endpoint": endpoint, "token": token, "pid": os.getpid(), "strict": args.azure_strict,
                                                     "isolation": iso, "image": args.image, "egress": list(args.egress)}))

    stop = asyncio.Event()
    watchers = []
    if args.lease_dir:
        watchers.append(asyncio.create_task(_watch_leases(args.lease_dir, stop, args.runtime_file)))

    async def stop_when_asked() -> None:
        await stop.wait()
        server.should_exit = True

    watchers.append(asyncio.create_task(stop_when_asked()))
    try:
        await server.serve(sockets=[sock])
    finally:
        for w in watchers:
            w.cancel()
        await manager.close()
        if egress is not None:
            egress.close()
        for f in (args.runtime_file, token_file):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.unlink()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cooldown < 300 and not args.allow_short_cooldown or args.cooldown > 3600 or args.cooldown <= 0:
        print(f"error: --cooldown must be between 300 and 3600 seconds like Azure's (got {args.cooldown:g}); "
              "add --allow-short-cooldown for shorter test values.", file=sys.stderr)
        return 2
    if args.keyfile and not args.certfile:
        print("error: --keyfile needs --certfile.", file=sys.stderr)
        return 2
    if args.max_sessions < 1 or args.ready_sessions < 0 or args.pids < 8 or args.cpus <= 0 or args.data_inodes < 16 or args.parallel_starts < 1:
        print("error: --max-sessions >= 1, --ready-sessions >= 0, --pids >= 8, --cpus > 0, --data-inodes >= 16 and "
              "--parallel-starts >= 1 are required.", file=sys.stderr)
        return 2
    if min(args.memory, args.data_size, args.tmp_size) < 16 << 20:
        print("error: --memory, --data-size and --tmp-size must each be at least 16M.", file=sys.stderr)
        return 2
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # SIGTERM ends the pool as gracefully as Ctrl-C (uvicorn handles both once serving).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return asyncio.run(serve(args))
    except KeyboardInterrupt:
        return 0
