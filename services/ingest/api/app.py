"""`create_api`: the ingest HTTP API composed from its routers, middleware and error handlers."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.ingest import metrics
from services.ingest.api import health, jobs, web
from services.ingest.api.deps import ApiDeps
from services.ingest.api.errors import install_error_handlers
from services.ingest.api.uploads import uploads_router


class RequestMetrics:
    """Counts requests by route template and status (ASGI middleware; raw paths would be unbounded)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            metrics.API_REQUESTS.labels(getattr(route, "path", "unmatched"), str(status)).inc()


def create_api(deps: ApiDeps) -> FastAPI:
    """The ingest HTTP API over `deps` (works with uvicorn or an httpx `ASGITransport`)."""
    settings = deps.settings
    app = FastAPI(
        title="InfiniteFlow",
        summary="Raise the frame rate of videos: upload, follow the job, download the result.",
        version="1.0.0",
    )
    app.state.deps = deps
    app.add_middleware(RequestMetrics)
    if settings.cors_allowed_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_allowed_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "Last-Event-ID"],
            expose_headers=["Retry-After", "Location"],
            max_age=600,
        )
    install_error_handlers(app)
    app.include_router(uploads_router(settings))
    app.include_router(jobs.router)
    app.include_router(web.router)
    app.mount("/web", web.static_files(), name="web")
    app.include_router(health.router)
    return app
