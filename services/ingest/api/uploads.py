"""`POST /api/upload`: stream a video to the incoming bucket and start its job."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.types import Message

from services.ingest import metrics
from services.ingest.api.deps import CurrentCaller, Deps
from services.ingest.api.errors import ApiError
from services.ingest.api.upload_form import OPTION_FIELDS, upload_form_openapi
from services.ingest.config import IngestSettings
from services.ingest.keys import upload_key
from services.ingest.params import parse_options
from services.ingest.start import Uploader, param_defaults

FORM_OVERHEAD = 64 * 1024
"""Room for multipart headers and the option fields on top of the file size limit."""


class _BodyTooLarge(Exception):  # noqa: N818 - internal signal, never leaves this module
    pass


def uploads_router(settings: IngestSettings) -> APIRouter:
    """The upload route; its documented form offers the engines, qualities and models of `settings`."""
    router = APIRouter()
    defaults = param_defaults(settings)

    @router.post(
        "/api/upload",
        status_code=202,
        summary="Upload a video and start a job",
        openapi_extra=upload_form_openapi(settings, defaults),
        responses={
            413: {"description": "over the size limit"},
            422: {"description": "bad options or form"},
        },
    )
    async def upload(request: Request, caller: CurrentCaller, deps: Deps) -> JSONResponse:
        """Stream the file to the incoming bucket and start its job; 202 with the job's URLs."""
        limit = deps.settings.max_upload_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit + FORM_OVERHEAD:
            raise ApiError(413, "E_UPLOAD_TOO_LARGE", _too_large(limit))
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await request.receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit + FORM_OVERHEAD:
                    raise _BodyTooLarge
            return message

        try:
            form = await Request(request.scope, limited_receive).form(max_files=1, max_fields=16)
        except _BodyTooLarge:
            metrics.UPLOAD_BYTES.inc(received)
            raise ApiError(413, "E_UPLOAD_TOO_LARGE", _too_large(limit)) from None
        except (MultiPartException, AssertionError, KeyError) as exc:
            raise ApiError(
                422, "E_REQUEST_INVALID", f"send multipart/form-data with a 'file' ({exc})"
            ) from None
        try:
            metrics.UPLOAD_BYTES.inc(received)
            file = form.get("file")
            if not isinstance(file, UploadFile):
                raise ApiError(422, "E_REQUEST_INVALID", "send the video as the multipart field 'file'")
            size = file.size or 0
            if size > limit:
                raise ApiError(413, "E_UPLOAD_TOO_LARGE", _too_large(limit))
            # The edge: the form fields are parsed here, once, into the models the job carries.
            fields = {name: value for name in OPTION_FIELDS if isinstance(value := form.get(name), str)}
            options = parse_options(fields, defaults)
            if options.error is not None:
                raise ApiError(422, options.error.code, options.error.message)
            key = (caller.tenant.bucket_prefix if caller.tenant else "") + upload_key(file.filename)
            file.file.seek(0)
            record = await deps.starter.store_upload(
                file.file,
                bucket=deps.settings.incoming_bucket,
                key=key,
                size=size,
                content_type=file.content_type or "application/octet-stream",
                options=options,
            )
        finally:
            await form.close()
        started = await deps.starter.start_upload(
            record, options=options, uploader=Uploader(caller.tenant_id)
        )
        return JSONResponse(
            {
                "job_id": str(started.job_id),
                "status": started.status,
                "key": key,
                "status_url": f"/api/status/{started.job_id}",
                "download_url": f"/api/download/{started.job_id}",
            },
            status_code=202,
        )

    return router


def _too_large(limit: int) -> str:
    return f"the upload is over the limit of {limit} bytes; send a smaller file"
