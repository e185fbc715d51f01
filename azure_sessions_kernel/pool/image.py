"""The session image: the Python environment that sandboxed sessions run.

A session must not see the host's Python (on the project's machines the
default one lives under ``/root``, which other uids cannot even traverse), so
the pool runs every kernel with a virtual environment built once from a
system interpreter and bound read-only into the sandbox at the same path.

``azure-sessions-kernel image build`` (``make setup`` runs it) creates it;
:func:`find_image` is what the launchers (``pool/sandbox/bwrap.py``,
``pool/sandbox/insecure.py``) and the pool's ``/metadata`` call to locate it and list
its packages. Where it lives:

* ``$AZURE_SESSIONS_KERNEL_IMAGE`` when set (the image directory itself);
* as root: ``/opt/azure-sessions-kernel/images/py<X.Y>-<hash8>``;
* otherwise: ``${XDG_CACHE_HOME:-~/.cache}/azure-sessions-kernel/images/py<X.Y>-<hash8>``;

where ``hash8`` covers ``image/requirements.txt`` and the interpreter, so a
changed requirement builds a fresh image next to the old one.

Layout of a built image (``<image>``)::

    bin/python                 the interpreter sessions run
    lib/python3.X/site-packages
    share/matplotlib/          pre-built font cache, copied into the session's
                               MPLCONFIGDIR by the runner at kernel start
    image.json                 the stamp, written last: requirements hash,
                               interpreter, package list
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = [
    "ImageError",
    "ImageInfo",
    "build_image",
    "default_image_dir",
    "find_image",
    "main",
]

#: Environment variable naming an image directory; overrides the default.
IMAGE_ENV = "AZURE_SESSIONS_KERNEL_IMAGE"
#: The system interpreter images are built from unless ``--python`` says otherwise.
DEFAULT_PYTHON = "/usr/bin/python3"
REQUIREMENTS_FILE = Path(__file__).with_name("image") / "requirements.txt"
STAMP_NAME = "image.json"
#: Where, inside an image, the pre-built matplotlib cache lives.
MPL_CACHE_SUBDIR = "share/matplotlib"
ROOT_IMAGES_DIR = Path("/opt/azure-sessions-kernel/images")
_STAMP_FORMAT = 1

_FIX = "run 'make setup' or 'azure-sessions-kernel image build'"


class ImageError(RuntimeError):
    """The session image is missing, stale or cannot be built; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    """A built session image, as recorded in its stamp file."""

    path: Path
    python: Path
    python_version: str
    packages: tuple[tuple[str, str], ...]
    #: Prefix of the interpreter the venv was made from (its stdlib lives
    #: there); the sandbox binds it read-only unless it is under /usr.
    base_prefix: Path = Path("/usr")

    @property
    def mpl_cache_dir(self) -> Path:
        return self.path / MPL_CACHE_SUBDIR


# --------------------------------------------------------------------------
# Where images live
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Interpreter:
    path: Path  # as given (a venv's bin/python links here)
    real_path: Path
    version: str  # "3.11.2"
    stdlib: Path
    base_prefix: Path


@functools.lru_cache(maxsize=8)
def _inspect_interpreter(python: str) -> _Interpreter:
    if not os.path.isfile(python) or not os.access(python, os.X_OK):
        raise ImageError(f"the interpreter {python} does not exist or is not executable; pass --python")
    probe = "import json, sys, sysconfig; print(json.dumps([sys.version.split()[0], sysconfig.get_paths()['stdlib'], sys.base_prefix]))"
    try:
        out = subprocess.run([python, "-I", "-c", probe], capture_output=True, text=True, check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise ImageError(f"cannot run the interpreter {python}: {exc}") from exc
    version, stdlib, base_prefix = json.loads(out)
    return _Interpreter(Path(python), Path(os.path.realpath(python)), version, Path(stdlib), Path(base_prefix))


def _requirements_text() -> str:
    return REQUIREMENTS_FILE.read_text()


def _image_key(interp: _Interpreter, requirements: str) -> str:
    digest = hashlib.sha256()
    for part in (requirements, str(interp.real_path), interp.version, str(_STAMP_FORMAT)):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()


def _default_python() -> str:
    return DEFAULT_PYTHON if os.path.exists(DEFAULT_PYTHON) else os.path.realpath(sys.executable)


def _images_root() -> Path:
    if os.geteuid() == 0:
        return ROOT_IMAGES_DIR
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "azure-sessions-kernel" / "images"


def default_image_dir(python: str | None = None) -> Path:
    """The directory ``image build`` uses for ``python`` (``$AZURE_SESSIONS_KERNEL_IMAGE`` wins)."""
    override = os.environ.get(IMAGE_ENV)
    if override:
        return Path(override).absolute()
    interp = _inspect_interpreter(python or _default_python())
    short_version = ".".join(interp.version.split(".")[:2])
    return _images_root() / f"py{short_version}-{_image_key(interp, _requirements_text())[:8]}"


# --------------------------------------------------------------------------
# Reading an image
# --------------------------------------------------------------------------


def _read_stamp(image_dir: Path) -> dict | None:
    try:
        stamp = json.loads((image_dir / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) and stamp.get("format") == _STAMP_FORMAT else None


def find_image(directory: str | os.PathLike[str] | None = None) -> ImageInfo:
    """Locate the built session image and describe it.

    Called by the launchers when they are created and by the pool for
    ``/metadata``. ``directory`` defaults to :func:`default_image_dir`.
    Raises :class:`ImageError` naming the fix when the image is not built.
    """
    image_dir = Path(directory).absolute() if directory else default_image_dir()
    stamp = _read_stamp(image_dir)
    if stamp is None:
        raise ImageError(f"the session image is not built (no {image_dir / STAMP_NAME}); {_FIX}")
    python = image_dir / "bin" / "python"
    if not os.access(python, os.X_OK):
        raise ImageError(f"the session image at {image_dir} is damaged (no bin/python); {_FIX} --force")
    return ImageInfo(
        path=image_dir,
        python=python,
        python_version=stamp["python_version"],
        packages=tuple((name, version) for name, version in stamp["packages"]),
        base_prefix=Path(stamp.get("base_prefix", "/usr")),
    )


# --------------------------------------------------------------------------
# Building an image
# --------------------------------------------------------------------------


def _untraversable_ancestor(path: Path) -> Path | None:
    """The first directory above ``path`` that other uids cannot search, if any."""
    for parent in reversed(path.parents):
        try:
            mode = parent.stat().st_mode
        except OSError:
            return parent
        if not mode & stat.S_IXOTH:
            return parent
    return None


def _check_readable_by_others(interp: _Interpreter) -> None:
    """As root, sessions run as unprivileged uids: refuse an interpreter they could not load."""
    for path in (interp.real_path, interp.stdlib):
        blocked = _untraversable_ancestor(path)
        if blocked is not None:
            raise ImageError(
                f"the interpreter {interp.path} lives under {blocked}, which other users cannot enter "
                f"(mode {stat.filemode(blocked.stat().st_mode)}), so sandboxed sessions could not run it; "
                f"build with a system interpreter, e.g. --python /usr/bin/python3"
            )
    if not interp.real_path.stat().st_mode & stat.S_IXOTH or not interp.stdlib.stat().st_mode & stat.S_IROTH:
        raise ImageError(f"the interpreter {interp.path} or its standard library is not readable by other users")


def _run(argv: Sequence[str], what: str, env: dict[str, str] | None = None, quiet: bool = False) -> str:
    print(f"image: {what}", file=sys.stderr, flush=True)
    result = subprocess.run(argv, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT if quiet else None)
    if result.returncode != 0:
        raise ImageError(f"{what} failed (exit {result.returncode}):\n{result.stdout[-4000:]}")
    return result.stdout


def _repoint_scripts(bin_dir: Path, old_prefix: Path, new_prefix: Path) -> None:
    """Replace the temporary build path that pip and venv wrote into ``#!`` lines and activate scripts."""
    old, new = str(old_prefix).encode(), str(new_prefix).encode()
    for script in bin_dir.iterdir():
        if script.is_symlink() or not script.is_file():
            continue
        content = script.read_bytes()
        if old in content and b"\0" not in content:
            script.write_bytes(content.replace(old, new))


def _make_world_readable(root: Path) -> None:
    """Give other users read (and search/exec where the owner has x) on everything."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames, ""]:
            path = os.path.join(dirpath, name) if name else dirpath
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                continue
            wanted = st.st_mode | stat.S_IRGRP | stat.S_IROTH
            if st.st_mode & stat.S_IXUSR:
                wanted |= stat.S_IXGRP | stat.S_IXOTH
            if wanted != st.st_mode:
                os.chmod(path, stat.S_IMODE(wanted))


_LIST_PACKAGES = (
    "import importlib.metadata as m, json; "
    "print(json.dumps(sorted({(d.metadata['Name'], d.version) for d in m.distributions()}, key=lambda p: p[0].lower())))"
)
# Loading the font manager writes matplotlib's font cache (fontlist-*.json)
# into MPLCONFIGDIR; fonts bundled with matplotlib are recorded relative to
# its data directory, so the cache stays valid after the rename.
_WARM_MATPLOTLIB = "import matplotlib; matplotlib.use('Agg'); import matplotlib.font_manager as fm; fm._load_fontmanager(try_read_cache=False)"


@contextlib.contextmanager
def _build_lock(images_root: Path) -> Iterator[None]:
    """Serialise builds into one images directory (``make -j`` or two shells)."""
    with open(images_root / ".build.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def build_image(directory: str | os.PathLike[str] | None = None, python: str | None = None, force: bool = False) -> ImageInfo:
    """Build the session image unless an up-to-date one is already there.

    Called by ``azure-sessions-kernel image build``. Builds in a temporary
    sibling directory and renames it into place, so a crash never leaves a
    half-built image that :func:`find_image` would accept.
    """
    interp = _inspect_interpreter(python or _default_python())
    if os.geteuid() == 0:  # sessions will run as other, unprivileged uids
        _check_readable_by_others(interp)
    requirements = _requirements_text()
    key = _image_key(interp, requirements)
    image_dir = Path(directory).absolute() if directory else default_image_dir(str(interp.path))

    stamp = _read_stamp(image_dir)
    if not force and stamp is not None and stamp.get("key") == key:
        return find_image(image_dir)

    image_dir.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    blocked = _untraversable_ancestor(image_dir)
    if blocked is not None and os.geteuid() == 0:
        raise ImageError(f"{image_dir} is under {blocked}, which other users cannot enter; choose another --dir")
    with _build_lock(image_dir.parent):
        stamp = _read_stamp(image_dir)  # another build may have finished while we waited
        if not force and stamp is not None and stamp.get("key") == key:
            return find_image(image_dir)
        started = time.monotonic()
        old_umask = os.umask(0o022)
        build_dir = Path(tempfile.mkdtemp(prefix=f".{image_dir.name}.build-", dir=image_dir.parent))
        try:
            _populate(build_dir, image_dir, interp, requirements, key)
            _swap_into_place(build_dir, image_dir)
        except BaseException:
            shutil.rmtree(build_dir, ignore_errors=True)
            raise
        finally:
            os.umask(old_umask)
        print(f"image: built {image_dir} in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return find_image(image_dir)


def _populate(build_dir: Path, final_dir: Path, interp: _Interpreter, requirements: str, key: str) -> None:
    os.chmod(build_dir, 0o755)
    _run([str(interp.path), "-m", "venv", "--clear", str(build_dir)], f"creating a virtual environment from {interp.path}")
    python = str(build_dir / "bin" / "python")
    _run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input", "-r", str(REQUIREMENTS_FILE)],
        f"installing {REQUIREMENTS_FILE.name} (a few minutes the first time)",
    )
    _repoint_scripts(build_dir / "bin", build_dir, final_dir)
    mpl_cache = build_dir / MPL_CACHE_SUBDIR
    mpl_cache.mkdir(parents=True)
    env = {"PATH": "/usr/bin:/bin", "MPLCONFIGDIR": str(mpl_cache), "HOME": str(build_dir)}
    _run([python, "-c", _WARM_MATPLOTLIB], "pre-building matplotlib's font cache", env=env, quiet=True)
    packages = json.loads(_run([python, "-I", "-c", _LIST_PACKAGES], "listing packages", quiet=True))
    _make_world_readable(build_dir)
    stamp = {
        "format": _STAMP_FORMAT,
        "key": key,
        "python_version": interp.version,
        "base_interpreter": str(interp.path),
        "base_prefix": str(interp.base_prefix),
        "requirements": requirements,
        "packages": packages,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    stamp_path = build_dir / STAMP_NAME
    stamp_path.write_text(json.dumps(stamp, indent=1) + "\n")
    os.chmod(stamp_path, 0o644)


def _swap_into_place(build_dir: Path, image_dir: Path) -> None:
    """Rename the finished build to its final name, moving an older image aside first."""
    retired = None
    if image_dir.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{image_dir.name}.old-", dir=image_dir.parent))
        os.rename(image_dir, retired / "image")
    os.rename(build_dir, image_dir)
    if retired is not None:
        # Running sandboxes keep their bind of the old tree; removing it only
        # drops the host's name for it.
        shutil.rmtree(retired, ignore_errors=True)


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def _describe(info: ImageInfo) -> str:
    lines = [f"path:    {info.path}", f"python:  {info.python} ({info.python_version})", f"packages ({len(info.packages)}):"]
    lines += [f"  {name}=={version}" for name, version in info.packages]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``azure-sessions-kernel image {build,path,info}`` (dispatched from ``cli.py``)."""
    parser = argparse.ArgumentParser(prog="azure-sessions-kernel image", description="Build or inspect the session image.")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build the image unless it is up to date")
    build.add_argument("--dir", help=f"where to build it (default: ${IMAGE_ENV} or a per-user/system location)")
    build.add_argument("--python", help=f"interpreter to build from (default: {DEFAULT_PYTHON})")
    build.add_argument("--force", action="store_true", help="rebuild even if up to date")
    path_cmd = commands.add_parser("path", help="print the image directory")
    info_cmd = commands.add_parser("info", help="describe the built image")
    for sub in (path_cmd, info_cmd):
        sub.add_argument("--dir", help="the image directory to use")
    info_cmd.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(list(argv) if argv is not None else None)

    try:
        if args.command == "build":
            info = build_image(args.dir, python=args.python, force=args.force)
            print(info.path)
        elif args.command == "path":
            print(Path(args.dir).absolute() if args.dir else default_image_dir())
        else:
            info = find_image(args.dir)
            if args.json:
                print(json.dumps({**dataclasses.asdict(info), "path": str(info.path), "python": str(info.python)}, indent=1))
            else:
                print(_describe(info))
    except ImageError as exc:
        print(f"azure-sessions-kernel image: {exc}", file=sys.stderr)
        return 1
    return 0
