"""The kernelspec installer and the session identifiers it does not touch but the kernel needs."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest
from jupyter_client.kernelspec import KernelSpecManager

from azure_sessions_kernel.kernel import _identifiers
from azure_sessions_kernel.kernel.install import install_main, uninstall_main

from ._support import png_info


def test_install_into_a_prefix_and_list_and_uninstall(tmp_path, monkeypatch, capsys):
    assert install_main(["--prefix", str(tmp_path), "--endpoint", "https://example.dynamicsessions.io/pool"]) == 0
    spec_dir = tmp_path / "share" / "jupyter" / "kernels" / "azure-sessions"
    assert f"Installed kernelspec azure-sessions in {spec_dir}" in capsys.readouterr().out
    spec = json.loads((spec_dir / "kernel.json").read_text())
    assert spec["argv"][:3] == [sys.executable, "-m", "azure_sessions_kernel.kernel"]
    assert "{connection_file}" in spec["argv"]
    assert spec["argv"][-1] == "--AzureSessionsKernel.endpoint=https://example.dynamicsessions.io/pool"
    assert (spec["display_name"], spec["language"], spec["interrupt_mode"]) == ("Python 3 (Azure Sessions)", "python", "message")
    assert png_info((spec_dir / "logo-32x32.png").read_bytes())[:2] == (32, 32)
    assert png_info((spec_dir / "logo-64x64.png").read_bytes())[:2] == (64, 64)

    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "share" / "jupyter"))
    listed = subprocess.run([sys.executable, "-m", "jupyter", "kernelspec", "list"], capture_output=True, text=True, check=True).stdout
    assert f"azure-sessions    {spec_dir}" in " ".join(listed.split("\n"))
    assert KernelSpecManager().get_kernel_spec("azure-sessions").display_name == "Python 3 (Azure Sessions)"

    assert uninstall_main(["--prefix", str(tmp_path)]) == 0
    assert not spec_dir.exists()
    assert uninstall_main(["--prefix", str(tmp_path)]) == 1


def test_custom_name_and_display_name(tmp_path):
    assert install_main(["--prefix", str(tmp_path), "--name", "azure-dev", "--display-name", "Azure (dev)"]) == 0
    spec = json.loads((tmp_path / "share/jupyter/kernels/azure-dev/kernel.json").read_text())
    assert spec["display_name"] == "Azure (dev)" and len(spec["argv"]) == 5
    assert install_main(["--prefix", str(tmp_path), "--name", "bad name"]) == 2


def test_the_image_option_is_set_in_the_kernelspec(tmp_path):
    assert install_main(["--prefix", str(tmp_path), "--image", "geo"]) == 0
    spec = json.loads((tmp_path / "share/jupyter/kernels/azure-sessions/kernel.json").read_text())
    assert spec["argv"][-1] == "--AzureSessionsKernel.image=geo"


def test_the_cli_dispatches_to_the_installer(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "azure_sessions_kernel", "install", "--prefix", str(tmp_path)], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "share/jupyter/kernels/azure-sessions/kernel.json").exists()


def test_named_identifiers_are_stable_private_and_valid(tmp_path):
    key = tmp_path / "key"
    first = _identifiers.named_identifier("analysis", path=key)
    assert first == _identifiers.named_identifier("analysis", path=key)
    assert first != _identifiers.named_identifier("other", path=key)
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    # Another user (another key) gets a different identifier for the same name.
    assert first != _identifiers.named_identifier("analysis", path=tmp_path / "other-key")
    for identifier in (first, _identifiers.random_identifier()):
        assert identifier.startswith("nb-") and 4 <= len(identifier) <= 128
        assert identifier.replace("-", "").isalnum()
    with pytest.raises(ValueError, match="not a session name"):
        _identifiers.named_identifier("../x", path=key)
