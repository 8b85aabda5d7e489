"""How a network runs: eager torch, `torch.compile`, or OpenVINO on CPUs — for any `nn.Module`.

A *runner* is a callable taking the module's positional tensor inputs and returning its tensor
outputs (a tuple). Engines ask `make_runner` for one and never care which backend they got.

- `eager`: the module itself (under the caller's `inference_mode`).
- `compile`: `torch.compile` with frozen weights (inductor folds and prepacks them).
- `openvino`: the module traced once per input shape into OpenVINO's CPU plugin (fp32).

Both compiling backends keep what they build on disk under one cache directory, so a restarted
worker loads its kernels instead of compiling them again (about a minute per frame size on a
2-core CPU otherwise): inductor's FX-graph and AOTAutograd caches (`TORCHINDUCTOR_CACHE_DIR`), and
OpenVINO's converted model (IR) plus its compiled blob (`CACHE_DIR`). Entries are keyed by the
module's weights, the input shapes and the library versions, so a stale entry is never reused.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.jit._trace import TracerWarning

from infiniteflow_common.errors import InfiniteFlowError

Backend = Literal["auto", "eager", "compile", "openvino"]
Runner = Callable[..., tuple[torch.Tensor, ...]]

_cache_lock = threading.Lock()


def openvino_available() -> bool:
    """True when the `openvino` package is importable (it is an optional, CPU-only speed-up)."""
    return importlib.util.find_spec("openvino") is not None


def resolve_backend(backend: Backend, device: torch.device) -> Backend:
    """`auto` → OpenVINO on CPUs where it is installed (measured fastest there), else eager.

    CUDA runs eager (fp16) unless `compile` is asked for; OpenVINO is refused on CUDA.
    """
    if backend == "auto":
        return "openvino" if device.type == "cpu" and openvino_available() else "eager"
    if backend == "openvino":
        if device.type != "cpu":
            raise InfiniteFlowError(
                f"the openvino backend runs on the CPU, not {device.type}", code="E_INTERP_BAD_SETTINGS"
            )
        if not openvino_available():
            raise InfiniteFlowError(
                "backend=openvino needs the openvino package (pip install openvino)",
                code="E_INTERP_BAD_SETTINGS",
            )
    return backend


def configure_compile_cache(cache_dir: Path | str | None) -> Path | None:
    """Point inductor's on-disk caches at `cache_dir` (created), so compiled kernels outlive the process.

    Must run before the first `torch.compile` call of the process; None leaves torch's default
    (a per-user folder under the system temp dir, which containers and reboots wipe).
    """
    if cache_dir is None:
        return None
    path = Path(cache_dir).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path / "inductor")
    inductor_config.fx_graph_cache = True  # compiled graphs, keyed by graph, inputs and versions
    functorch_config.enable_autograd_cache = True  # the AOTAutograd step in front of it
    return path


def weights_digest(module: nn.Module) -> str:
    """SHA-256 over the module's parameters and buffers (names, shapes, dtypes, bytes): a cache key."""
    digest = hashlib.sha256(type(module).__qualname__.encode())
    for name, tensor in sorted(module.state_dict().items()):
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(data.shape)}:{data.dtype}".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def make_runner(
    module: nn.Module,
    backend: Backend,
    device: torch.device,
    cache_dir: Path | None = None,
    threads: int | None = None,
) -> Runner:
    """A runner for `module` on `backend` (`auto` resolved with `resolve_backend`)."""
    chosen = resolve_backend(backend, device)
    if chosen == "openvino":
        return OpenVinoRunner(module, cache_dir, threads)
    if chosen == "compile":
        import torch._inductor.config as inductor_config

        configure_compile_cache(cache_dir)
        inductor_config.freezing = True  # fold the (constant) weights into the compiled graph
        compiled: Runner = torch.compile(module, dynamic=False)
        return compiled
    return module


class OpenVinoRunner:
    """`module(*inputs)` through OpenVINO's CPU plugin, one compiled model per input shape.

    The module is traced for each new shape (its Python control flow may depend on the shape),
    converted, saved as IR under `cache_dir` and compiled there with OpenVINO's blob cache, so
    the next process with the same weights and shape only reads files. fp32 inference precision:
    the same arithmetic as eager up to summation order (parity is tested).
    """

    def __init__(self, module: nn.Module, cache_dir: Path | None = None, threads: int | None = None) -> None:
        import openvino as ov

        self.module = module.eval()
        self.core = ov.Core()
        self.cache_dir = Path(cache_dir).expanduser().resolve() / "openvino" if cache_dir else None
        self.config: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",  # one request at a time, all threads on it
            "INFERENCE_PRECISION_HINT": "f32",
            "INFERENCE_NUM_THREADS": threads or len(os.sched_getaffinity(0)),
        }
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            self.core.set_property({"CACHE_DIR": str(self.cache_dir / "blobs")})
        self._digest: str | None = None
        self._compiled: dict[tuple[tuple[int, ...], ...], Any] = {}
        self.compiles = 0  # shapes converted from torch in this process (a cache hit converts none)

    def _key(self, shapes: Sequence[tuple[int, ...]]) -> str:
        import openvino as ov

        if self._digest is None:
            self._digest = weights_digest(self.module)
        text = f"{self._digest}|{shapes}|torch {torch.__version__}|openvino {ov.__version__}"
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def _compile(self, inputs: Sequence[torch.Tensor]) -> Any:
        import openvino as ov

        shapes = tuple(tuple(x.shape) for x in inputs)
        ir = self.cache_dir / f"{self._key(shapes)}.xml" if self.cache_dir is not None else None
        with _cache_lock:
            if ir is not None and ir.is_file():
                model = self.core.read_model(str(ir))
            else:
                # Tracing warns that shapes become constants: intended, one model per shape.
                with torch.no_grad(), warnings.catch_warnings():
                    warnings.simplefilter("ignore", TracerWarning)
                    warnings.simplefilter("ignore", DeprecationWarning)
                    model = ov.convert_model(self.module, example_input=tuple(inputs))
                self.compiles += 1
                # Written aside and renamed, so workers sharing the folder never read half a file.
                if ir is not None:
                    tmp = ir.with_name(f"{ir.stem}.{os.getpid()}.tmp.xml")
                    ov.save_model(model, str(tmp), compress_to_fp16=False)
                    tmp.with_suffix(".bin").replace(ir.with_suffix(".bin"))
                    tmp.replace(ir)  # the .xml last: a reader never finds it without its weights
            return self.core.compile_model(model, "CPU", self.config)

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        shapes = tuple(tuple(x.shape) for x in inputs)
        compiled = self._compiled.get(shapes)
        if compiled is None:
            compiled = self._compile(inputs)
            self._compiled[shapes] = compiled
        arrays = [x.detach().to(torch.float32).contiguous().numpy() for x in inputs]
        result = compiled(arrays)
        return tuple(torch.from_numpy(result[out].copy()) for out in compiled.outputs)
