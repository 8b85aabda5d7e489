"""The HTTP API (FastAPI; OpenAPI at /docs): upload, status, live events, download, health, web page.

Paths are the ones users of the first version know. Every error body is
`{"error": {"code": "E_…", "message": "…"}}`. One router per resource (`uploads`, `jobs`, `health`,
`web`), composed by `create_api`; the routers parse and answer, the work is `JobStarter`'s and the
repositories'. An upload is streamed to the incoming bucket under a key our code chooses and started at
once through the same `JobStarter` the bucket events use; the MinIO event that upload causes names the
same (bucket, key, etag), so it finds the job instead of making one.
"""

from services.ingest.api.app import create_api
from services.ingest.api.deps import ApiDeps
from services.ingest.api.health import kafka_admin_check

__all__ = ["ApiDeps", "create_api", "kafka_admin_check"]
