"""Session images without building one: the lock, names, refusals, and which shared pool a kernel joins.

Building and using images goes through real pools in ``tests/kernel/test_session_image.py``.
"""

from __future__ import annotations

import re
import subprocess
import sys

import httpx
import pytest

from azure_sessions_kernel._runtime import LEASE_DIR, LOG_FILE, POOL_FILE, pool_files
from azure_sessions_kernel.client._local import requested_image
from azure_sessions_kernel.pool import image as image_mod
from azure_sessions_kernel.pool.image import DEFAULT_IMAGE_NAME, ImageError, build_image, default_image_dir, find_image, remove_image, resolve_image

from .conftest import REPO

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==\S+")


def _lock_entries() -> dict[str, str]:
    """Each pinned line of the lock (lower-case name) with the text up to the next pin."""
    entries: dict[str, str] = {}
    current = None
    for line in image_mod.LOCK_FILE.read_text().splitlines():
        match = _PIN.match(line)
        if match:
            current = match.group(1).lower()
            entries[current] = entries.get(current, "") + line + "\n"
        elif current is not None:
            entries[current] += line + "\n"
    return entries


def test_the_lock_pins_every_requirement_with_hashes() -> None:
    entries = _lock_entries()
    wanted = [re.split(r"[<>=!~ ;\[]", line, maxsplit=1)[0].lower()
              for line in image_mod.REQUIREMENTS_IN.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert len(wanted) > 30
    assert set(wanted) <= set(entries), f"not in the lock: {set(wanted) - set(entries)} (run 'azure-sessions-kernel image lock')"
    unhashed = [name for name, text in entries.items() if "--hash=sha256:" not in text]
    assert unhashed == []


def test_the_lock_ships_as_package_data() -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"pool/image/requirements.lock"' in pyproject and '"pool/image/requirements.in"' in pyproject


def test_images_are_named_or_given_as_directories(tmp_path) -> None:
    assert resolve_image(None) == resolve_image(DEFAULT_IMAGE_NAME) == default_image_dir()
    assert resolve_image("geo") == image_mod._images_root() / "named" / "geo"
    assert resolve_image(str(tmp_path)) == tmp_path
    for bad in ("", "-x", "a b", "x" * 65, "../up"):
        with pytest.raises(ImageError):
            image_mod._named_dir(bad)
    with pytest.raises(ImageError, match="there is no image named 'no-such-image'.*image list"):
        find_image(resolve_image("no-such-image"))


def test_bad_build_requests_are_refused_before_anything_is_built(tmp_path) -> None:
    with pytest.raises(ImageError, match="--requirements needs --name"):
        build_image(requirements=tmp_path / "r.txt")
    with pytest.raises(ImageError, match="--name or --dir, not both"):
        build_image(tmp_path / "img", name="geo")
    with pytest.raises(ImageError, match="cannot name an image"):
        build_image(name=DEFAULT_IMAGE_NAME, requirements=tmp_path / "r.txt")
    with pytest.raises(ImageError, match="cannot read the requirements file"):
        build_image(name="geo", requirements=tmp_path / "missing.txt")
    assert list(tmp_path.iterdir()) == []


def test_the_default_image_is_not_removed() -> None:
    with pytest.raises(ImageError, match="the default image is not removed"):
        remove_image(DEFAULT_IMAGE_NAME)
    assert find_image().path == default_image_dir()


def test_each_image_has_a_shared_pool_of_its_own() -> None:
    assert requested_image([]) == requested_image(["--image", "default"]) == DEFAULT_IMAGE_NAME
    assert requested_image(["--cooldown", "600", "--image", "a", "--image=b"]) == "b"  # the last one, as argparse reads it
    assert pool_files() == (POOL_FILE, LEASE_DIR, LOG_FILE)  # the default image keeps the plain names
    geo, other = pool_files("geo"), pool_files("/srv/images/geo")
    assert len({pool_files()[0], geo[0], other[0]}) == 3 and len({pool_files()[1], geo[1], other[1]}) == 3


def test_serve_names_an_unknown_image_and_does_not_start() -> None:
    r = subprocess.run([sys.executable, "-m", "azure_sessions_kernel", "serve", "--image", "no-such-image"],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 2 and "Pool management endpoint" not in r.stdout
    assert "there is no image named 'no-such-image'" in r.stderr


@pytest.mark.slow
def test_metadata_names_the_image_and_its_packages(local_pool, strict_pool) -> None:
    params = {"api-version": "2025-10-02-preview"}
    local = httpx.get(f"{local_pool.endpoint}/metadata", params=params, headers=local_pool.headers).json()
    assert local["localPool"]["image"] == {"name": DEFAULT_IMAGE_NAME, "path": str(find_image().path)}
    names = {p["name"].lower() for p in local["preInstalledPackages"]}
    assert {"plotly", "statsmodels", "ipywidgets", "pyarrow", "python-docx"} <= names
    strict = httpx.get(f"{strict_pool.endpoint}/metadata", params=params, headers=strict_pool.headers).json()
    assert "localPool" not in strict and strict["preInstalledPackages"] == local["preInstalledPackages"]  # Azure's shape only
