"""The kernel's magics on a plain local IPython shell, against an in-memory pool.

Covers argument parsing (``magic_arguments``), how cells are split between
this machine and the session, and what %upload / %download / %files /
%timeout / %session do, including every refusal that must happen before a
byte moves.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import types
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from traitlets import Float, HasTraits, validate

from azure_sessions_kernel.client import MAX_UPLOAD_BYTES, RemoteFile
from azure_sessions_kernel.kernel._magics import (
    PROGRESS_MIN_BYTES,
    CellPlan,
    SessionMagicError,
    SessionMagics,
    magic_errors,
    needs_connection,
    parse_argstring,
    plan_cell,
    show_magic_error,
)
from azure_sessions_kernel.kernel.kernel import AzureSessionsKernel
from azure_sessions_kernel.kernel._transfers import TransferError, plan_download, plan_upload, remote_relative

# -- cells ----------------------------------------------------------------------------------


def test_a_cell_of_our_magics_runs_locally():
    code = "%upload data.csv\n# then\n%files"
    assert plan_cell(code) == CellPlan(code, "", "")


def test_plain_code_and_other_magics_go_to_the_session_untouched():
    for code in ("x = 1\nx", "%timeit x = 1", "%%time\nx = 1", "!ls", "# just a comment\ny = 2", "%uploader"):
        assert plan_cell(code) == CellPlan("", code, "")


def test_leading_and_trailing_magics_wrap_the_code_and_keep_its_line_numbers():
    plan = plan_cell("%upload data.csv\n\nimport pandas as pd\ndf = pd.read_csv('data.csv')\n%download out.png")
    assert plan.before == "%upload data.csv"
    assert plan.after == "%download out.png"
    assert plan.remote.split("\n") == ["", "", "import pandas as pd", "df = pd.read_csv('data.csv')"]


def test_our_magic_in_the_middle_of_code_is_refused():
    with pytest.raises(SessionMagicError, match="%download can only be at the start or the end"):
        plan_cell("x = 1\n%download a.png\ny = 2")
    with pytest.raises(SessionMagicError, match="%upload"):
        plan_cell("for f in files:\n    %upload f\nprint(1)")


def test_help_and_timeout_need_no_connection():
    assert not needs_connection("%timeout 5\n%upload?")
    assert needs_connection("%timeout 5\n%files")


# -- arguments --------------------------------------------------------------------------------


def test_argument_parsing():
    up = parse_argstring(SessionMagics.upload, "'my data.csv' inputs/ -q")
    assert (up.local, up.remote, up.quiet) == ("my data.csv", "inputs/", True)
    down = parse_argstring(SessionMagics.download, "--force chart.png out/")
    assert (down.remote, down.local, down.force) == ("chart.png", "out/", True)
    assert parse_argstring(SessionMagics.files, "-r sub").recursive
    use = parse_argstring(SessionMagics.session, "use analysis")
    assert (use.action, use.name) == ("use", "analysis")
    assert parse_argstring(SessionMagics.session, "").action is None
    assert parse_argstring(SessionMagics.timeout, "2.5").seconds == 2.5
    assert parse_argstring(SessionMagics.timeout, "off").seconds == "off"
    with pytest.raises(UsageError):
        parse_argstring(SessionMagics.session, "explode")
    with pytest.raises(UsageError):
        parse_argstring(SessionMagics.timeout, "soon")
    with pytest.raises(UsageError):
        parse_argstring(SessionMagics.upload, "'unterminated")


def test_help_comes_from_the_arguments():
    doc = SessionMagics.upload.__doc__
    assert "%upload [-q] local [remote]" in doc and "128 MiB" in doc


# -- a shell with the magics, against an in-memory pool --------------------------------------------


class MemoryPool:
    """The part of SessionsClient the magics use, keeping files in a dict."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.deleted: list[str] = []

    def upload(self, identifier, data, name, *, path=None, progress=None):
        content = Path(data).read_bytes()
        self.files["/".join(p for p in (path, name) if p)] = content
        progress(len(content))

    def list_files(self, identifier, *, path=None):
        prefix = f"{path}/" if path else ""
        entries = {}
        for key, content in self.files.items():
            if key.startswith(prefix):
                head, _, rest = key[len(prefix) :].partition("/")
                when = dt.datetime(2025, 1, 2, 3, 4, tzinfo=dt.timezone.utc)
                entries[head] = RemoteFile(head, None, when, is_directory=True) if rest else RemoteFile(head, len(content), when)
        if path and not entries:
            raise AssertionError(f"listing a folder that does not exist: {path}")
        return list(entries.values())

    def download_to(self, identifier, name, fileobj, *, path=None, progress=None):
        content = self.files["/".join(p for p in (path, name) if p)]
        fileobj.write(content)
        progress(len(content))
        return len(content)

    def delete_session(self, identifier):
        self.deleted.append(identifier)


class KernelStub(HasTraits):
    """The kernel's side of the magics, with the kernel's own timeout trait and its validation."""

    execution_timeout = Float(None, allow_none=True)
    _check_timeout = validate("execution_timeout")(AzureSessionsKernel._check_timeout.func)

    def __init__(self, remote: Any, session_name: str) -> None:
        super().__init__()
        self.remote, self.session_name = remote, session_name


@pytest.fixture
def pool():
    return MemoryPool()


@pytest.fixture
def shell(pool, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shell = InteractiveShell.instance()
    remote = types.SimpleNamespace(identifier="nb-test", sync_client=lambda: pool)
    kernel = KernelStub(remote=remote, session_name="")
    shell.register_magics(SessionMagics(shell, kernel))
    shell.set_custom_exc(magic_errors() + (UsageError,), show_magic_error)
    shell.kernel_stub = kernel
    yield shell
    shell.set_custom_exc((), None)


def run(shell, line, capsys):
    result = shell.run_cell(line)
    return result, capsys.readouterr().out


def test_upload_files_globs_and_directories(shell, pool, tmp_path, capsys):
    (tmp_path / "a.csv").write_text("1,2\n")
    (tmp_path / "b.csv").write_text("3,4\n")
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "top.txt").write_text("top")
    (tmp_path / "tree" / "sub" / "deep.txt").write_text("deep")
    result, out = run(shell, "%upload a.csv", capsys)
    assert result.success and pool.files == {"a.csv": b"1,2\n"}
    assert "Uploaded a.csv -> /mnt/data/a.csv (4 B)" in out
    run(shell, "%upload '*.csv' inputs/", capsys)
    run(shell, "%upload a.csv renamed.csv", capsys)
    run(shell, "%upload tree /mnt/data/backup/", capsys)
    assert set(pool.files) == {
        "a.csv",
        "inputs/a.csv",
        "inputs/b.csv",
        "renamed.csv",
        "backup/tree/top.txt",
        "backup/tree/sub/deep.txt",
    }


def test_download_never_overwrites_without_force(shell, pool, tmp_path, capsys):
    pool.files.update({"chart.png": b"\x89PNG new", "out/x.txt": b"x", "out/deep/y.txt": b"y"})
    (tmp_path / "chart.png").write_bytes(b"old")
    result, _ = run(shell, "%download chart.png", capsys)
    assert not result.success and isinstance(result.error_in_exec, TransferError)
    assert "already exists, so nothing was downloaded; add --force" in str(result.error_in_exec)
    assert (tmp_path / "chart.png").read_bytes() == b"old"
    result, out = run(shell, "%download --force /mnt/data/chart.png", capsys)
    assert result.success and (tmp_path / "chart.png").read_bytes() == b"\x89PNG new"
    run(shell, "%download out local/", capsys)
    assert (tmp_path / "local/out/x.txt").read_bytes() == b"x" and (tmp_path / "local/out/deep/y.txt").read_bytes() == b"y"
    run(shell, "%download 'out/*.txt' copy.txt", capsys)
    assert (tmp_path / "copy.txt").read_bytes() == b"x"
    assert not list(tmp_path.rglob(".*part*"))  # no temporary files left behind


def test_magic_errors_are_one_sentence(shell, capsys):
    shown = []
    shell._showtraceback = lambda etype, value, stb: shown.append(stb)
    try:
        result, _ = run(shell, "%upload missing.csv", capsys)
        assert not result.success
        assert shown[-1] == ["TransferError: There is no local file or directory 'missing.csv'."]
        result, _ = run(shell, "%download nothing.png", capsys)
        assert shown[-1] == ["TransferError: There is no /mnt/data/nothing.png in the session (see %files)."]
        result, _ = run(shell, "%timeout -5", capsys)
        assert not result.success and "more than 0" in shown[-1][0] and "'off'" in shown[-1][0]
        result, _ = run(shell, "%session use 'bad name!'", capsys)
        assert "is not a session name" in shown[-1][0]
        result, _ = run(shell, "%upload", capsys)
        assert not result.success and shown[-1][0].startswith("UsageError:")
    finally:
        del shell._showtraceback


def test_large_transfers_show_a_progress_bar(shell, pool, tmp_path, capsys):
    (tmp_path / "big.bin").write_bytes(b"x" * (PROGRESS_MIN_BYTES + 1))
    (tmp_path / "small.bin").write_bytes(b"x")
    shell.run_cell("%upload small.bin")
    assert "Uploading" not in capsys.readouterr().err
    result = shell.run_cell("%upload big.bin")
    assert result.success and "Uploading: 100%" in capsys.readouterr().err
    shell.run_cell("%upload big.bin quiet.bin -q")
    assert "Uploading" not in capsys.readouterr().err
    result = shell.run_cell("%download big.bin copy.bin")
    assert result.success and "Downloading: 100%" in capsys.readouterr().err


def test_uploads_over_the_azure_limit_are_refused_before_sending(tmp_path):
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(MAX_UPLOAD_BYTES + 1)  # sparse: no disk space used
    (tmp_path / "small.txt").write_text("s")
    with pytest.raises(TransferError, match=r"big.bin is 128.0 MiB.*HTTP 413.*nothing was uploaded"):
        plan_upload("*", "", tmp_path)


def test_files_shows_a_text_and_html_table(shell, pool, capsys):
    pool.files.update({"report.csv": b"x" * 2048, "charts/a.png": b"png"})
    published = []
    shell.display_pub.publish = lambda data, metadata=None, **kw: published.append(data)
    try:
        result, _ = run(shell, "%files", capsys)
        assert result.success
        bundle = published[-1]
        assert set(bundle) == {"text/plain", "text/html"}
        assert "charts/" in bundle["text/plain"] and "2.0 KiB" in bundle["text/plain"]
        assert "<table>" in bundle["text/html"] and "report.csv" in bundle["text/html"]
        run(shell, "%files -r", capsys)
        assert "charts/a.png" in published[-1]["text/plain"]
    finally:
        del shell.display_pub.publish


def test_timeout_sets_the_kernel_option(shell, capsys):
    result, out = run(shell, "%timeout 2.5", capsys)
    assert result.success and shell.kernel_stub.execution_timeout == 2.5
    assert "2.5 s" in out
    result, out = run(shell, "%timeout 600", capsys)  # beyond Azure's 220 s per call: cells are not bound by it
    assert result.success and shell.kernel_stub.execution_timeout == 600
    result, out = run(shell, "%timeout off", capsys)
    assert result.success and shell.kernel_stub.execution_timeout is None and "no timeout" in out


def test_remote_paths_stay_in_the_data_folder():
    assert remote_relative("/mnt/data/a/b/") == "a/b"
    assert remote_relative("./a//b") == "a/b"
    assert remote_relative("/mnt/data") == ""
    for bad in ("/etc/passwd", "../x", "a/../../b"):
        with pytest.raises(TransferError):
            remote_relative(bad)


def test_download_plan_renames_a_single_file_only(tmp_path):
    listing = {None: [RemoteFile("a.txt", 1), RemoteFile("b.txt", 1)]}
    single = plan_download("a.txt", "renamed.txt", tmp_path, listing.get)
    assert [t.local for t in single] == [tmp_path / "renamed.txt"]
    (tmp_path / "into").mkdir()
    into_dir = plan_download("a.txt", "into", tmp_path, listing.get)
    assert [t.local for t in into_dir] == [tmp_path / "into" / "a.txt"]
    many = plan_download("*.txt", "folder", tmp_path, listing.get)
    assert [t.local for t in many] == [tmp_path / "folder" / "a.txt", tmp_path / "folder" / "b.txt"]
    assert os.path.basename(many[0].remote) == "a.txt"
