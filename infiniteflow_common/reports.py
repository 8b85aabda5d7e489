"""How a finished job's timing report reads, in the webhook and in the status API alike (pure).

Frame rates are exact rationals written `num/den` ("30000/1001", "30/1"); durations are seconds. The
drift is also given in output frames, the unit its bound is stated in (under one frame).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from infiniteflow_common.events import TimingReport


def rational(rate: Fraction) -> str:
    """`num/den`, always with the denominator, as ffprobe's r_frame_rate writes it."""
    return f"{rate.numerator}/{rate.denominator}"


def timing_view(
    report: TimingReport, *, in_rate: Fraction, out_rate: Fraction, in_frames: int
) -> dict[str, Any]:
    """The `timing` block of a completed job."""
    drift = report.audio_video_drift_s
    return {
        "input": {
            "fps": rational(in_rate),
            "frame_count": in_frames,
            "duration_s": report.in_duration_s,
            "vfr": report.input_vfr,
            "vfr_converted": report.vfr_converted,
        },
        "output": {
            "fps": rational(out_rate),
            "frame_count": report.out_frames_measured,
            "duration_s": report.out_duration_s,
        },
        "audio": (
            None
            if report.audio_duration_s is None
            else {
                "duration_s": report.audio_duration_s,
                "drift_s": drift,
                "drift_frames": None if drift is None else round(drift * float(out_rate), 4),
            }
        ),
        "scene_cuts": [
            {"frame": frame, "time_s": time}
            for frame, time in zip(report.scene_cut_frames, report.scene_cut_times_s, strict=True)
        ],
    }
