"""The quality bars of issue 4 on the UCF101 development set (skipped when ../shared is absent)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.support.frames import DEVSET

pytestmark = [
    pytest.mark.devset,
    pytest.mark.slow,
    pytest.mark.skipif(not DEVSET.is_dir(), reason=f"{DEVSET} is absent"),
]


def mean_psnr(engine: Any) -> float:
    from services.gpu_interp.bench import load_devset, psnr

    return float(np.mean([psnr(engine.interpolate(a, b), truth) for a, b, truth in load_devset(DEVSET)]))


def test_our_ifnet_reproduces_the_published_rife_score() -> None:
    from services.gpu_interp.engines.rife import RifeEngine, RifeSettings

    engine = RifeEngine(RifeSettings(device="cpu", precision="fp32", scale=1.0))
    assert mean_psnr(engine) == pytest.approx(34.73, abs=0.01)


def test_the_flow_engine_beats_a_plain_dis_average() -> None:
    from services.gpu_interp.engines.flow import FlowEngine

    assert mean_psnr(FlowEngine()) > 33.26


def test_our_v425_network_reproduces_the_published_model_score() -> None:
    """The RIFE 4.25-class weights score 34.08 here with their reference code (fp32, scale 1)."""
    from services.gpu_interp.engines.models import build_model
    from services.gpu_interp.engines.rife import RifeSettings

    engine = build_model("v4.25", RifeSettings(device="cpu", precision="fp32", scale=1.0))
    assert mean_psnr(engine) == pytest.approx(34.08, abs=0.01)


def test_the_flow_engine_reaches_issue_14s_bar() -> None:
    from services.gpu_interp.engines.flow import FlowEngine

    assert mean_psnr(FlowEngine()) >= 33.8


def test_rife_on_openvino_scores_within_three_hundredths_of_a_db_of_the_reference(tmp_path: Any) -> None:
    from services.gpu_interp.engines.rife import RifeEngine, RifeSettings

    engine = RifeEngine(
        RifeSettings(device="cpu", precision="fp32", scale=1.0, backend="openvino", cache_dir=tmp_path)
    )
    assert engine.backend == "openvino"
    assert mean_psnr(engine) == pytest.approx(34.73, abs=0.03)
