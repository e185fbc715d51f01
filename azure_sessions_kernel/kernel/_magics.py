"""The kernel's own magics, run by its *local* IPython shell; every other line goes to the session.

``%upload``, ``%download``, ``%files``, ``%session`` and ``%timeout`` move
files and manage the session from the notebook's side. A cell may start
and/or end with such lines around ordinary code (upload, compute, download
in one cell): the leading lines run first, then the code in the session,
then the trailing lines if the code succeeded. Our magics in the middle of
the code are refused, because running them out of order would surprise.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import html
import os
import re
import shlex
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.display import display

from traitlets import TraitError

from ..wire import RemoteFile
from ._identifiers import check_name
from ._lazy import client as sessions_client
from ._transfers import REMOTE_ROOT, Transfer, TransferError, format_size, plan_download, plan_upload, remote_relative, walk_remote

if TYPE_CHECKING:
    from tqdm import tqdm

    from ..client import SessionsClient
    from .kernel import AzureSessionsKernel

MAGIC_NAMES = ("upload", "download", "files", "session", "timeout")
_OUR_LINE = re.compile(r"%(?:" + "|".join(MAGIC_NAMES) + r")\??\??(?=\s|$)")
#: Transfers at least this large get a progress bar.
PROGRESS_MIN_BYTES = 4 * 1024 * 1024


class SessionMagicError(Exception):
    """A magic that cannot do what was asked; shown as one sentence, no traceback."""


# -- cells ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CellPlan:
    """How one cell runs: our magic lines locally around the code sent to the session."""

    before: str
    remote: str
    after: str


def _is_ours(line: str) -> bool:
    return bool(_OUR_LINE.match(line))


def _is_filler(line: str) -> bool:
    stripped = line.strip()
    return not stripped or stripped.startswith("#")


def plan_cell(code: str) -> CellPlan:
    """Split a cell into leading magics, session code and trailing magics.

    The session code keeps its line numbers (leading magic lines become
    blank lines), so tracebacks point at the right line of the cell.
    """
    lines = code.split("\n")
    start = 0
    while start < len(lines) and (_is_ours(lines[start]) or _is_filler(lines[start])):
        start += 1
    if start == len(lines):
        return CellPlan(code if any(map(_is_ours, lines)) else "", "", "")
    end = len(lines)
    while end > start and (_is_ours(lines[end - 1]) or _is_filler(lines[end - 1])):
        end -= 1
    stray = next((line.strip() for line in lines[start:end] if _is_ours(line.strip())), None)
    if stray is not None:
        raise SessionMagicError(
            f"{stray.split()[0]} can only be at the start or the end of a cell, because this kernel runs its "
            "magics on this machine before or after sending the rest to the session; move it to its own cell."
        )
    before = [line for line in lines[:start] if _is_ours(line)]
    after = [line for line in lines[end:] if _is_ours(line)]
    remote = "\n" * start + "\n".join(lines[start:end]) if before else "\n".join(lines[:end])
    return CellPlan("\n".join(before), remote if (before or after) else code, "\n".join(after))


def needs_connection(magic_code: str) -> bool:
    """Whether running these magic lines needs the pool (``%timeout`` and ``%x?`` help do not)."""
    return any(not line.startswith("%timeout") and not line.rstrip().endswith("?") for line in magic_code.splitlines() if line.strip())


# -- the magics ------------------------------------------------------------------------


def parse_argstring(magic: Any, line: str) -> Any:
    """Like IPython's ``parse_argstring``, but quotes group words and are removed, as in a shell.

    (IPython keeps the quote characters, so ``%upload 'my data.csv'`` would
    look for a file whose name starts with a quote.)
    """
    posix = os.name != "nt"  # Windows paths keep their backslashes
    try:
        argv = shlex.split(line, posix=posix)
    except ValueError as exc:
        raise UsageError(f"{exc} in: {line}") from None
    if not posix:
        argv = [a[1:-1] if len(a) >= 2 and a[0] == a[-1] and a[0] in "'\"" else a for a in argv]
    return magic.parser.parse_args(argv)



def _progress(transfers: list[Transfer], verb: str, quiet: bool) -> tqdm:
    from tqdm import tqdm  # only transfers need it

    total = sum(t.size or 0 for t in transfers)
    return tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=verb,
        file=sys.stderr,
        disable=quiet or total < PROGRESS_MIN_BYTES,
    )


def _report(verb: str, transfers: list[Transfer], arrow: Iterable[tuple[str, str]]) -> None:
    pairs = list(arrow)
    if len(pairs) <= 10:
        for (src, dst), t in zip(pairs, transfers):
            print(f"{verb} {src} -> {dst} ({format_size(t.size)})")
    else:
        total = sum(t.size or 0 for t in transfers)
        print(f"{verb} {len(pairs)} files ({format_size(total)}), e.g. {pairs[0][0]} -> {pairs[0][1]}")


def _seconds_or_off(text: str) -> float | str:
    """``%timeout``'s argument: a number of seconds, or ``off``."""
    if text.strip().lower() in ("off", "none"):
        return "off"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds or 'off', got {text!r}") from None


@magics_class
class SessionMagics(Magics):
    """``%upload``, ``%download``, ``%files``, ``%session``, ``%timeout``."""

    def __init__(self, shell: Any, kernel: AzureSessionsKernel) -> None:
        super().__init__(shell)
        self.kernel = kernel

    @property
    def _client(self) -> SessionsClient:
        return self.kernel.remote.sync_client()

    @property
    def _identifier(self) -> str:
        return self.kernel.remote.identifier

    def _list(self, folder: str | None) -> list[RemoteFile]:
        return self._client.list_files(self._identifier, path=folder or None)

    @magic_arguments()
    @argument("local", help="a local file, a glob pattern (quote it if it has spaces) or a directory, uploaded with its whole tree")
    @argument(
        "remote",
        nargs="?",
        default="",
        help=f"where in the session: a folder under {REMOTE_ROOT} (end it with /), or a new name for a single file; default {REMOTE_ROOT}",
    )
    @argument("-q", "--quiet", action="store_true", help="no progress bar")
    @line_magic
    def upload(self, line: str) -> None:
        """Upload local files into the session's /mnt/data.

        Sessions accept files of at most 128 MiB (Azure's limit); larger files
        are refused before anything is sent.
        """
        args = parse_argstring(self.upload, line)
        transfers = plan_upload(args.local, args.remote, Path.cwd())
        with _progress(transfers, "Uploading", args.quiet) as bar:
            for t in transfers:
                self._client.upload(self._identifier, t.local, t.name, path=t.folder or None, progress=bar.update)
        _report("Uploaded", transfers, ((os.path.relpath(t.local), t.remote) for t in transfers))

    @magic_arguments()
    @argument("remote", help=f"a file or directory under {REMOTE_ROOT} (relative or absolute), or a glob pattern in its last part")
    @argument("local", nargs="?", default=None, help="a local folder, or a new name for a single file; default: the notebook's directory")
    @argument("-f", "--force", action="store_true", help="overwrite local files that already exist")
    @argument("-q", "--quiet", action="store_true", help="no progress bar")
    @line_magic
    def download(self, line: str) -> None:
        """Download files from the session's /mnt/data; never overwrites without --force."""
        args = parse_argstring(self.download, line)
        transfers = plan_download(args.remote, args.local, Path.cwd(), self._list, force=args.force)
        with _progress(transfers, "Downloading", args.quiet) as bar:
            for t in transfers:
                self._download(t, bar)
        _report("Downloaded", transfers, ((t.remote, os.path.relpath(t.local)) for t in transfers))

    def _download(self, t: Transfer, bar: tqdm) -> None:
        t.local.parent.mkdir(parents=True, exist_ok=True)
        # Into a temporary file first: an interrupted download leaves no half file behind.
        partial = t.local.with_name(f".{t.local.name}.part-{os.getpid()}")
        try:
            with open(partial, "wb") as f:
                self._client.download_to(self._identifier, t.name, f, path=t.folder or None, progress=bar.update)
            os.replace(partial, t.local)
        finally:
            partial.unlink(missing_ok=True)

    @magic_arguments()
    @argument("path", nargs="?", default="", help=f"a folder under {REMOTE_ROOT}; default {REMOTE_ROOT}")
    @argument("-r", "--recursive", action="store_true", help="include sub-folders")
    @line_magic
    def files(self, line: str) -> None:
        """List the files in the session: name, size and last modification."""
        args = parse_argstring(self.files, line)
        folder = remote_relative(args.path)
        if args.recursive:
            rows = [(f"{where[len(folder):].strip('/') + '/' if where != folder else ''}{f.name}", f) for where, f in walk_remote(self._list, folder)]
        else:
            rows = [(f.name + ("/" if f.is_directory else ""), f) for f in sorted(self._list(folder), key=lambda f: (not f.is_directory, f.name))]
        title = "/".join(p for p in (REMOTE_ROOT, folder) if p)
        display(_files_table(title, rows), raw=True)

    @magic_arguments()
    @argument("action", nargs="?", choices=("new", "delete", "use", "packages"),
              help="new: switch to a fresh session; delete: end this one; use NAME: switch to a named session; "
                   "packages: list the session image's packages")
    @argument("name", nargs="?", help="the session name for 'use' (letters, digits, '.', '_', '-')")
    @line_magic
    def session(self, line: str) -> None:
        """Show the remote session, or manage it.

        %session            endpoint, backend, identifier, api version, age and expiry
        %session new        start a fresh session (the kernel's own previous one is deleted)
        %session delete     end the current session now; the next cell starts a fresh one
        %session use NAME   use the named session NAME: the same NAME finds the same session
                            again after a kernel restart (until it expires or is deleted)
        %session packages   the packages of the session image, with their versions
        """
        args = parse_argstring(self.session, line)
        if args.action != "use" and args.name:
            raise SessionMagicError(f"%session {args.action or ''} takes no name; did you mean %session use {args.name}?")
        if args.action is None:
            self._show_session()
        elif args.action == "packages":
            packages = self._client.metadata().packages
            if not packages:
                raise SessionMagicError("This pool does not list its packages; run !pip list in a cell instead.")
            print("\n".join(f"{name}=={version}" for name, version in packages))
        elif args.action == "new":
            self.kernel.switch_session(None)
            print("Switched to a new session; the next cell runs in it.")
        elif args.action == "delete":
            self.kernel.delete_current_session()
            print("Deleted the session; the next cell starts a fresh one.")
        else:
            if not args.name:
                raise SessionMagicError("%session use needs a name, e.g. %session use analysis.")
            try:
                name = check_name(args.name)
            except ValueError as exc:
                raise SessionMagicError(str(exc)) from None
            self.kernel.switch_session(name)
            print(f"Using the named session {name!r}; it survives kernel restarts until it expires or %session delete ends it.")

    def _show_session(self) -> None:
        remote, kernel = self.kernel.remote, self.kernel
        backend = remote.backend
        assert backend is not None
        lines = [("endpoint", backend.endpoint), ("backend", backend.description)]
        if backend.isolation:
            lines.append(("isolation", _describe_isolation(backend.isolation)))
        lines += [
            ("session", f"{kernel.session_name!r} (named)" if kernel.session_name else "this kernel's own"),
            ("identifier", remote.identifier),
            ("api version", remote.api_version),
        ]
        try:
            info = self._client.get_session(remote.identifier)
        except sessions_client.UnsupportedOperationError:
            lines.append(("age", f"unknown (api-version {remote.api_version} has no session route)"))
        except sessions_client.SessionNotFoundError:
            # Sessions exist from their first execution on (the helper's install is one).
            lines.append(("age", "not started yet: the session is created by the first cell that runs in it"))
        except sessions_client.SessionsError as exc:
            lines.append(("age", f"unknown ({exc})"))
        else:
            now = dt.datetime.now(dt.timezone.utc)
            if info.created_at:
                lines.append(("age", f"{_duration(now - info.created_at)} (created {info.created_at:%Y-%m-%d %H:%M:%S} UTC)"))
            if info.expires_at:
                lines.append(("expires", f"in {_duration(info.expires_at - now)} if idle ({info.expires_at:%H:%M:%S} UTC)"))
        lines.append(("image", self._describe_image()))
        if remote.lease is not None:  # on Azure the pool's network setting decides, and the data plane does not say
            lines.append(("egress", _describe_egress(remote.lease.egress)))
        extensions = ", ".join(sorted(backend.extensions)) or "none (Azure contract only: cells run through the long-poll channel)"
        limit = kernel.execution_timeout
        lines += [("extensions", extensions), ("cell timeout", "none" if limit is None else f"{limit:g} s")]
        width = max(len(k) for k, _ in lines)
        print("\n".join(f"{k:<{width}}  {v}" for k, v in lines))

    def _describe_image(self) -> str:
        """The session image's name and package count, from the pool's metadata (``%session``)."""
        try:
            metadata = self._client.metadata()
        except sessions_client.SessionsError as exc:
            return f"unknown ({exc})"
        name = ((metadata.extensions or {}).get("image") or {}).get("name")
        if name is None and not self.kernel.endpoint:  # the local pool this kernel leased serves the image it asked for
            name = self.kernel.image or "default"
        count = f"{len(metadata.packages)} packages, %session packages lists them" if metadata.packages else "packages not listed"
        return f"{name or 'not named by the pool'} ({count})"

    @magic_arguments()
    @argument("seconds", nargs="?", type=_seconds_or_off, help="the new per-cell timeout in seconds (any positive number), or 'off' for none")
    @line_magic
    def timeout(self, line: str) -> None:
        """Show or set how long a cell may run in the session before it is interrupted.

        By default cells have no timeout, as in any Jupyter kernel. A cell past
        its timeout is interrupted (its variables are kept) and reported as a
        TimeoutError within about a second.
        """
        args = parse_argstring(self.timeout, line)
        if args.seconds is None:
            limit = self.kernel.execution_timeout
            print("Cells have no timeout." if limit is None else f"Cells may run for {limit:g} s.")
            return
        if args.seconds == "off":
            self.kernel.execution_timeout = None
            print("Cells now have no timeout.")
            return
        try:
            self.kernel.execution_timeout = args.seconds
        except TraitError:
            raise SessionMagicError(f"%timeout takes a number of seconds more than 0, or 'off'; got {args.seconds:g}.") from None
        print(f"Cells may now run for {self.kernel.execution_timeout:g} s.")


def _describe_egress(egress: Iterable[str]) -> str:
    """The hosts a local pool's sessions may reach, for ``%session`` (aliases such as ``pypi`` as written)."""
    return ", ".join(egress) or "none (sessions have no network)"


def _duration(delta: dt.timedelta) -> str:
    seconds = max(int(delta.total_seconds()), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {seconds:02d}s"


def _describe_isolation(isolation: Any) -> str:
    if isinstance(isolation, dict):
        summary = isolation.get("summary") or isolation.get("level")
        if summary:
            return str(summary)
        return ", ".join(f"{k}={v}" for k, v in isolation.items() if not isinstance(v, (dict, list)))
    return str(isolation)


def _files_table(title: str, rows: list[tuple[str, RemoteFile]]) -> dict[str, str]:
    """A MIME bundle: an aligned text table and the same as HTML."""
    cells = [
        (name, "" if f.is_directory else format_size(f.size), f"{f.last_modified:%Y-%m-%d %H:%M}" if f.last_modified else "")
        for name, f in rows
    ]
    if not cells:
        return {"text/plain": f"{title} is empty.", "text/html": f"<p><code>{html.escape(title)}</code> is empty.</p>"}
    header = ("name", "size", "modified")
    widths = [max(len(r[i]) for r in [header, *cells]) for i in range(3)]
    text = [f"{title}:"] + [f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c}" for a, b, c in [header, *cells]]
    body = "".join(
        f"<tr><td><code>{html.escape(a)}</code></td><td style='text-align:right'>{html.escape(b)}</td><td>{html.escape(c)}</td></tr>"
        for a, b, c in cells
    )
    table = (
        f"<p><code>{html.escape(title)}</code></p><table><thead><tr><th>name</th><th>size</th><th>modified</th></tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )
    return {"text/plain": "\n".join(text), "text/html": table}


def show_magic_error(shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: int | None = None) -> list[str]:
    """IPython custom-exception handler: one sentence as an ``error`` output, no traceback."""
    stb = [f"{etype.__name__}: {value}"]
    shell._showtraceback(etype, value, stb)
    return stb


def magic_errors() -> tuple[type[BaseException], ...]:
    """Errors our magics raise that deserve one sentence rather than a traceback (imports the client)."""
    return (SessionMagicError, TransferError, sessions_client.SessionsError)
