"""Engines by name, built once per worker process and kept resident."""

from __future__ import annotations

from services.gpu_interp.config import WorkerSettings
from services.gpu_interp.engines.base import InterpolationEngine

ENGINES = ("rife", "flow")


class EngineCache:
    """Builds each (engine, quality, model) the first time a chunk asks for it, then reuses it."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self._engines: dict[tuple[str, str, str], InterpolationEngine] = {}

    def get(self, name: str, quality: str, model: str = "hdv3") -> InterpolationEngine:
        """The engine for `name` at `quality`; for `rife`, with `model`'s weights (not `auto`)."""
        key = (name, quality, model if name == "rife" else "")
        if key not in self._engines:
            engine = self._build(name, quality, model)
            if self.settings.simulated_memory_pixels is not None:
                from services.gpu_interp.memory import SimulatedMemoryLimit

                engine = SimulatedMemoryLimit(engine, self.settings.simulated_memory_pixels)
            self._engines[key] = engine
        return self._engines[key]

    def _build(self, name: str, quality: str, model: str) -> InterpolationEngine:
        if name == "rife":
            from services.gpu_interp.engines.models import build_model
            from services.gpu_interp.engines.rife import RifeSettings

            # operator weights (WEIGHTS_PATH / _SHA256) replace hdv3's, V425_WEIGHTS_* v4.25's
            path, sha = (
                (self.settings.weights_path, self.settings.weights_sha256)
                if model == "hdv3"
                else (self.settings.v425_weights_path, self.settings.v425_weights_sha256)
            )
            return build_model(
                model,
                RifeSettings(
                    quality=quality,  # type: ignore[arg-type]
                    scale=self.settings.rife_scale,
                    device=self.settings.device,
                    batch_size=self.settings.batch_size,
                    backend="compile" if self.settings.rife_compile else self.settings.rife_backend,
                    cache_dir=self.settings.compile_cache_dir,
                    threads=self.settings.engine_threads,
                ),
                weights_path=path,
                weights_sha256=sha,
            )
        if name == "flow":
            from services.gpu_interp.engines.flow import FlowEngine, FlowSettings

            return FlowEngine(FlowSettings(threads=self.settings.engine_threads))
        from infiniteflow_common.errors import InvalidMessage

        raise InvalidMessage(
            f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}", code="E_ENGINE_UNKNOWN"
        )
