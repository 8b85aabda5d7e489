"""Checks that a virtual environment holds exactly what uv.lock says, and that no two distributions in it
install the same file.

Run with the environment's own interpreter (`make setup` does it after every `uv sync --frozen`):

    .venv/bin/python scripts/venv_check.py --uv ~/.cache/infiniteflow/uv-0.13.8/bin/uv

Exit status 1 names every difference: a package the lock has and the venv lacks, one the venv has and the
lock does not, a version that differs, a file two distributions both install (the later one silently
replaced the earlier one's copy: two OpenCV builds each shipping `cv2`, say), and a distribution whose
files are not all there.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker

ROOT = Path(__file__).resolve().parent.parent


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares them (`Opencv_Python` and `opencv-python` are one)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_requirements(uv: Path, project: Path = ROOT) -> dict[str, str]:
    """Name → version of every package uv.lock installs on this interpreter's platform (default groups)."""
    exported = subprocess.run(
        [str(uv), "export", "--frozen", "--no-hashes", "--no-annotate", "--no-header"],
        cwd=project,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return parse_export(exported)


def parse_export(exported: str) -> dict[str, str]:
    """The `name==version ; marker` lines of `uv export` that apply here; `-e .` is the project itself."""
    wanted: dict[str, str] = {}
    for raw in exported.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        requirement, _, marker = line.partition(";")
        if marker.strip() and not Marker(marker.strip()).evaluate():
            continue
        if requirement.strip().startswith("-e"):
            continue
        name, _, version = requirement.strip().partition("==")
        wanted[canonical(name)] = version.strip()
    return wanted


def installed_distributions(dists: Iterable[metadata.Distribution]) -> dict[str, str]:
    """Name → version of what is installed."""
    return {canonical(d.metadata["Name"]): d.version for d in dists}


def differences(locked: dict[str, str], installed: dict[str, str], project: str) -> list[str]:
    """Every way the installed set differs from the lock, one line each, sorted by package name."""
    lines = []
    for name in sorted(locked.keys() | installed.keys()):
        if name == canonical(project):
            continue
        want, have = locked.get(name), installed.get(name)
        if have is None:
            lines.append(f"missing: {name}=={want} (in uv.lock, not installed)")
        elif want is None:
            lines.append(f"extra: {name}=={have} (installed, not in uv.lock)")
        elif want != have:
            lines.append(f"version: {name} is {have}, uv.lock says {want}")
    if canonical(project) not in installed:
        lines.append(f"missing: the project itself ({project}) is not installed")
    return lines


@dataclass(frozen=True)
class _Owner:
    distribution: str
    digest: str | None


def file_clashes(dists: Iterable[metadata.Distribution]) -> list[str]:
    """Files that more than one distribution installs with different contents, grouped by top-level name.

    Identical files (an empty namespace `__init__.py` several CUDA wheels each ship) are not a clash:
    whichever copy won, the content is the same.
    """
    owners: dict[str, list[_Owner]] = defaultdict(list)
    for dist in dists:
        name = canonical(dist.metadata["Name"])
        for file in dist.files or []:
            path = str(file)
            if path.endswith(".pyc") or ".dist-info/" in path or path.startswith(".."):
                continue
            owners[path].append(_Owner(name, file.hash.value if file.hash else None))
    clashing: dict[str, set[str]] = defaultdict(set)
    for path, who in owners.items():
        if len({o.distribution for o in who}) > 1 and len({o.digest for o in who}) > 1:
            clashing[path.split("/", 1)[0]].update(o.distribution for o in who)
    return [
        f"clash: {top} is installed by {', '.join(sorted(names))} (one overwrote the other's files)"
        for top, names in sorted(clashing.items())
    ]


def damaged(dists: Iterable[metadata.Distribution]) -> list[str]:
    """Distributions whose recorded files are not all on disk.

    Removing one of two distributions that shared files takes the shared files with it (uninstalling a
    stray `opencv-python` deletes `cv2/` the pinned build had installed), so an exact sync alone can leave
    a package listed as installed and unimportable.
    """
    lines = []
    for dist in dists:
        absent = [
            str(f)
            for f in dist.files or []
            if not str(f).endswith(".pyc") and not Path(str(dist.locate_file(f))).exists()
        ]
        if absent:
            lines.append(
                f"damaged: {dist.metadata['Name']} lacks {len(absent)} of its files (e.g. {absent[0]})"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--uv", type=Path, required=True, help="the uv binary that reads uv.lock")
    args = parser.parse_args(argv)
    dists = list(metadata.distributions())
    problems = differences(locked_requirements(args.uv), installed_distributions(dists), "infiniteflow")
    problems += file_clashes(dists) + damaged(dists)
    for line in problems:
        print(f"[venv-check] {line}", file=sys.stderr)
    if problems:
        print(
            f"[venv-check] {sys.prefix} does not match uv.lock ({len(problems)} differences)", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
