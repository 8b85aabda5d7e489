"""Synthetic frames with known motion: a textured scene and a textured square moving over it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.support.frames import Frame, square_scene


@pytest.fixture
def scene() -> Callable[[int, int, float], Frame]:
    return square_scene


@pytest.fixture(scope="session")
def rife_engine() -> Any:
    """One fp32 CPU engine for the session (loading the weights takes a moment)."""
    from services.gpu_interp.engines.rife import RifeEngine, RifeSettings

    return RifeEngine(RifeSettings(device="cpu", precision="fp32", scale=1.0))


@pytest.fixture(scope="session")
def v4_engine() -> Any:
    """One fp32 CPU engine of the RIFE 4.25-class model for the session."""
    from services.gpu_interp.engines.models import build_model
    from services.gpu_interp.engines.rife import RifeSettings

    return build_model("v4.25", RifeSettings(device="cpu", precision="fp32", scale=1.0))
