"""The FastAPI application of ``retinaseg serve``: the page (``static/``) and its JSON API.

Routes:

- ``GET /``: the page; ``GET /static/...``: its script and style sheet (no CDN, no build step);
- ``GET /api/models``: the bundled models and the default per modality;
- ``POST /api/segment``: multipart form with ``file`` (one image), optional ``model`` (``auto``
  or a bundled name) and ``mm_per_px``; answers :func:`retinaseg.serve.core.result_json`;
- ``GET /api/health``: ``{"status": "ok"}``.

Every error is a JSON object ``{"error": "<one sentence>"}`` with a 4xx status (a bad upload
400, too large 413, an archive 415) or 500 (a bug: never a traceback page). The upload is read
into memory with its size capped while it streams in (multipart parts are never spooled to
disk), and decoded from a per-request temporary folder that is removed afterwards. The page's
Content-Security-Policy allows only this server.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from retinaseg.errors import RetinasegError
from retinaseg.serve.core import (
    AUTO,
    Limits,
    ModelCache,
    UploadError,
    decode_upload,
    result_json,
    segment_and_measure,
)

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
"""The page: index.html, app.js and style.css."""
FORM_OVERHEAD = 64 * 1024
"""Bytes a multipart request may carry beyond the file (boundaries, headers, small fields)."""
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
                               "script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=SECURITY_HEADERS)


async def _capped(stream: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes."""
    seen = 0
    async for chunk in stream:
        seen += len(chunk)
        if seen > limit:
            raise UploadError(f"the upload is over the {limit / 2**20:.0f} MB limit per file.",
                              413)
        yield chunk


async def _read_form(request: Request, limits: Limits) -> tuple[str, bytes, dict[str, str]]:
    """(file name, file bytes, other fields) of a multipart request with one file, in memory."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise UploadError("send the image as multipart/form-data with a field named 'file'.")
    limit = limits.max_bytes + FORM_OVERHEAD
    if int(request.headers.get("content-length") or 0) > limit:
        raise UploadError(f"the upload is over the {limits.max_bytes / 2**20:g} MB limit per "
                          "file.", 413)
    parser = MultiPartParser(request.headers, _capped(request.stream(), limit), max_files=1,
                             max_fields=8, max_part_size=1024)
    parser.spool_max_size = limit  # keep the file part in memory: nothing written to disk
    try:
        form = await parser.parse()
    except MultiPartException as err:
        raise UploadError(f"the form could not be read: {err.message.rstrip('.')}.") from None
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise UploadError("the form has no image in a field named 'file'.")
    data = await upload.read()
    await upload.close()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    return upload.filename or "upload", data, fields


def _scale(text: str | None) -> float | None:
    """The optional ``mm_per_px`` field: empty is None, else a number (checked later)."""
    if text is None or not text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        raise UploadError(f"mm_per_px must be a number, not '{text[:40]}'.") from None


def _handlers(app: FastAPI) -> None:
    """Every error as ``{"error": sentence}``: never a traceback page."""

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, exc: UploadError) -> JSONResponse:
        return _error(exc.status, str(exc))

    @app.exception_handler(RetinasegError)
    async def user_error(request: Request, exc: RetinasegError) -> JSONResponse:
        return _error(400, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        text = "no such page" if exc.status_code == 404 else str(exc.detail)
        return _error(exc.status_code, f"{text[:200].rstrip('.')}.")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, "the request is not what this route takes.")

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request failed")
        return _error(500, f"internal error ({type(exc).__name__}); the server log has the "
                           "details.")


def _routes(app: FastAPI, limits: Limits, models: ModelCache, tmp_root: Path | None) -> None:
    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=SECURITY_HEADERS)

    @app.get("/api/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/models")
    async def model_list() -> dict[str, Any]:
        from retinaseg.inference.modality import DEFAULT_MODELS

        return {"auto": AUTO, "default": DEFAULT_MODELS,
                "models": [{"name": n, "summary": s} for n, s in models.available()],
                "max_bytes": limits.max_bytes, "max_pixels": limits.max_pixels}

    @app.post("/api/segment")
    async def segment(request: Request) -> JSONResponse:
        name, data, fields = await _read_form(request, limits)

        def work() -> dict[str, Any]:
            image = decode_upload(data, name, limits, tmp_root)
            r = segment_and_measure(image, name, models, fields.get("model") or AUTO,
                                    _scale(fields.get("mm_per_px")))
            return result_json(r)

        return JSONResponse(await run_in_threadpool(work), headers=SECURITY_HEADERS)


def create_app(limits: Limits | None = None, tmp_root: str | Path | None = None,
               models: ModelCache | None = None) -> FastAPI:
    """The web application.

    Args:
        limits: upload limits (default: 20 MB and 25 M pixels per image).
        tmp_root: where the per-request temporary folders go (default: the system's).
        models: the model cache (default: a new one; pass one to share loaded models).
    """
    app = FastAPI(title="retinaseg", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _handlers(app)
    _routes(app, limits or Limits(), models or ModelCache(),
            None if tmp_root is None else Path(tmp_root))

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        return response

    return app
