"""The `rife` engine's models by name: where their weights come from and what each can do.

A job names one (`model` = `hdv3` | `v4.25`) or lets the worker choose per chunk (`auto`, see
`services/gpu_interp/model_choice.py`). Importing this module loads nothing; `build_model` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from infiniteflow_common.errors import InfiniteFlowError, InvalidMessage
from services.gpu_interp.engines import weights as weights_mod

if TYPE_CHECKING:
    from services.gpu_interp.engines.base import InterpolationEngine
    from services.gpu_interp.engines.rife import RifeSettings

AUTO = "auto"
DEFAULT_MODEL = AUTO


@dataclass(frozen=True)
class ModelSpec:
    """One published weight set and how our network for it behaves."""

    name: str
    weights: weights_mod.PackagedWeights
    # True: t is a network input, every timestep costs one pass and is exact. False: trained for
    # t = 1/2 only; other times come from bisection or flow scaling.
    native_timesteps: bool
    pad_multiple: int  # frame sizes are padded to a multiple of this (at scale 1)
    # Seconds per pass relative to hdv3 at the same size and mode; weighs the cost of `auto`'s check
    # against its budget. Measured fp32 on a 2-core Zen 4 CPU, one pair per call: hdv3 0.26 s / 3.22 s,
    # v4.25 0.088 s / 1.43 s at 320×240 / 1280×720 (v4.25 has one direction and thinner fine levels).
    relative_cost: float
    summary: str


MODELS: dict[str, ModelSpec] = {
    "hdv3": ModelSpec(
        "hdv3",
        weights_mod.HDV3_PACKAGE,
        native_timesteps=False,
        pad_multiple=32,
        relative_cost=1.0,
        summary="RIFE HDv3 (ECCV 2022): best at t = 1/2 on small motion",
    ),
    "v4.25": ModelSpec(
        "v4.25",
        weights_mod.V425_PACKAGE,
        native_timesteps=True,
        pad_multiple=64,
        relative_cost=0.45,
        summary="RIFE 4.25-class: native timesteps, larger motion",
    ),
}
MODEL_CHOICES = (AUTO, *MODELS)
"""What a job may ask for."""


class UnknownModel(InvalidMessage):
    """A model name this build does not know (a bad parameter, never retried)."""

    code = "E_PARAM_INVALID"


def spec(name: str) -> ModelSpec:
    """The model called `name` (not `auto`); `UnknownModel` names the choices otherwise."""
    try:
        return MODELS[name]
    except KeyError:
        raise UnknownModel(
            f"model={name[:40]!r} is not known: use one of {', '.join(MODEL_CHOICES)}"
        ) from None


def check_choice(name: str) -> str:
    """A job's `model` option, lower-cased and checked (`auto` included)."""
    value = name.strip().lower()
    if value != AUTO:
        spec(value)
    return value


def build_model(
    name: str,
    settings: RifeSettings | None = None,
    weights_path: str | Path | None = None,
    weights_sha256: str | None = None,
    download: weights_mod.Downloader | None = None,
) -> InterpolationEngine:
    """Resolve and verify `name`'s weights (packaged, or an operator's path/s3 URI with its hash),
    then build its engine. Raises `UnknownModel`, or the weights' own errors (E_WEIGHTS_*)."""
    model = spec(name)
    if settings is not None and settings.batch_size < 1:
        raise InfiniteFlowError("batch_size must be at least 1", code="E_INTERP_BAD_SETTINGS")
    source = weights_mod.resolve(weights_path, weights_sha256, download=download, package=model.weights)
    if model.name == "hdv3":
        from services.gpu_interp.engines.rife import RifeEngine

        return RifeEngine(settings, source)
    from services.gpu_interp.engines.rife_v4 import RifeV4Engine

    return RifeV4Engine(settings, source)


def rule_for(times: set[float] | frozenset[float] | list[float]) -> str:
    """The model `auto` uses when a chunk is too short to check: hdv3 when every in-between frame is
    at t = 1/2 (×2), v4.25 otherwise (measured: docs/benchmarks.md, UCF101 and the ×4 generated clip)."""
    inner = {round(float(t), 9) for t in times if 0 < float(t) < 1}
    return "hdv3" if inner <= {0.5} else "v4.25"
