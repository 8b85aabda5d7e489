"""Whole-object downloads from the real MinIO: ranged GETs side by side give the exact bytes of one version."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from minio import Minio

from infiniteflow_common.settings import CommonSettings
from infiniteflow_common.storage import ObjectUnavailableError, delete_prefix, download, make_client

pytestmark = [pytest.mark.minio]


@pytest.fixture
def client(settings: CommonSettings) -> Minio:
    return make_client(settings)


@pytest.fixture
def prefix(client: Minio, settings: CommonSettings, unique: str) -> Iterator[str]:
    yield f"tests/download/{unique}/"
    delete_prefix(client, settings.work_bucket, f"tests/download/{unique}/")


def _put(client: Minio, bucket: str, key: str, data: bytes) -> str:
    etag = client.put_object(bucket, key, io.BytesIO(data), len(data)).etag
    assert etag
    return etag


@pytest.mark.parametrize("streams", [1, 2, 3])
def test_an_object_downloaded_in_ranges_side_by_side_is_byte_for_byte_the_object(
    client: Minio, settings: CommonSettings, prefix: str, tmp_path: Path, streams: int
) -> None:
    data = os.urandom(21 * (1 << 20) + 12345)  # not a multiple of any range: the last one is short
    etag = _put(client, settings.work_bucket, prefix + "big.bin", data)
    path = tmp_path / "copy"

    size = download(
        client, settings.work_bucket, prefix + "big.bin", path, version_id=None, etag=etag, streams=streams
    )

    assert size == len(data)
    assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(data).digest()


def test_the_size_is_checked_before_any_byte_is_read(
    client: Minio, settings: CommonSettings, prefix: str, tmp_path: Path
) -> None:
    etag = _put(client, settings.work_bucket, prefix + "large.bin", b"x" * 5000)
    seen: list[int] = []

    def refuse(size: int) -> None:
        seen.append(size)
        raise ValueError("too large")

    with pytest.raises(ValueError, match="too large"):
        download(
            client, settings.work_bucket, prefix + "large.bin", tmp_path / "copy",
            version_id=None, etag=etag, check_size=refuse,
        )  # fmt: skip
    assert seen == [5000]
    assert not (tmp_path / "copy").exists()


def test_an_empty_object_downloads_as_an_empty_file(
    client: Minio, settings: CommonSettings, prefix: str, tmp_path: Path
) -> None:
    etag = _put(client, settings.work_bucket, prefix + "empty.bin", b"")

    size = download(
        client, settings.work_bucket, prefix + "empty.bin", tmp_path / "copy", version_id=None, etag=etag
    )

    assert size == 0
    assert (tmp_path / "copy").read_bytes() == b""


def test_a_replaced_or_deleted_object_is_a_permanent_failure_with_its_code(
    client: Minio, settings: CommonSettings, prefix: str, tmp_path: Path
) -> None:
    etag = _put(client, settings.work_bucket, prefix + "source.bin", b"first upload")
    _put(client, settings.work_bucket, prefix + "source.bin", b"a different upload under the same key")
    with pytest.raises(ObjectUnavailableError) as changed:
        download(
            client, settings.work_bucket, prefix + "source.bin", tmp_path / "a", version_id=None, etag=etag
        )
    assert changed.value.code == "E_SOURCE_CHANGED"

    client.remove_object(settings.work_bucket, prefix + "source.bin")
    with pytest.raises(ObjectUnavailableError) as gone:
        download(
            client, settings.work_bucket, prefix + "source.bin", tmp_path / "b", version_id=None, etag=etag
        )
    assert gone.value.code == "E_SOURCE_GONE"
