"""Session images: the Python environments that sandboxed sessions run.

A session must not see the host's Python (on the project's machines the
default one lives under ``/root``, which other uids cannot even traverse), so
the pool runs every kernel with a virtual environment built from a system
interpreter and bound read-only into the sandbox at the same path.

``azure-sessions-kernel image build`` (``make setup`` runs it) builds the
*default* image from ``image/requirements.lock``: every package pinned with
its hashes, installed by uv (in parallel, from its cache after the first
time). ``image build --requirements FILE --name NAME`` builds a *named* image:
the default set plus FILE, resolved against the lock so that the default
packages keep their versions. :func:`find_image` is what the launchers
(``pool/sandbox/bwrap.py``, ``pool/sandbox/insecure.py``) and the pool's ``/metadata`` call
to locate an image and list its packages; :func:`resolve_image` turns
``serve --image NAME|DIR`` into a directory. Where images live:

* ``$AZURE_SESSIONS_KERNEL_IMAGE`` when set (the default image directory itself);
* as root: ``/opt/azure-sessions-kernel/images/``;
* otherwise: ``${XDG_CACHE_HOME:-~/.cache}/azure-sessions-kernel/images/``;

the default image in ``py<X.Y>-<hash8>`` there, where ``hash8`` covers the
lock and the interpreter (a refreshed lock builds a fresh image next to the
old one), a named image in ``named/<NAME>``.

Layout of a built image (``<image>``)::

    bin/python                 the interpreter sessions run
    lib/python3.X/site-packages
    share/matplotlib/          pre-built font cache, copied into the session's
                               MPLCONFIGDIR by the runner at kernel start
    image.json                 the stamp, written last: name, key, interpreter,
                               extra requirements, package list
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
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from .._runtime import DEFAULT_IMAGE

__all__ = [
    "DEFAULT_IMAGE_NAME",
    "ImageError",
    "ImageInfo",
    "build_image",
    "default_image_dir",
    "find_image",
    "list_images",
    "lock_requirements",
    "main",
    "remove_image",
    "resolve_image",
]

#: Environment variable naming an image directory; overrides the default.
IMAGE_ENV = "AZURE_SESSIONS_KERNEL_IMAGE"
#: The system interpreter images are built from unless ``--python`` says otherwise.
DEFAULT_PYTHON = "/usr/bin/python3"
#: What the default image holds, as ranges (edited by hand).
REQUIREMENTS_IN = Path(__file__).with_name("image") / "requirements.in"
#: The same, resolved: every package pinned with its hashes (``image lock`` writes it).
LOCK_FILE = Path(__file__).with_name("image") / "requirements.lock"
#: The name of the image built from the lock alone.
DEFAULT_IMAGE_NAME = DEFAULT_IMAGE
#: The platform the lock is resolved for (any platform and Python from the oldest one up).
LOCK_PYTHON = "3.11"
STAMP_NAME = "image.json"
#: Where, inside an image, the pre-built matplotlib cache lives.
MPL_CACHE_SUBDIR = "share/matplotlib"
ROOT_IMAGES_DIR = Path("/opt/azure-sessions-kernel/images")
_STAMP_FORMAT = 2
_NAME_CHARS = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

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
    #: ``"default"``, the NAME it was built with, or its directory when built with ``--dir``.
    name: str = DEFAULT_IMAGE_NAME
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


def _lock_text() -> str:
    try:
        return LOCK_FILE.read_text()
    except OSError as exc:
        raise ImageError(f"the lock file {LOCK_FILE} is missing ({exc.strerror}); reinstall the package "
                         "or run 'azure-sessions-kernel image lock'") from None


def _image_key(interp: _Interpreter, lock: str, extra: str = "") -> str:
    digest = hashlib.sha256()
    for part in (lock, extra, str(interp.real_path), interp.version, str(_STAMP_FORMAT)):
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
    return _images_root() / f"py{short_version}-{_image_key(interp, _lock_text())[:8]}"


def _check_name(name: str) -> str:
    if not _NAME_CHARS.fullmatch(name) or name == DEFAULT_IMAGE_NAME:
        raise ImageError(
            f"{name!r} cannot name an image: use 1-64 letters, digits, '.', '_' or '-', starting with a letter "
            f"or digit, and not {DEFAULT_IMAGE_NAME!r} (the image built from the lock alone)"
        )
    return name


def _named_dir(name: str) -> Path:
    return _images_root() / "named" / _check_name(name)


def resolve_image(spec: str | os.PathLike[str] | None) -> Path:
    """The directory of the image ``spec`` names: ``None`` or ``"default"``, a NAME, or a directory.

    Called by ``serve --image`` before the launcher is made. A spec with a
    ``/`` in it is a directory; anything else is a name, which need not be
    built yet (:func:`find_image` says so, with the fix).
    """
    if spec is None or str(spec) == DEFAULT_IMAGE_NAME:
        return default_image_dir()
    text = os.fspath(spec)
    if os.sep in text or text.startswith("."):
        return Path(text).absolute()
    return _named_dir(text)


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
        if image_dir.parent == _images_root() / "named":
            raise ImageError(
                f"there is no image named {image_dir.name!r} ('azure-sessions-kernel image list' shows the built ones; "
                f"'azure-sessions-kernel image build --requirements FILE --name {image_dir.name}' builds it)"
            )
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
        name=stamp.get("name") or DEFAULT_IMAGE_NAME,
    )


def list_images() -> list[ImageInfo]:
    """The default image (when built) and every named image, for ``image list``."""
    candidates = [default_image_dir()]
    named_root = _images_root() / "named"
    if named_root.is_dir():
        candidates += sorted(p for p in named_root.iterdir() if not p.name.startswith("."))
    found = []
    for directory in candidates:
        with contextlib.suppress(ImageError):
            found.append(find_image(directory))
    return found


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


def build_image(
    directory: str | os.PathLike[str] | None = None,
    python: str | None = None,
    force: bool = False,
    *,
    name: str | None = None,
    requirements: str | os.PathLike[str] | None = None,
) -> ImageInfo:
    """Build an image unless an up-to-date one is already there.

    Called by ``azure-sessions-kernel image build`` (``make setup``) and by
    tests. Without ``name`` it builds the default image (in ``directory``
    when given); with ``name`` it builds the default set plus the
    ``requirements`` file as a named image. Builds in a temporary sibling
    directory and renames it into place, so a failed build (a requirement
    that does not resolve, a crash) leaves the existing image as it was and
    never a half-built one that :func:`find_image` would accept.
    """
    if name is not None and directory is not None:
        raise ImageError("give --name or --dir, not both: a named image lives with the other images")
    if requirements is not None and name is None:
        raise ImageError("--requirements needs --name: the default image holds the default set only")
    if name is not None:
        _check_name(name)
    extra = ""
    if requirements is not None:
        try:
            extra = Path(requirements).read_text()
        except OSError as exc:
            raise ImageError(f"cannot read the requirements file {requirements}: {exc.strerror}") from None
    interp = _inspect_interpreter(python or _default_python())
    if os.geteuid() == 0:  # sessions will run as other, unprivileged uids
        _check_readable_by_others(interp)
    lock = _lock_text()
    key = _image_key(interp, lock, extra)
    if name is not None:
        image_dir = _named_dir(name)
    else:
        image_dir = Path(directory).absolute() if directory else default_image_dir(str(interp.path))

    stamp = _read_stamp(image_dir)
    if not force and stamp is not None and stamp.get("key") == key:
        print(f"image: {image_dir} is up to date", file=sys.stderr)
        return find_image(image_dir)

    image_dir.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    blocked = _untraversable_ancestor(image_dir)
    if blocked is not None and os.geteuid() == 0:
        raise ImageError(f"{image_dir} is under {blocked}, which other users cannot enter; choose another --dir")
    label = name or (str(image_dir) if directory else DEFAULT_IMAGE_NAME)
    pinned_extra = _resolve_extra(interp, requirements) if requirements is not None else ""
    with _build_lock(image_dir.parent):
        stamp = _read_stamp(image_dir)  # another build may have finished while we waited
        if not force and stamp is not None and stamp.get("key") == key:
            return find_image(image_dir)
        started = time.monotonic()
        old_umask = os.umask(0o022)
        build_dir = Path(tempfile.mkdtemp(prefix=f".{image_dir.name}.build-", dir=image_dir.parent))
        try:
            _populate(build_dir, image_dir, interp, key, label, extra, pinned_extra)
            _swap_into_place(build_dir, image_dir)
        except BaseException:
            shutil.rmtree(build_dir, ignore_errors=True)
            raise
        finally:
            os.umask(old_umask)
        print(f"image: built {image_dir} in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return find_image(image_dir)


def _uv() -> str:
    """The uv binary (a dependency of this package: it installs images in parallel, from its cache)."""
    try:
        from uv import find_uv_bin
    except ImportError:
        raise ImageError("uv is not installed in this environment; 'pip install uv' (a dependency of this package)") from None
    return find_uv_bin()


def _resolve_extra(interp: _Interpreter, requirements: str | os.PathLike[str]) -> str:
    """Pin the extra requirements against the lock, before anything is built.

    A requirement that does not exist, or needs another version of a default
    package, fails here in a second or two, naming the conflict, and nothing
    is built or replaced.
    """
    argv = [_uv(), "pip", "compile", "--no-config", "--quiet", "--no-header", "--no-annotate", "--python", str(interp.path),
            "--constraint", str(LOCK_FILE), os.fspath(requirements)]
    print(f"image: resolving {requirements} against the default set", file=sys.stderr, flush=True)
    result = subprocess.run(argv, text=True, capture_output=True)
    if result.returncode != 0:
        raise ImageError(f"the requirements in {requirements} do not resolve together with the default set:\n{result.stderr.strip()[-4000:]}")
    return result.stdout


def _install_packages(build_dir: Path, pinned_extra: str) -> None:
    """Install the lock (hashes required) into a new image, or the extras pinned by :func:`_resolve_extra` into a clone."""
    uv, python = _uv(), str(build_dir / "bin" / "python")
    # Bytecode now: the image is read-only in the sandbox, so sessions could never cache it.
    common = ["--python", python, "--compile-bytecode", "--no-config"]
    if not pinned_extra:
        _run([uv, "pip", "sync", *common, "--require-hashes", str(LOCK_FILE)],
             f"installing {LOCK_FILE.name} with uv (under a minute the first time, seconds from uv's cache)")
        return
    extra_file = build_dir / "extra-requirements.txt"
    extra_file.write_text(pinned_extra)
    _run([uv, "pip", "install", *common, "--constraint", str(LOCK_FILE), "-r", str(extra_file)], "installing the extra requirements")
    extra_file.unlink()


def _clone_default(build_dir: Path, interp: _Interpreter) -> ImageInfo:
    """Start a named image as a copy of the default one (built first if need be).

    The installed packages and their bytecode are hard links (files in an
    image never change; uv's own installs are links to its cache already), so
    a named image costs the time and disk of its extra packages only. ``bin/``
    and ``share/`` are real copies: scripts are rewritten for the new path and
    the matplotlib cache is rebuilt in place.
    """
    default = build_image(python=str(interp.path))
    print(f"image: starting from the default image {default.path}", file=sys.stderr, flush=True)
    for entry in default.path.iterdir():
        target = build_dir / entry.name
        if entry.name == STAMP_NAME:
            continue
        if entry.is_symlink():
            os.symlink(os.readlink(entry), target)
        elif entry.name in ("bin", "share"):
            shutil.copytree(entry, target, symlinks=True)
        elif entry.is_dir():
            shutil.copytree(entry, target, symlinks=True, copy_function=os.link)
        else:
            shutil.copy2(entry, target)
    _repoint_scripts(build_dir / "bin", default.path, build_dir)
    return default


def _populate(build_dir: Path, final_dir: Path, interp: _Interpreter, key: str, name: str, extra: str, pinned_extra: str) -> None:
    os.chmod(build_dir, 0o755)
    if pinned_extra:
        _clone_default(build_dir, interp)
    else:
        _run([str(interp.path), "-m", "venv", "--clear", "--without-pip", str(build_dir)], f"creating a virtual environment from {interp.path}")
    python = str(build_dir / "bin" / "python")
    _install_packages(build_dir, pinned_extra)
    with contextlib.suppress(FileNotFoundError):
        (build_dir / ".lock").unlink()  # uv's lock of the environment, mode 0666
    _repoint_scripts(build_dir / "bin", build_dir, final_dir)
    mpl_cache = build_dir / MPL_CACHE_SUBDIR
    mpl_cache.mkdir(parents=True, exist_ok=True)
    env = {"PATH": "/usr/bin:/bin", "MPLCONFIGDIR": str(mpl_cache), "HOME": str(build_dir)}
    _run([python, "-c", _WARM_MATPLOTLIB], "pre-building matplotlib's font cache", env=env, quiet=True)
    packages = json.loads(_run([python, "-I", "-c", _LIST_PACKAGES], "listing packages", quiet=True))
    _make_world_readable(build_dir)
    stamp = {
        "format": _STAMP_FORMAT,
        "name": name,
        "key": key,
        "python_version": interp.version,
        "base_interpreter": str(interp.path),
        "base_prefix": str(interp.base_prefix),
        "extra_requirements": extra,
        "extra_pinned": pinned_extra,
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


def remove_image(name: str) -> Path:
    """Delete the named image NAME (``image remove``); the default image is rebuilt, not removed."""
    if name == DEFAULT_IMAGE_NAME:
        raise ImageError("the default image is not removed: sessions need it; 'image build --force' rebuilds it")
    image_dir = _named_dir(name)
    find_image(image_dir)  # raises, naming the built ones, when there is no such image
    with _build_lock(image_dir.parent):
        retired = Path(tempfile.mkdtemp(prefix=f".{name}.removed-", dir=image_dir.parent))
        os.rename(image_dir, retired / "image")  # gone from list at once, even if the delete is slow
        shutil.rmtree(retired, ignore_errors=True)
    return image_dir


def lock_requirements(upgrade: bool = False) -> Path:
    """Resolve ``requirements.in`` into ``requirements.lock`` with hashes (``image lock``).

    Run by a developer after editing ``requirements.in`` (the lock is
    committed and ships as package data). Versions already in the lock are
    kept unless ``upgrade``; the lock holds every platform and every Python
    from :data:`LOCK_PYTHON` up.
    """
    argv = [_uv(), "pip", "compile", "--no-config", REQUIREMENTS_IN.name, "-o", LOCK_FILE.name, "--generate-hashes",
            "--universal", "--python-version", LOCK_PYTHON, "--custom-compile-command", "azure-sessions-kernel image lock"]
    if upgrade:
        argv.append("--upgrade")
    print(f"image: resolving {REQUIREMENTS_IN}", file=sys.stderr, flush=True)
    result = subprocess.run(argv, cwd=LOCK_FILE.parent, text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if result.returncode != 0:
        raise ImageError(f"resolving {REQUIREMENTS_IN.name} failed:\n{result.stderr[-4000:]}")
    return LOCK_FILE


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def _describe(info: ImageInfo) -> str:
    lines = [f"name:    {info.name}", f"path:    {info.path}", f"python:  {info.python} ({info.python_version})",
             f"packages ({len(info.packages)}):"]
    lines += [f"  {name}=={version}" for name, version in info.packages]
    return "\n".join(lines)


def _size_of(path: Path) -> int:
    """Bytes on disk under ``path``, each inode once (uv hard-links files from its cache)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, _dirnames, filenames in os.walk(path):
        for name in filenames:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(dirpath, name))
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
    return total


def main(argv: Sequence[str] | None = None) -> int:
    """``azure-sessions-kernel image {build,list,remove,path,info,lock}`` (dispatched from ``cli.py``)."""
    parser = argparse.ArgumentParser(prog="azure-sessions-kernel image", description="Build, list and inspect session images.")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build an image unless it is up to date (default: the default image)")
    build.add_argument("--requirements", metavar="FILE", help="a pip requirements file whose packages are added to the default set; needs --name")
    build.add_argument("--name", help="build the named image NAME (select it with 'serve --image NAME' or the kernel's image option)")
    build.add_argument("--dir", help=f"where to build the default image (default: ${IMAGE_ENV} or a per-user/system location)")
    build.add_argument("--python", help=f"interpreter to build from (default: {DEFAULT_PYTHON})")
    build.add_argument("--force", action="store_true", help="rebuild even if up to date")
    commands.add_parser("list", help="list the built images: name, packages, size, path")
    remove = commands.add_parser("remove", help="delete a named image")
    remove.add_argument("name", help="the image's name")
    lock = commands.add_parser("lock", help="resolve requirements.in into requirements.lock (with hashes); run it after editing requirements.in")
    lock.add_argument("--upgrade", action="store_true", help="move every package to its newest allowed version")
    path_cmd = commands.add_parser("path", help="print an image's directory")
    info_cmd = commands.add_parser("info", help="describe a built image")
    for sub in (path_cmd, info_cmd):
        sub.add_argument("--dir", help="the image directory to use")
        sub.add_argument("--name", help="the named image to use (default: the default image)")
    info_cmd.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(list(argv) if argv is not None else None)

    try:
        if args.command == "build":
            info = build_image(args.dir, python=args.python, force=args.force, name=args.name, requirements=args.requirements)
            print(info.path)
        elif args.command == "list":
            for info in list_images():
                print(f"{info.name:<20} {len(info.packages):>4} packages  {_size_of(info.path) / 2**20:>7.0f} MiB  {info.path}")
        elif args.command == "remove":
            print(f"removed {remove_image(args.name)}")
        elif args.command == "lock":
            print(lock_requirements(upgrade=args.upgrade))
        else:
            directory = Path(args.dir).absolute() if args.dir else resolve_image(args.name)
            if args.command == "path":
                print(directory)
            elif args.json:
                info = find_image(directory)
                print(json.dumps({**dataclasses.asdict(info), "path": str(info.path), "python": str(info.python)}, indent=1))
            else:
                print(_describe(find_image(directory)))
    except ImageError as exc:
        print(f"azure-sessions-kernel image: {exc}", file=sys.stderr)
        return 1
    return 0
