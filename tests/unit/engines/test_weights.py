"""The RIFE weights are found in the installed package, hash-checked, and refused when altered."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from infiniteflow_common.errors import InfiniteFlowError
from services.gpu_interp.engines import weights


def test_the_packaged_weights_are_found_and_match_the_pinned_hash() -> None:
    source = weights.resolve()
    assert source.path.name == "flownet.pkl"
    assert weights.sha256_of(source.path) == weights.RIFE_HDV3_SHA256


def test_loaded_tensors_lose_the_data_parallel_prefix() -> None:
    state = weights.load_state_dict(weights.resolve())
    assert "block0.conv0.0.0.weight" in state
    assert not any(key.startswith("module.") for key in state)


def test_an_altered_file_is_refused_with_a_stable_code(tmp_path: Path) -> None:
    altered = tmp_path / "flownet.pkl"
    shutil.copyfile(weights.packaged_weights_path(), altered)
    with altered.open("r+b") as handle:
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(InfiniteFlowError) as err:
        weights.resolve(altered, weights.RIFE_HDV3_SHA256)
    assert err.value.code == "E_WEIGHTS_HASH_MISMATCH"
    assert "altered" in err.value.message


def test_a_missing_file_is_reported_as_missing(tmp_path: Path) -> None:
    with pytest.raises(InfiniteFlowError) as err:
        weights.resolve(tmp_path / "nothing.pkl", weights.RIFE_HDV3_SHA256)
    assert err.value.code == "E_WEIGHTS_MISSING"


def test_operator_weights_need_an_expected_hash(tmp_path: Path) -> None:
    with pytest.raises(InfiniteFlowError) as err:
        weights.resolve(tmp_path / "mine.pkl", None)
    assert err.value.code == "E_WEIGHTS_HASH_REQUIRED"


def test_s3_weights_are_fetched_by_the_injected_downloader_and_checked(tmp_path: Path) -> None:
    fetched: list[str] = []

    def download(uri: str, destination: Path) -> None:
        fetched.append(uri)
        shutil.copyfile(weights.packaged_weights_path(), destination)

    uri = "s3://models/rife/flownet.pkl"
    source = weights.resolve(uri, weights.RIFE_HDV3_SHA256, download=download, cache_dir=tmp_path)
    assert fetched == [uri]
    assert source.path.parent == tmp_path
    weights.resolve(uri, weights.RIFE_HDV3_SHA256, download=download, cache_dir=tmp_path)
    assert fetched == [uri], "a verified cached copy is reused"
    with pytest.raises(InfiniteFlowError) as err:
        weights.resolve("s3://models/other.pkl", "0" * 64, download=download, cache_dir=tmp_path)
    assert err.value.code == "E_WEIGHTS_HASH_MISMATCH"


def test_s3_weights_without_a_downloader_are_refused() -> None:
    with pytest.raises(InfiniteFlowError) as err:
        weights.resolve("s3://models/rife.pkl", weights.RIFE_HDV3_SHA256)
    assert err.value.code == "E_WEIGHTS_MISSING"
