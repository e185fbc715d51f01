"""Attacks on the pool's host-side file API (sandbox.md §4 F3, F7, F8, F9).

Everything runs on the real filesystem: the "session" plants links, FIFOs and
mounts in the root the way code inside the sandbox could, and the tests check
that :class:`SessionFiles` neither reveals nor changes anything outside it.
Each resolution-dependent test runs twice: with ``openat2`` and with the
component-wise ``O_NOFOLLOW`` walk used where ``openat2`` is missing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from azure_sessions_kernel.pool.files import (
    FileNotFound,
    FileOpError,
    InvalidFilePath,
    NotARegularFile,
    SessionFiles,
    StorageFull,
    TooManyEntries,
    UploadTooLarge,
    openat2_available,
)

SECRET = b"HOST-SECRET-7f3a9c"
IS_ROOT = os.geteuid() == 0


@pytest.fixture(params=["openat2", "walk"])
def use_openat2(request: pytest.FixtureRequest) -> bool:
    if request.param == "openat2" and not openat2_available():
        pytest.skip("openat2 is not available on this kernel")
    return request.param == "openat2"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    # Three levels deep, so that a link to ../../.. lands in tmp_path, not in /tmp.
    r = tmp_path / "a" / "b" / "root"
    r.mkdir(parents=True)
    return r


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """Host files the session must never reach."""
    o = tmp_path / "outside"
    (o / "sub").mkdir(parents=True)
    (o / "secret.txt").write_bytes(SECRET)
    (o / "sub" / "inner.txt").write_bytes(SECRET)
    return o


@pytest.fixture
def files(root: Path, use_openat2: bool) -> SessionFiles:
    return SessionFiles(root, use_openat2=use_openat2)


def snapshot(top: Path) -> dict[str, object]:
    """Every entry below ``top`` with its kind and content (links not followed)."""
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            rel = str(p.relative_to(top))
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                out[rel] = ("file", p.read_bytes(), st.st_nlink)
            else:
                out[rel] = ("other", stat.S_IFMT(st.st_mode))
    return out


def _hostname() -> bytes:
    return Path("/etc/hostname").read_bytes()


# ---------------------------------------------------------------- basics


def test_round_trip(files: SessionFiles, root: Path) -> None:
    info = files.write_sync("docs", "a.txt", b"hello", parents=True)
    assert (info.name, info.size, info.is_directory) == ("a.txt", 5, False)
    assert info.content_type == "text/plain; charset=utf-8"
    assert (root / "docs" / "a.txt").read_bytes() == b"hello"
    assert files.stat("/mnt/data/docs", "a.txt").size == 5
    assert files.stat((), "docs").is_directory
    assert files.read_bytes(("docs",), "a.txt") == b"hello"
    with files.open_read("docs", "a.txt") as f:
        assert f.read() == b"hello"
    assert [f.path for f in files.list(recursive=True)] == ["docs", "docs/a.txt"]
    assert [f.name for f in files.list("docs")] == ["a.txt"]
    files.write_sync("docs", "a.txt", [b"bye", b"!"])
    assert files.read_bytes("docs", "a.txt") == b"bye!"
    files.delete("docs", "a.txt")
    assert files.list("docs") == []


def test_missing_things_are_404_and_never_name_the_host_root(files: SessionFiles, root: Path) -> None:
    (root / "plain").write_bytes(b"x")
    for call in (
        lambda: files.stat((), "nope"),
        lambda: files.read_bytes("nope", "x"),
        lambda: files.list("nope"),
        lambda: files.list(("plain",)),  # a file used as a folder
        lambda: files.write_sync("nope", "x", b"1"),  # no parents=True
        lambda: files.delete((), "nope"),
    ):
        with pytest.raises(FileNotFound) as ei:
            call()
        assert ei.value.status == 404 and ei.value.code == "FileNotFound"
        assert str(root) not in ei.value.message and "/mnt/data" in ei.value.message
    assert sorted(os.listdir(root)) == ["plain"]


# ---------------------------------------------------------------- F7: symlinks

LINK_TARGETS = ["/etc/hostname", "/root", "/proc/1/root", "../../..", "OUTSIDE/secret.txt", "OUTSIDE/sub"]


def _target(t: str, outside: Path) -> str:
    return t.replace("OUTSIDE", str(outside))


@pytest.mark.parametrize("target", LINK_TARGETS)
def test_symlink_as_file_is_never_followed(files: SessionFiles, root: Path, outside: Path, target: str) -> None:
    before = snapshot(outside)
    hostname = _hostname()
    os.symlink(_target(target, outside), root / "x")

    entry = files.stat((), "x")
    assert (entry.size, entry.content_type, entry.is_directory) == (None, None, False)
    [listed] = files.list()
    assert listed == entry

    for read in (lambda: files.read_bytes((), "x"), lambda: files.open_read((), "x")):
        with pytest.raises(NotARegularFile, match="symbolic link") as ei:
            read()
        assert ei.value.status == 400
        assert SECRET.decode() not in ei.value.message and str(outside) not in ei.value.message

    files.delete((), "x")  # removes the link, not its target
    assert not os.path.lexists(root / "x")
    assert snapshot(outside) == before and _hostname() == hostname


@pytest.mark.parametrize("target", LINK_TARGETS)
@pytest.mark.parametrize("depth", [(), ("real",)], ids=["top", "nested"])
def test_symlink_as_folder_is_refused(
    files: SessionFiles, root: Path, outside: Path, tmp_path: Path, target: str, depth: tuple[str, ...]
) -> None:
    (root / Path(*depth)).mkdir(exist_ok=True)
    os.symlink(_target(target, outside), root / Path(*depth) / "d")
    folder = (*depth, "d")
    before, around = snapshot(outside), set(os.listdir(tmp_path))
    hostname = _hostname()

    for call in (
        lambda: files.list(folder),
        lambda: files.list(folder, recursive=True),
        lambda: files.stat(folder, "hostname"),
        lambda: files.stat(folder, "secret.txt"),
        lambda: files.read_bytes(folder, "hostname"),
        lambda: files.read_bytes(folder, "secret.txt"),
        lambda: files.read_bytes((*folder, "etc"), "hostname"),
        lambda: files.write_sync(folder, "planted", b"pwned"),
        lambda: files.write_sync((*folder, "new"), "planted", b"pwned", parents=True),
        lambda: asyncio.run(files.write(folder, "planted", _agen([b"pwned"]))),
        lambda: files.delete(folder, "secret.txt"),
        lambda: files.delete(folder, "hostname"),
    ):
        with pytest.raises(InvalidFilePath, match="symbolic link") as ei:
            call()
        assert SECRET.decode() not in ei.value.message

    # The link itself shows up as an entry; nothing behind it does.
    names = {f.path for f in files.list(recursive=True)}
    assert names == {"/".join(folder[: i + 1]) for i in range(len(folder))}
    assert snapshot(outside) == before and _hostname() == hostname
    assert set(os.listdir(tmp_path)) == around


@pytest.mark.parametrize("target", ["OUTSIDE/secret.txt", "/etc/hostname"])
def test_upload_over_a_symlink_replaces_the_link(files: SessionFiles, root: Path, outside: Path, target: str) -> None:
    before, hostname = snapshot(outside), _hostname()
    os.symlink(_target(target, outside), root / "x")
    files.write_sync((), "x", b"mine")
    assert not (root / "x").is_symlink() and (root / "x").read_bytes() == b"mine"
    assert snapshot(outside) == before and _hostname() == hostname


def test_magic_link_to_proc_fd_is_refused(files: SessionFiles, root: Path, outside: Path) -> None:
    with open(outside / "secret.txt", "rb") as held:
        os.symlink(f"/proc/{os.getpid()}/fd/{held.fileno()}", root / "m")
        os.symlink(f"/proc/{os.getpid()}/fd", root / "fds")
        with pytest.raises(NotARegularFile):
            files.read_bytes((), "m")
        with pytest.raises(InvalidFilePath):
            files.read_bytes(("fds",), str(held.fileno()))


# ---------------------------------------------------------------- F8: names


BAD_NAMES = ["../x", "/etc/x", "a/../../b", "x\0y", "y" * 300, "..", ".", ""]
BAD_FOLDERS = ["..", "/etc", "a/../../b", "/mnt/data/../x", "x\0y", "/mnt/database", "z" * 300]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_bad_names_are_refused(files: SessionFiles, root: Path, tmp_path: Path, name: str) -> None:
    around = snapshot(tmp_path)
    for call in (
        lambda: files.write_sync((), name, b"x", parents=True),
        lambda: files.stat((), name),
        lambda: files.read_bytes((), name),
        lambda: files.delete((), name),
    ):
        with pytest.raises(InvalidFilePath) as ei:
            call()
        assert ei.value.status == 400
    assert snapshot(tmp_path) == around


@pytest.mark.parametrize("folder", BAD_FOLDERS + [("..",), ("a/b",), ("a", "\0")], ids=repr)
def test_bad_folders_are_refused(files: SessionFiles, root: Path, tmp_path: Path, folder: object) -> None:
    around = snapshot(tmp_path)
    for call in (
        lambda: files.write_sync(folder, "f", b"x", parents=True),  # type: ignore[arg-type]
        lambda: files.list(folder, recursive=True),  # type: ignore[arg-type]
        lambda: files.read_bytes(folder, "f"),  # type: ignore[arg-type]
    ):
        with pytest.raises(InvalidFilePath):
            call()
    assert snapshot(tmp_path) == around


def test_path_longer_than_path_max_is_refused(files: SessionFiles, root: Path) -> None:
    deep = tuple(["d" * 200] * 25)  # each component is fine, the whole is over PATH_MAX
    with pytest.raises(InvalidFilePath, match="too long"):
        files.write_sync(deep, "f", b"x", parents=True)
    assert os.listdir(root) == []


# ---------------------------------------------------------------- F9: hard links


def test_overwriting_a_hard_linked_file_breaks_the_link(files: SessionFiles, root: Path, outside: Path) -> None:
    # Same filesystem here (tmp_path); in the sandbox /mnt/data is its own
    # mount, so link() from outside fails with EXDEV. Policy: a multi-link
    # file reads like any file, and writes never go into the shared inode.
    os.link(outside / "secret.txt", root / "h.txt")
    assert files.stat((), "h.txt").size == len(SECRET)
    assert files.read_bytes((), "h.txt") == SECRET
    files.write_sync((), "h.txt", b"replaced")
    assert (root / "h.txt").read_bytes() == b"replaced"
    assert (outside / "secret.txt").read_bytes() == SECRET
    assert (outside / "secret.txt").stat().st_nlink == 1
    files.delete((), "h.txt")
    assert (outside / "secret.txt").read_bytes() == SECRET


# ---------------------------------------------------------------- special files


def _make_fifo(p: Path) -> None:
    os.mkfifo(p)


def _make_socket(p: Path) -> None:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(p))
    s.close()


@pytest.mark.parametrize("make", [_make_fifo, _make_socket], ids=["fifo", "socket"])
def test_special_files_are_refused_without_hanging(files: SessionFiles, root: Path, make) -> None:
    make(root / "p")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(files.read_bytes, (), "p")
        try:
            with pytest.raises(NotARegularFile, match="FIFO|socket"):
                future.result(timeout=5)
        finally:
            if not future.done() and stat.S_ISFIFO((root / "p").lstat().st_mode):
                os.close(os.open(root / "p", os.O_WRONLY | os.O_NONBLOCK))  # unblock a hung reader
    [entry] = files.list()
    assert (entry.name, entry.size, entry.content_type) == ("p", None, None)
    assert files.stat((), "p").size is None
    files.write_sync((), "p", b"now a file")  # replaces the name, never opens the FIFO
    assert files.read_bytes((), "p") == b"now a file"
    make(root / "q")
    files.delete((), "q")
    assert not os.path.lexists(root / "q")


def test_fifo_swapped_in_during_reads_never_hangs(files: SessionFiles, root: Path) -> None:
    # Widens the window between the lstat check and the open: the final open
    # itself may meet the FIFO, so it must not block (O_NONBLOCK) and must be
    # vetted by fstat.
    (root / "p.reg").write_bytes(b"regular")
    os.mkfifo(root / "p.fifo")
    os.rename(root / "p.reg", root / "p")
    stop = threading.Event()
    outcomes: dict[str, int] = {}

    def flip() -> None:
        while not stop.is_set():
            os.rename(root / "p", root / "p.reg")
            os.rename(root / "p.fifo", root / "p")
            os.rename(root / "p", root / "p.fifo")
            os.rename(root / "p.reg", root / "p")

    def read_loop() -> None:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            try:
                assert files.read_bytes((), "p") == b"regular"
                outcomes["ok"] = outcomes.get("ok", 0) + 1
            except (NotARegularFile, FileNotFound) as e:
                outcomes[type(e).__name__] = outcomes.get(type(e).__name__, 0) + 1

    flipper = threading.Thread(target=flip)
    flipper.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            future = pool.submit(read_loop)
            try:
                future.result(timeout=20)
            finally:
                stop.set()
                while not future.done():  # a hung open(): release it so the test can fail
                    for name in ("p", "p.fifo"):
                        with contextlib.suppress(OSError):
                            os.close(os.open(root / name, os.O_WRONLY | os.O_NONBLOCK))
                    time.sleep(0.05)
    finally:
        stop.set()
        flipper.join()
    assert outcomes.get("ok") and outcomes.get("NotARegularFile")


# ---------------------------------------------------------------- writes


def test_upload_limit_is_enforced_and_leaves_nothing(root: Path, use_openat2: bool) -> None:
    files = SessionFiles(root, max_upload_bytes=1000, use_openat2=use_openat2)
    files.write_sync((), "t", b"old")
    files.write_sync((), "exact", b"x" * 1000)
    with pytest.raises(UploadTooLarge) as ei:
        files.write_sync((), "t", [b"x" * 600, b"x" * 401])
    assert ei.value.status == 413
    assert sorted(os.listdir(root)) == ["exact", "t"]  # no temp file left
    assert (root / "t").read_bytes() == b"old"


async def _agen(chunks):
    for c in chunks:
        yield c


def test_async_upload_streams_in_batches(root: Path, use_openat2: bool) -> None:
    files = SessionFiles(root, use_openat2=use_openat2)
    chunks = [bytes([i]) * 100_000 for i in range(30)]  # 3 MB: several thread hops
    info = asyncio.run(files.write(("up",), "big.bin", _agen(chunks), parents=True))
    assert info.size == 3_000_000 and info.content_type == "application/octet-stream"
    assert (root / "up" / "big.bin").read_bytes() == b"".join(chunks)
    assert os.listdir(root / "up") == ["big.bin"]


def test_async_upload_stops_reading_at_the_limit(root: Path) -> None:
    files = SessionFiles(root, max_upload_bytes=1 << 20)
    pulled = 0

    async def endless():
        nonlocal pulled
        while True:  # would exhaust memory if the upload were buffered first
            pulled += 1
            yield b"z" * 65536

    with pytest.raises(UploadTooLarge):
        asyncio.run(files.write((), "f", endless()))
    assert pulled == 17  # 16 chunks fill the limit exactly; the 17th is refused
    assert os.listdir(root) == []


def test_cancelled_upload_leaves_no_temp_file(root: Path) -> None:
    files = SessionFiles(root)
    started = asyncio.Event()

    async def stalls():
        yield b"a" * (2 << 20)  # past one batch, so bytes reached the disk
        started.set()
        await asyncio.sleep(3600)
        yield b"never"

    async def main() -> None:
        task = asyncio.create_task(files.write((), "f", stalls()))
        await asyncio.wait_for(started.wait(), 5)
        await asyncio.sleep(0.2)
        [tmp] = os.listdir(root)  # streamed to disk mid-upload, not held in memory
        assert (root / tmp).stat().st_size == 2 << 20
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert os.listdir(root) == []


def test_upload_never_replaces_a_directory(files: SessionFiles, root: Path) -> None:
    (root / "empty").mkdir()
    (root / "full").mkdir()
    (root / "full" / "keep").write_bytes(b"k")
    consumed = []

    def chunks():
        consumed.append(1)
        yield b"x"

    for name in ("empty", "full"):
        with pytest.raises(NotARegularFile, match="directory"):
            files.write_sync((), name, chunks())
    assert consumed == []  # refused before reading the upload
    assert sorted(os.listdir(root)) == ["empty", "full"]
    assert (root / "full" / "keep").read_bytes() == b"k"


def test_directory_swapped_in_before_rename_is_not_replaced(root: Path) -> None:
    files = SessionFiles(root)
    upload = files._begin_upload((), "t", parents=False)
    try:
        upload.write(b"data")
        (root / "t").mkdir()  # the session wins the race after the early check
        with pytest.raises(NotARegularFile):
            upload.commit()
    finally:
        upload.close()
    assert os.listdir(root) == ["t"] and (root / "t").is_dir()


def test_delete_refuses_directories(files: SessionFiles, root: Path) -> None:
    (root / "d").mkdir()
    with pytest.raises(NotARegularFile, match="directory"):
        files.delete((), "d")
    assert (root / "d").is_dir()


@pytest.mark.skipif(not IS_ROOT, reason="mounting a tmpfs needs root")
def test_disk_full_is_507_and_leaves_no_temp_file(tmp_path: Path, use_openat2: bool) -> None:
    small = tmp_path / "small"
    small.mkdir()
    with _tmpfs(small, "size=1m"):
        files = SessionFiles(small, use_openat2=use_openat2)
        files.write_sync((), "keep", b"k")
        with pytest.raises(StorageFull) as ei:
            files.write_sync((), "big", [b"x" * 65536] * 32)
        assert ei.value.status == 507
        assert os.listdir(small) == ["keep"]
        with pytest.raises(StorageFull):
            asyncio.run(files.write((), "big", _agen([b"x" * 65536] * 32)))
        assert os.listdir(small) == ["keep"]


@contextlib.contextmanager
def _tmpfs(where: Path, options: str):
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    if r.returncode:
        pytest.skip(f"cannot mount tmpfs: {r.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


@pytest.mark.skipif(not IS_ROOT, reason="mounting a tmpfs needs root")
def test_mount_points_inside_the_root_are_not_crossed(files: SessionFiles, root: Path) -> None:
    (root / "m").mkdir()
    with _tmpfs(root / "m", "size=1m"):
        (root / "m" / "inner.txt").write_bytes(SECRET)
        for call in (
            lambda: files.list("m"),
            lambda: files.read_bytes("m", "inner.txt"),
            lambda: files.write_sync("m", "x", b"x"),
            lambda: files.delete("m", "inner.txt"),
        ):
            with pytest.raises(InvalidFilePath, match="mount point"):
                call()
        assert [f.path for f in files.list(recursive=True)] == ["m"]
        assert os.listdir(root / "m") == ["inner.txt"]


@pytest.mark.skipif(not IS_ROOT, reason="chown needs root")
def test_uploads_and_created_folders_belong_to_the_owner(root: Path, use_openat2: bool) -> None:
    owner = (4242, 4343)
    files = SessionFiles(root, owner=owner, use_openat2=use_openat2)
    (root / "existing").mkdir(mode=0o700)
    files.write_sync(("existing", "new", "deep"), "f.txt", b"x", parents=True)
    asyncio.run(files.write(("existing", "new"), "g.txt", _agen([b"y"])))

    def owned(p: Path) -> tuple[int, int, int]:
        st = p.lstat()
        return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)

    assert owned(root / "existing") == (0, 0, 0o700)  # only what we create is handed over
    assert owned(root / "existing" / "new") == (*owner, 0o755)
    assert owned(root / "existing" / "new" / "deep") == (*owner, 0o755)
    assert owned(root / "existing" / "new" / "deep" / "f.txt") == (*owner, 0o644)
    assert owned(root / "existing" / "new" / "g.txt") == (*owner, 0o644)


# ---------------------------------------------------------------- listing


def test_listing_is_bounded(root: Path) -> None:
    files = SessionFiles(root, max_list_entries=50)
    for i in range(50):
        (root / f"f{i:02}").touch()
    assert len(files.list()) == 50
    (root / "sub").mkdir()
    with pytest.raises(TooManyEntries) as ei:
        files.list()
    assert ei.value.status == 400
    os.rename(root / "f00", root / "sub" / "f00")
    assert len(files.list()) == 50
    with pytest.raises(TooManyEntries):
        files.list(recursive=True)


def test_recursive_listing_fills_directory_and_skips_links(files: SessionFiles, root: Path, outside: Path) -> None:
    (root / "l1" / "l2").mkdir(parents=True)
    (root / "l1" / "l2" / "t.yaml").write_bytes(b"a: 1")
    os.symlink(outside, root / "l1" / "out")
    deep = root.joinpath(*["d"] * 120)  # deep trees list without holding an fd per level
    deep.mkdir(parents=True)
    (deep / "bottom").touch()
    listing = files.list(recursive=True)
    paths = [f.path for f in listing]
    assert paths == sorted(paths, key=lambda p: (p.rpartition("/")[0], p.rpartition("/")[2]))
    by_path = {f.path: f for f in listing}
    assert by_path["l1/l2/t.yaml"].directory == "l1/l2" and by_path["l1/l2/t.yaml"].size == 4
    assert by_path["l1"].is_directory and not by_path["l1/out"].is_directory
    assert "/".join(["d"] * 120 + ["bottom"]) in by_path
    assert not any("secret" in p or "inner" in p for p in paths)
    assert [f.name for f in files.list("l1/l2")] == ["t.yaml"]
    assert files.list("l1/l2")[0].directory == ""


# ---------------------------------------------------------------- races


def test_directory_symlink_swap_race_never_escapes(root: Path, outside: Path, use_openat2: bool) -> None:
    """A session flips ``d`` between a real folder and a link to the host while
    the API reads, writes, lists and deletes under it."""
    files = SessionFiles(root, use_openat2=use_openat2)
    (root / "d.real" / "sub").mkdir(parents=True)
    (root / "d.real" / "secret.txt").write_bytes(b"inside")  # same name as the host decoy
    (root / "d.real" / "sub" / "own.txt").write_bytes(b"inside")
    os.symlink(outside, root / "d.link")
    os.rename(root / "d.real", root / "d")
    before = snapshot(outside)
    stop = threading.Event()
    flip_errors: list[BaseException] = []

    def flip() -> None:
        try:
            while not stop.is_set():
                os.rename(root / "d", root / "d.real")
                os.rename(root / "d.link", root / "d")
                os.rename(root / "d", root / "d.link")
                os.rename(root / "d.real", root / "d")
        except BaseException as e:  # surfaces below instead of dying silently
            flip_errors.append(e)

    flipper = threading.Thread(target=flip)
    flipper.start()
    ok = refused = 0
    try:
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            for op in (
                lambda: files.read_bytes("d", "secret.txt"),
                lambda: files.read_bytes(("d", "sub"), "own.txt"),
                lambda: files.read_bytes(("d", "sub"), "inner.txt"),  # exists only outside
                lambda: files.write_sync("d", "w", b"w"),
                lambda: files.write_sync(("d", "sub"), "w", b"w"),
                lambda: files.list("d", recursive=True),
                lambda: files.stat("d", "secret.txt"),
                lambda: files.delete(("d", "sub"), "inner.txt"),  # exists only outside
            ):
                try:
                    result = op()
                except FileOpError as e:
                    assert SECRET.decode() not in e.message
                    refused += 1
                    continue
                ok += 1
                if isinstance(result, bytes):
                    assert result == b"inside"
                elif isinstance(result, list):
                    assert "sub/inner.txt" not in {f.path for f in result}
                elif result is not None:
                    assert result.size == len(b"inside") or result.name == "w"
    finally:
        stop.set()
        flipper.join()
    assert not flip_errors
    assert ok and refused  # both states of the race were hit
    assert snapshot(outside) == before
