"""User commands of the interpolation engines (`frames`, `interpolate`).

Torch, OpenCV and PyAV are imported inside the commands so `infiniteflow --help` stays fast.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from infiniteflow_common.errors import InfiniteFlowError

if TYPE_CHECKING:
    from services.gpu_interp.engines.base import InterpolationEngine


class EngineName(StrEnum):
    """The engines a user can pick."""

    rife = "rife"
    flow = "flow"


class ModelName(StrEnum):
    """RIFE models; `auto` picks hdv3 when every new frame is at t = 1/2, v4.25 otherwise (the
    pipeline's worker checks both on each chunk instead; one local call has no chunks to check)."""

    auto = "auto"
    hdv3 = "hdv3"
    v4_25 = "v4.25"


class Quality(StrEnum):
    """RIFE quality modes (cost: 1, 3 and 8 model passes)."""

    fast = "fast"
    tta = "tta"
    best = "best"


EngineOpt = Annotated[EngineName, typer.Option("--engine", help="rife (learned) or flow (classical, CPU).")]
QualityOpt = Annotated[Quality, typer.Option("--quality", help="rife: fast, tta (3 passes) or best (8).")]
ScaleOpt = Annotated[
    float | None, typer.Option("--scale", help="rife flow scale; default 1.0 up to 1440p, 0.5 above.")
]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="cpu or cuda; default: cuda when present.")]
ModelOpt = Annotated[
    ModelName, typer.Option("--model", help="rife model: auto, hdv3 (best at ×2) or v4.25 (native t).")
]
WeightsOpt = Annotated[str | None, typer.Option("--weights", help="Other weights for --model (a path).")]
WeightsHashOpt = Annotated[str | None, typer.Option("--weights-sha256", help="SHA-256 of --weights.")]


class BackendName(StrEnum):
    """How the rife network runs (engines/accel.py)."""

    auto = "auto"
    eager = "eager"
    compile = "compile"
    openvino = "openvino"


BackendOpt = Annotated[
    BackendName,
    typer.Option(
        "--backend",
        help="rife: eager, compile (torch.compile) or openvino (CPU); auto: openvino on CPUs. "
        "Compiling costs about a minute per frame size, once: it is cached in ~/.cache/infiniteflow.",
    ),
]
COMPILE_CACHE = "~/.cache/infiniteflow/compile"


def build_engine(
    engine: EngineName,
    quality: Quality = Quality.fast,
    scale: float | None = None,
    device: str | None = None,
    weights: str | None = None,
    weights_sha256: str | None = None,
    batch_size: int = 4,
    compile_model: bool = False,
    backend: BackendName = BackendName.eager,
    model: str = "hdv3",
) -> InterpolationEngine:
    """Construct the chosen engine once (for RIFE this loads and verifies `model`'s weights)."""
    if engine is EngineName.flow:
        from services.gpu_interp.engines.flow import FlowEngine

        return FlowEngine()
    from services.gpu_interp.engines.models import build_model
    from services.gpu_interp.engines.rife import RifeSettings

    settings = RifeSettings(
        quality=quality.value,
        scale=scale,
        device=device,
        batch_size=batch_size,
        backend="compile" if compile_model else backend.value,
        cache_dir=Path(COMPILE_CACHE).expanduser(),
    )
    return build_model(model, settings, weights, weights_sha256)


def _fail(exc: InfiniteFlowError) -> typer.Exit:
    typer.echo(f"error {exc.code}: {exc.message}", err=True)
    return typer.Exit(code=1)


def frames(
    first: Annotated[Path | None, typer.Argument(help="First frame (image).")] = None,
    second: Annotated[Path | None, typer.Argument(help="Second frame (image).")] = None,
    out: Annotated[Path | None, typer.Option("-o", "--out", help="Output image (PNG).")] = None,
    t: Annotated[float, typer.Option("--t", min=0.0, max=1.0, help="Time between the frames.")] = 0.5,
    batch: Annotated[
        Path | None, typer.Option("--batch", help="File of lines first<TAB>second<TAB>out.")
    ] = None,
    engine: EngineOpt = EngineName.rife,
    quality: QualityOpt = Quality.fast,
    scale: ScaleOpt = None,
    device: DeviceOpt = None,
    weights: WeightsOpt = None,
    weights_sha256: WeightsHashOpt = None,
    model: ModelOpt = ModelName.auto,
) -> None:
    """Interpolate the frame at time T between two images (or many pairs with --batch)."""
    import cv2
    import numpy as np

    from services.gpu_interp.engines.models import rule_for
    from services.gpu_interp.engines.pipeline import frames_of

    if batch is not None:
        jobs = []
        for number, line in enumerate(batch.read_text().splitlines(), 1):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != 3:
                typer.echo(f"{batch}:{number}: expected first<TAB>second<TAB>out", err=True)
                raise typer.Exit(code=2)
            jobs.append((Path(fields[0]), Path(fields[1]), Path(fields[2])))
    elif first is not None and second is not None and out is not None:
        jobs = [(first, second, out)]
    else:
        typer.echo("give FIRST SECOND -o OUT, or --batch LIST", err=True)
        raise typer.Exit(code=2)
    try:
        chosen = rule_for([t]) if model is ModelName.auto else model.value
        net = build_engine(engine, quality, scale, device, weights, weights_sha256, model=chosen)
        for a_path, b_path, out_path in jobs:
            a, b = frames_of([a_path, b_path])
            if a.dtype != b.dtype:  # mixed depths: compare at 16 bits
                a, b = (x.astype(np.uint16) * 257 if x.dtype == np.uint8 else x for x in (a, b))
            result = net.interpolate(a, b, t)
            assert isinstance(result, np.ndarray)
            if result.dtype == np.uint16:
                result = (result.astype(np.uint32) * 255 // 65535).astype(np.uint8)
            out_path.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(
                str(out_path.with_suffix(".png")) if out_path.suffix == "" else str(out_path),
                cv2.cvtColor(result, cv2.COLOR_RGB2BGR),
            ):
                raise InfiniteFlowError(f"could not write {out_path}", code="E_IMAGE_WRITE")
            typer.echo(str(out_path))
    except InfiniteFlowError as exc:
        raise _fail(exc) from exc


def interpolate(
    source: Annotated[Path, typer.Argument(help="Input video.", exists=True, dir_okay=False)],
    out: Annotated[Path, typer.Argument(help="Output video (.mkv or .mp4).")],
    multiplier: Annotated[int | None, typer.Option("--multiplier", "-m", help="2, 4 or 8.")] = None,
    fps: Annotated[str | None, typer.Option("--fps", help="Target rate: 60, 60000/1001, 59.94.")] = None,
    engine: EngineOpt = EngineName.rife,
    quality: QualityOpt = Quality.fast,
    scale: ScaleOpt = None,
    device: DeviceOpt = None,
    lossless: Annotated[bool, typer.Option(help="FFV1 lossless instead of libx264 CRF 16.")] = False,
    scenes: Annotated[bool, typer.Option(help="Detect scene cuts (no interpolation across).")] = True,
    batch_size: Annotated[int, typer.Option(min=1, help="Frame pairs per model call.")] = 4,
    compile_model: Annotated[
        bool, typer.Option("--compile", help="rife: the same as --backend compile.")
    ] = False,
    backend: BackendOpt = BackendName.auto,
    weights: WeightsOpt = None,
    weights_sha256: WeightsHashOpt = None,
    model: ModelOpt = ModelName.auto,
) -> None:
    """Raise a video's frame rate: decode, find scene cuts, interpolate, encode, copy the audio."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from infiniteflow_common.timing import parse_rate
    from services.gpu_interp.engines.pipeline import interpolate_video

    if (multiplier is None) == (fps is None):
        typer.echo("give exactly one of --multiplier and --fps", err=True)
        raise typer.Exit(code=2)
    try:
        target = parse_rate(fps) if fps is not None else None
        chosen = model.value
        if model is ModelName.auto:  # ×2 only puts frames at t = 1/2; a target rate may not
            chosen = "hdv3" if multiplier == 2 else "v4.25"
        net = build_engine(
            engine,
            quality,
            scale,
            device,
            weights,
            weights_sha256,
            batch_size,
            compile_model,
            backend,
            chosen,
        )
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns) as progress:
            task = progress.add_task("interpolating", total=None)
            info, rate, written = interpolate_video(
                source,
                out,
                net,
                out_rate=target,
                multiplier=multiplier,
                lossless=lossless,
                detect_cuts=scenes,
                batch_size=batch_size,
                on_start=lambda total: progress.update(task, total=total),
                on_frame=lambda done: progress.update(task, completed=done),
            )
    except InfiniteFlowError as exc:
        raise _fail(exc) from exc
    typer.echo(f"{out}: {written} frames at {rate} fps (from {info.rate})")


def register(app: typer.Typer) -> None:
    """Add the engine commands to the `infiniteflow` CLI."""
    app.command()(frames)
    app.command()(interpolate)
