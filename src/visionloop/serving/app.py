"""The REST API of `visionloop serve` (FastAPI):

- `POST /v1/predict`: multipart/form-data (one or many files, any field name), JSON
  `{"images": ["<base64>", ...]}` (or `[{"name": ..., "data": "<base64>"}]`), or one raw image
  body (`Content-Type: image/*` or `application/octet-stream`). Query or JSON `top_k`,
  `probabilities`.
- `GET /v1/model`: the model served (name, version, alias, classes, input size, runtime) and
  what following the alias last found; `GET /healthz`; `GET /metrics` (Prometheus text).

Every refusal is JSON `{"error": {"reason": "<code>", "message": "..."}}` with a 4xx/5xx
status (serving.reasons); no response carries a traceback.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from visionloop.artifacts.prediction_log import PredictionLog, now_iso
from visionloop.config import Config, IngestConfig
from visionloop.serving.batcher import MicroBatcher
from visionloop.serving.follow import Follower, ModelHolder
from visionloop.serving.inputs import ModelImage, stack, to_model_image
from visionloop.serving.metrics import Metrics
from visionloop.serving.reasons import BadImage, RequestReason, RequestRefused
from visionloop.serving.results import describe, probabilities
from visionloop.serving.source import LoadedModel

log = logging.getLogger(__name__)
RAW_TYPES = ("image/", "application/octet-stream")
REQUEST_ID = re.compile(r"[\w.:-]{1,128}")
# Requests this small decode on the event loop (under a millisecond: a 16 KB JPEG is about
# 200 x 200 px), cheaper than a hand-off to a thread and back; larger ones go to the
# decoding threads, so a big photo never holds up other requests.
INLINE_DECODE_BYTES = 16 * 1024


@dataclass
class ServerState:
    config: Config
    holder: ModelHolder
    follower: Follower | None
    batcher: MicroBatcher
    metrics: Metrics
    prediction_log: PredictionLog
    rules: IngestConfig
    decoders: ThreadPoolExecutor


@dataclass(frozen=True)
class Upload:
    name: str
    data: bytes


def create_app(state: ServerState) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.batcher.start()
        if state.follower is not None:
            state.follower.start()
        yield
        if state.follower is not None:
            await asyncio.to_thread(state.follower.stop)
        await state.batcher.stop()
        state.decoders.shutdown(wait=False)

    # No /docs page: it loads its scripts from a CDN. The schema is at /openapi.json.
    app = FastAPI(title="visionloop", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.visionloop = state
    add_error_handlers(app, state.metrics)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)

    @app.post("/v1/predict")
    async def predict(request: Request) -> JSONResponse:
        return await predict_request(state, request)

    @app.get("/v1/model")
    async def model() -> dict[str, Any]:
        follow = state.follower.status.as_dict() if state.follower else None
        return {**state.holder.current.describe(), "following": follow}

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        current = state.holder.current
        return {"status": "ok", "model": current.ref.name, "version": current.version}

    @app.get("/metrics")
    async def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(state.metrics.text(), media_type=CONTENT_TYPE_LATEST)

    return app


# ---- POST /v1/predict --------------------------------------------------------------------------


async def predict_request(state: ServerState, request: Request) -> JSONResponse:
    model = state.holder.current  # this request's model, whatever a swap does meanwhile
    limits = state.config.serving.limits
    request_id = request_id_of(request)
    with state.batcher.expecting():
        body = await read_body(request, limits.max_request_bytes)
        uploads, options = await parse_body(request, body, limits.max_images_per_request)
        images = await decode_uploads(state, uploads, model)
    batch = stack([image.pixels for image in images], model.meta.image_size)
    probs = await state.batcher.predict(model, batch)
    state.metrics.images.inc(len(images))
    predictions = [
        answer(upload, image, row, model, options, state.config.serving.top_k)
        for upload, image, row in zip(uploads, images, probs, strict=True)
    ]
    record = (state, model, request_id, uploads, images, predictions)
    if state.config.serving.keep_images:  # files written and fsynced: not on the loop
        await asyncio.to_thread(log_predictions, *record)
    else:  # one short append
        log_predictions(*record)
    served = {"name": model.ref.name, "version": model.version, "runtime": model.runtime.name}
    return JSONResponse(
        {"request_id": request_id, "model": served, "predictions": predictions},
        headers={"x-request-id": request_id},
    )


def answer(
    upload: Upload,
    image: ModelImage,
    probs,
    model: LoadedModel,
    options: dict[str, Any],
    default_top_k: int,
) -> dict[str, Any]:
    classes = model.meta.classes
    entry = {
        "name": upload.name,
        "sha256": image.screened.sha256,
        **describe(probs, classes, options.get("top_k") or default_top_k),
    }
    if options.get("probabilities"):
        entry["probabilities"] = probabilities(probs, classes)
    return entry


def request_id_of(request: Request) -> str:
    """The client's X-Request-ID when it is a plain token (it goes into the log), else new."""
    given = request.headers.get("x-request-id", "")
    return given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large(int(declared), limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(size, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def too_large(size: int, limit: int) -> RequestRefused:
    return RequestRefused(
        RequestReason.REQUEST_TOO_LARGE,
        f"the request body is {size} bytes or more, above serving.limits.max_request_bytes "
        f"({limit}); send fewer or smaller images per request",
    )


async def parse_body(
    request: Request, body: bytes, max_images: int
) -> tuple[list[Upload], dict[str, Any]]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    options = query_options(request)
    if content_type == "multipart/form-data":
        uploads = await multipart_uploads(request, body, max_images)
    elif content_type == "application/json":
        uploads, json_options = json_uploads(body)
        options.update(json_options)
    elif content_type.startswith(RAW_TYPES):
        uploads = [Upload("body", body)] if body else []
    else:
        raise RequestRefused(
            RequestReason.UNSUPPORTED_MEDIA_TYPE,
            f"Content-Type {content_type or '(none)'} is not accepted; send multipart/form-data "
            'files, JSON {"images": ["<base64>"]}, or one image body (image/*)',
        )
    if not uploads:
        raise RequestRefused(RequestReason.EMPTY_REQUEST, "the request holds no image")
    if len(uploads) > max_images:
        raise RequestRefused(
            RequestReason.TOO_MANY_IMAGES,
            f"{len(uploads)} images in one request, above serving.limits.max_images_per_request "
            f"({max_images}); split the request",
        )
    return uploads, options


def query_options(request: Request) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if "top_k" in request.query_params:
        options["top_k"] = positive_int(request.query_params["top_k"], "top_k")
    if "probabilities" in request.query_params:
        options["probabilities"] = request.query_params["probabilities"].lower() in ("1", "true")
    return options


def positive_int(value: Any, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1 or isinstance(value, bool):
        raise RequestRefused(RequestReason.BAD_PARAMETER, f"{name} must be a positive integer")
    return number


async def multipart_uploads(request: Request, body: bytes, max_images: int) -> list[Upload]:
    async def stream() -> AsyncIterator[bytes]:
        yield body

    # One file over the limit still parses, so the answer can name the limit (too_many_images).
    parser = MultiPartParser(request.headers, stream(), max_files=max_images + 1, max_fields=100)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        reason = RequestReason.TOO_MANY_IMAGES if "Too many files" in exc.message else None
        raise RequestRefused(
            reason or RequestReason.BAD_MULTIPART, f"multipart body: {exc.message}"
        ) from None
    uploads = []
    for index, (_, value) in enumerate(form.multi_items()):
        if isinstance(value, UploadFile):
            uploads.append(Upload(value.filename or f"file{index}", await value.read()))
            await value.close()
    return uploads


def json_uploads(body: bytes) -> tuple[list[Upload], dict[str, Any]]:
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestRefused(RequestReason.BAD_JSON, f"the body is not valid JSON: {exc}") from None
    images = payload.get("images") if isinstance(payload, dict) else None
    if not isinstance(images, list):
        raise RequestRefused(
            RequestReason.BAD_JSON,
            'expected a JSON object {"images": ["<base64>", ...]} '
            '(or [{"name": "...", "data": "<base64>"}])',
        )
    uploads = [json_upload(index, entry) for index, entry in enumerate(images)]
    options: dict[str, Any] = {}
    if payload.get("top_k") is not None:
        options["top_k"] = positive_int(payload["top_k"], "top_k")
    if payload.get("probabilities") is not None:
        options["probabilities"] = bool(payload["probabilities"])
    return uploads, options


def json_upload(index: int, entry: Any) -> Upload:
    name, data = f"image{index}", entry
    if isinstance(entry, dict):
        name, data = str(entry.get("name") or name), entry.get("data")
    if not isinstance(data, str):
        raise RequestRefused(RequestReason.BAD_JSON, f"image {index}: expected a base64 string")
    try:
        return Upload(name, base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError):
        raise RequestRefused(
            RequestReason.BAD_BASE64, f"image {index} ({name}): not valid base64"
        ) from None


async def decode_uploads(
    state: ServerState, uploads: list[Upload], model: LoadedModel
) -> list[ModelImage]:
    """Decode in the decoding threads; a small body on the loop itself, where it takes less
    time than handing it to a thread and back (measured in bench/serve.py)."""
    if sum(len(upload.data) for upload in uploads) <= INLINE_DECODE_BYTES:
        return decode_all(uploads, model, state.rules)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(state.decoders, decode_all, uploads, model, state.rules)


def decode_all(uploads: list[Upload], model: LoadedModel, rules: IngestConfig) -> list[ModelImage]:
    images = []
    for index, upload in enumerate(uploads):
        try:
            images.append(
                to_model_image(upload.data, model.meta.image_size, model.meta.resize, rules)
            )
        except BadImage as exc:
            raise RequestRefused(exc.reason, f"image {index} ({upload.name}): {exc}") from None
    return images


def log_predictions(
    state: ServerState,
    model: LoadedModel,
    request_id: str,
    uploads: list[Upload],
    images: list[ModelImage],
    predictions: list[dict[str, Any]],
) -> None:
    keep = state.config.serving.keep_images
    time_now = now_iso()
    records = []
    for upload, image, entry in zip(uploads, images, predictions, strict=True):
        screened = image.screened
        stored = keep and state.prediction_log.keep_image(
            screened.sha256, screened.format, upload.data
        )
        records.append(
            {
                "time": time_now,
                "request_id": request_id,
                "sha256": screened.sha256,
                "model": model.ref.name,
                "version": model.version,
                "runtime": model.runtime.name,
                "label": entry["label"],
                "confidence": entry["confidence"],
                "top_k": entry["top_k"],
                "width": screened.width,
                "height": screened.height,
                "format": screened.format,
                "stored": bool(stored),
            }
        )
    state.prediction_log.append(records)


# ---- errors and metrics ----------------------------------------------------------------------


def error_response(reason: str, message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": {"reason": reason, "message": message}}, status_code=status)


def add_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    @app.exception_handler(RequestRefused)
    async def refused(request: Request, exc: RequestRefused) -> JSONResponse:
        metrics.errors.labels(exc.reason).inc()
        return error_response(exc.reason, str(exc), exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        reason = {404: RequestReason.NOT_FOUND, 405: RequestReason.METHOD_NOT_ALLOWED}.get(
            exc.status_code, RequestReason.BAD_PARAMETER
        )
        metrics.errors.labels(reason).inc()
        return error_response(
            reason, f"{request.method} {request.url.path}: {exc.detail}", exc.status_code
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        metrics.errors.labels(RequestReason.INTERNAL_ERROR).inc()
        return error_response(
            RequestReason.INTERNAL_ERROR, "the server failed on this request; see its log", 500
        )


class MetricsMiddleware:
    """Counts every answer by endpoint and status and times it (a plain ASGI middleware:
    cheaper than BaseHTTPMiddleware, and it sees the status of error responses too)."""

    KNOWN = ("/v1/predict", "/v1/model", "/healthz", "/metrics")

    def __init__(self, app, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"] if scope["path"] in self.KNOWN else "other"
        started = time.perf_counter()
        status = {"code": 500}

        async def send_with_status(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            self.metrics.requests.labels(path, str(status["code"])).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - started)
