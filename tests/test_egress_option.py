"""The kernel's egress option: from `install --egress` and the kernel's trait to the shared pool it joins.

Fast: no pool is started. The pool's side of ``serve --egress`` (the proxy,
what sessions can reach) is tested with the pool.
"""

from __future__ import annotations

import json
import os
import re
import types

import pytest
from IPython.core.interactiveshell import InteractiveShell
from traitlets import HasTraits, List, Unicode, validate

from azure_sessions_kernel._runtime import DEFAULT_IMAGE, LEASE_DIR, LOG_FILE, POOL_FILE, pool_files
from azure_sessions_kernel.client import ConfigurationError
from azure_sessions_kernel.client import _local
from azure_sessions_kernel.client._local import acquire_local_pool_sync, requested_egress, requested_image
from azure_sessions_kernel.kernel._magics import SessionMagics
from azure_sessions_kernel.kernel._remote import Backend
from azure_sessions_kernel.kernel.install import install_main
from azure_sessions_kernel.kernel.kernel import AzureSessionsKernel

# -- which pool: serve options ------------------------------------------------------------------


def test_the_last_egress_option_counts_normalised_as_serve_reads_it() -> None:
    assert requested_egress([]) == requested_egress(["--egress", "none"]) == requested_egress(["--egress="]) == ()
    assert requested_egress(["--egress", "github", "--cooldown", "600", "--egress=PyPI, example.com ,pypi"]) == ("example.com", "pypi")
    assert requested_egress(["--egress=pypi", "--egress", "github"]) == ("github",)
    assert requested_image(["--image", "geo", "--egress", "pypi"]) == "geo"  # the options do not read each other


def test_a_bad_egress_list_is_a_configuration_error_naming_the_entry() -> None:
    with pytest.raises(ConfigurationError, match=r"'10\.0\.0\.1' is an IP address"):
        requested_egress(["--egress", "pypi,10.0.0.1"])
    with pytest.raises(ConfigurationError, match="'none' cannot be combined"):
        requested_egress(["--egress=none,pypi"])


def test_each_image_and_egress_list_has_a_shared_pool_of_its_own() -> None:
    plain, pypi, geo_pypi = pool_files(), pool_files(DEFAULT_IMAGE, ("pypi",)), pool_files("geo", ("pypi",))
    assert plain == pool_files(DEFAULT_IMAGE, ()) == (POOL_FILE, LEASE_DIR, LOG_FILE)
    for i in range(3):  # pool file, lease directory and log all differ
        assert len({plain[i], pypi[i], geo_pypi[i], pool_files("geo")[i]}) == 4
    assert pool_files(DEFAULT_IMAGE, requested_egress(["--egress", "PyPI,pypi"])) == pypi


# -- joining a running pool -----------------------------------------------------------------------


@pytest.fixture
def runtime(tmp_path, monkeypatch):
    """A runtime directory of this test's own, whose pools all answer their health check."""
    monkeypatch.setenv("AZURE_SESSIONS_KERNEL_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setattr(_local, "_healthy", lambda info: True)
    return tmp_path


def _fake_pool(runtime, egress_files: tuple[str, ...], **recorded) -> None:
    """A pool file, under the name of the pool for ``egress_files``, for a "pool" that is this (live) process."""
    info = {"endpoint": "https://127.0.0.1:9", "token": "t", "pid": os.getpid(), "strict": False, "isolation": {}, **recorded}
    (runtime / pool_files(DEFAULT_IMAGE, egress_files)[0]).write_text(json.dumps(info))


def test_a_pool_with_other_egress_than_asked_is_refused_and_not_leased(runtime) -> None:
    _fake_pool(runtime, ("pypi",), image=DEFAULT_IMAGE, egress=["github"])
    with pytest.raises(ConfigurationError, match=r"has egress github, not pypi as asked; stop it \(pid \d+\)"):
        acquire_local_pool_sync(["--egress", "pypi"])
    assert not any((runtime / pool_files(DEFAULT_IMAGE, ("pypi",))[1]).iterdir())
    # More network than asked is refused as well.
    _fake_pool(runtime, (), egress=["pypi"])
    with pytest.raises(ConfigurationError, match=r"has egress pypi, not none \(no network\) as asked"):
        acquire_local_pool_sync([])
    assert not any((runtime / LEASE_DIR).iterdir())


def test_a_pool_with_the_asked_egress_is_joined(runtime) -> None:
    _fake_pool(runtime, ("github", "pypi"), image=DEFAULT_IMAGE, egress=["github", "pypi"])
    with acquire_local_pool_sync(["--egress", "pypi,GitHub"]) as lease:
        assert (lease.egress, lease.started_here) == (("github", "pypi"), False)
        assert len(list((runtime / pool_files(DEFAULT_IMAGE, ("github", "pypi"))[1]).iterdir())) == 1
    _fake_pool(runtime, ())  # a pool from before --egress records none: it has none
    with acquire_local_pool_sync([]) as lease:
        assert lease.egress == ()


def test_a_bad_egress_list_starts_no_pool(runtime) -> None:
    with pytest.raises(ConfigurationError, match="is not a host name"):
        acquire_local_pool_sync(["--egress", "exa mple.com"])
    assert list(runtime.iterdir()) == []


# -- the kernel's option --------------------------------------------------------------------------


class KernelStub(HasTraits):
    """The kernel's pool options, with the kernel's own egress validation and _pool_args."""

    local_pool_args = List(Unicode())
    image = Unicode()
    egress = Unicode()
    _check_egress = validate("egress")(AzureSessionsKernel._check_egress.func)
    _pool_args = AzureSessionsKernel._pool_args


def test_the_kernel_trait_is_configurable_and_says_what_it_does() -> None:
    trait = AzureSessionsKernel.class_traits(config=True)["egress"]
    assert "pypi" in trait.help and "install --egress pypi" in trait.help and "EgressDisabled" in trait.help


def test_the_kernel_normalises_egress_and_passes_it_to_the_pool() -> None:
    kernel = KernelStub(local_pool_args=["--cooldown", "600"], egress="PyPI, github ,pypi")
    assert kernel.egress == "github,pypi"
    assert kernel._pool_args() == ["--cooldown", "600", "--egress", "github,pypi"]
    assert requested_egress(kernel._pool_args()) == ("github", "pypi")
    kernel.image = "geo"
    assert kernel._pool_args()[2:] == ["--image", "geo", "--egress", "github,pypi"]
    for none in ("", "none", " NONE "):
        kernel.egress = none
        assert kernel.egress == "" and kernel._pool_args() == ["--cooldown", "600", "--image", "geo"]
    # The kernel's own option comes last, so it wins over one in local_pool_args, as image does.
    assert requested_egress(KernelStub(local_pool_args=["--egress", "github"], egress="pypi")._pool_args()) == ("pypi",)


def test_a_bad_egress_list_reaches_the_pool_lookup_which_names_the_entry() -> None:
    # Kept as written, so the first cell can say what is wrong (a kernel that fails to start says nothing).
    kernel = KernelStub(egress="pypi,192.168.1.1:80")
    assert kernel.egress == "pypi,192.168.1.1:80"
    with pytest.raises(ConfigurationError, match=r"'192\.168\.1\.1:80' is an IP address"):
        requested_egress(kernel._pool_args())


# -- install --egress -------------------------------------------------------------------------------


def test_the_egress_option_is_set_in_the_kernelspec(tmp_path) -> None:
    assert install_main(["--prefix", str(tmp_path), "--image", "geo", "--egress", "PyPI,github"]) == 0
    spec = json.loads((tmp_path / "share/jupyter/kernels/azure-sessions/kernel.json").read_text())
    assert spec["argv"][-2:] == ["--AzureSessionsKernel.image=geo", "--AzureSessionsKernel.egress=github,pypi"]
    assert install_main(["--prefix", str(tmp_path), "--egress", "none"]) == 0  # no egress: the default, not written
    spec = json.loads((tmp_path / "share/jupyter/kernels/azure-sessions/kernel.json").read_text())
    assert not any("egress" in arg for arg in spec["argv"])


def test_install_refuses_a_bad_egress_list_and_writes_nothing(tmp_path, capsys) -> None:
    assert install_main(["--prefix", str(tmp_path / "new"), "--egress", "pypi,1.2.3.4"]) == 2
    assert "--egress: '1.2.3.4' is an IP address" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    assert install_main(["--prefix", str(tmp_path), "--egress", "pypi"]) == 0
    kernel_json = tmp_path / "share/jupyter/kernels/azure-sessions/kernel.json"
    before = kernel_json.read_bytes()
    assert install_main(["--prefix", str(tmp_path), "--egress", "all"]) == 2
    assert "egress to every host is not offered" in capsys.readouterr().err
    assert kernel_json.read_bytes() == before


# -- %session ---------------------------------------------------------------------------------------


class _Pool:
    """The two calls %session makes to the pool."""

    def get_session(self, identifier):
        from azure_sessions_kernel.client import UnsupportedOperationError

        raise UnsupportedOperationError("no session route")

    def metadata(self):
        return types.SimpleNamespace(extensions={}, packages=[])


def _session_text(lease, capsys) -> str:
    remote = types.SimpleNamespace(
        backend=Backend(endpoint="https://127.0.0.1:9", local=lease is not None, isolation=None, extensions=frozenset()),
        identifier="nb-test", api_version="2025-02-02-preview", lease=lease, sync_client=_Pool,
    )
    kernel = types.SimpleNamespace(remote=remote, session_name="", endpoint="", image="", execution_timeout=None)
    SessionMagics(InteractiveShell.instance(), kernel)._show_session()
    return capsys.readouterr().out


def test_session_magic_shows_the_local_pools_egress(capsys) -> None:
    assert re.search(r"^egress\s+github, pypi$", _session_text(types.SimpleNamespace(egress=("github", "pypi")), capsys), re.M)
    assert re.search(r"^egress\s+none \(sessions have no network\)$", _session_text(types.SimpleNamespace(egress=()), capsys), re.M)
    assert "egress" not in _session_text(None, capsys)  # on Azure the pool's own setting decides
