"""The upload form: its option fields, and its OpenAPI description (which the web page builds its form from).

The form is read by hand (streamed, size-limited) rather than declared as FastAPI parameters, so the
request body is described here for the OpenAPI document.
"""

from __future__ import annotations

from typing import Any

from infiniteflow_common.events import PRIORITY_MAX, PRIORITY_MIN
from services.ingest.config import IngestSettings
from services.ingest.params import ParamDefaults

OPTION_FIELDS = (
    "multiplier", "target_fps", "engine", "quality", "model", "webhook_url", "priority", "codec", "crf",
    "bitrate", "preset", "dedupe",
)  # fmt: skip


def upload_form_openapi(settings: IngestSettings, defaults: ParamDefaults) -> dict[str, Any]:
    """The `openapi_extra` of `POST /api/upload`: its multipart/form-data request body."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            # The web page builds its form from these (order, enums, defaults,
                            # descriptions): an option added here appears there by itself.
                            "multiplier": {
                                "type": "integer",
                                "enum": [2, 4, 8],
                                "default": defaults.multiplier,
                                "description": "multiply the frame rate (or give target_fps)",
                            },
                            "target_fps": {
                                "type": "string",
                                "example": "60000/1001",
                                "description": "output frame rate instead of a multiplier",
                            },
                            "engine": {
                                "type": "string",
                                "enum": list(settings.allowed_engines),
                                "default": defaults.engine,
                                "description": "rife: learned (best on a GPU); flow: classical (CPU)",
                            },
                            "quality": {
                                "type": "string",
                                "enum": list(settings.allowed_qualities),
                                "default": defaults.quality,
                                "description": "fast: one pass; tta and best: more passes, slower",
                            },
                            "model": {
                                "type": "string",
                                "enum": list(settings.allowed_models),
                                "default": defaults.model,
                                "description": "rife weights: auto picks per chunk; hdv3 or v4.25 for every chunk",
                            },
                            "webhook_url": {
                                "type": "string",
                                "format": "uri",
                                "description": "receives the signed job.completed/failed/cancelled webhook",
                            },
                            "priority": {
                                "type": "integer",
                                "minimum": PRIORITY_MIN,
                                "maximum": PRIORITY_MAX,
                                "default": 0,
                                "description": "higher goes first among your own jobs (-50 to 50)",
                            },
                            "codec": {
                                "type": "string",
                                "enum": ["h264", "h265", "av1", "source"],
                                "default": "h264",
                                "description": "output video codec (source: the input's codec)",
                            },
                            "crf": {
                                "type": "integer",
                                "minimum": 0,
                                "maximum": 63,
                                "description": "constant quality (lower is better); or give bitrate",
                            },
                            "bitrate": {
                                "type": "string",
                                "example": "8M",
                                "description": "target bitrate such as 8M or 2500k, instead of crf",
                            },
                            "preset": {
                                "type": "string",
                                "example": "medium",
                                "description": "encoder speed preset (medium, slow, … or 0–13 for AV1)",
                            },
                            "dedupe": {
                                "type": "boolean",
                                "default": False,
                                "description": "skip repeated source frames, interpolate the real motion",
                            },
                        },
                    }
                }
            },
        }
    }
