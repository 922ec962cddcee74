"""The HTTP service (FastAPI): ``POST /predict``, ``GET /health``, ``GET /metadata``.

Concurrent requests are micro-batched into one forward pass (:mod:`taskloom.serve.batching`).
Bad input is answered 4xx naming the field and row (400 unreadable JSON, 413 too large,
422 wrong shape, type or value), never 500; a full queue answers 503 with ``Retry-After``.
Needs ``pip install "taskloom[serve]"``.
"""
from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import asdict, dataclass
from typing import Any, AsyncIterator

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from taskloom.serve.batching import MicroBatcher, Overloaded
from taskloom.serve.encoding import InputError
from taskloom.serve.predictor import Predictor, rows_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeLimits:
    """What protects the server: body size, rows per request, micro-batch size and wait, queue length."""

    max_body_bytes: int = 1_048_576
    max_rows_per_request: int = 4096
    max_batch_rows: int = 256
    max_wait_ms: float = 2.0
    max_pending: int = 256
    retry_after_seconds: int = 1


class PredictRequest(BaseModel):
    rows: list[dict[str, Any]] = Field(description="one JSON object per row: feature column -> value; "
                                                   "other keys are ignored")


class PredictResponse(BaseModel):
    tasks: list[str] = Field(description="the tasks predicted, in order")
    predictions: list[dict[str, Any]] = Field(description="one object per row: per task its prediction, "
                                                          "then its probabilities (<task>_prob...)")


class Health(BaseModel):
    status: str
    tasks: list[str]
    checkpoint: str


class _NonFinite(str):
    """A NaN / Infinity constant in the request body (JSON has none): refused with its row and field."""


def _error(status: int, message: str, field: str | None = None, row: int | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": {"message": message, "field": field, "row": row}}, status_code=status,
                        headers=headers)


async def _read_body(request: Request, limit: int) -> bytes | JSONResponse:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return _error(413, f"the body has {int(declared)} bytes; the limit is {limit}: send fewer rows per request",
                      field="body")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return _error(413, f"the body exceeds the limit of {limit} bytes: send fewer rows per request",
                          field="body")
    return bytes(body)


def _rows(payload: Any, max_rows: int) -> list[dict[str, Any]] | JSONResponse:
    rows = payload.get("rows") if isinstance(payload, dict) else payload if isinstance(payload, list) else None
    if rows is None or not isinstance(rows, list):
        return _error(422, 'the body must be {"rows": [{column: value, ...}, ...]} (or a list of row objects)',
                      field="rows")
    if not rows:
        return _error(422, "rows is empty; send at least one row", field="rows")
    if len(rows) > max_rows:
        return _error(413, f"{len(rows)} rows in one request; the limit is {max_rows}", field="rows")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            return _error(422, f"rows[{i}] is a {type(row).__name__}, not an object of column -> value",
                          field="rows", row=i)
        for key, value in row.items():
            if isinstance(value, _NonFinite):
                return _error(422, f"rows[{i}].{key}: {value} is not a finite number", field=key, row=i)
    return rows


def create_app(predictor: Predictor, limits: ServeLimits | None = None) -> FastAPI:
    """The FastAPI application serving ``predictor`` (see the module docstring)."""
    limits = limits or ServeLimits()
    if predictor.encoder is None:
        raise ValueError("the HTTP server takes JSON rows, so it serves models trained on a table; "
                         "use taskloom.load(RUN_DIR).predict(tensor) for this model")
    batcher = MicroBatcher(predictor.outputs, limits.max_batch_rows, limits.max_wait_ms / 1000, limits.max_pending)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="taskloom model server", lifespan=lifespan,
                  description=f"Every task of {predictor.model_dir} from one forward pass: "
                              f"{', '.join(predictor.task_names)}.")
    app.state.predictor, app.state.batcher, app.state.limits = predictor, batcher, limits

    @app.get("/health", response_model=Health)
    async def health() -> Health:
        return Health(status="ok", tasks=predictor.task_names, checkpoint=predictor.checkpoint)

    @app.get("/metadata")
    async def metadata() -> dict[str, Any]:
        """Tasks, kinds, classes, thresholds, expected columns and types, test metrics, serving limits."""
        return {**predictor.metadata(), "limits": asdict(limits), "batching": batcher.stats()}

    @app.post("/predict", response_model=PredictResponse, responses={
        400: {"description": "the body is not JSON"}, 413: {"description": "body or row count over the limit"},
        422: {"description": "a row lacks a column, or holds a wrong type, a non-finite number or an unknown "
                             "category; the detail names the field and row"},
        503: {"description": "the queue is full; retry after Retry-After seconds"}},
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": PredictRequest.model_json_schema()}}}})
    async def predict(request: Request, tasks: str | None = Query(
            None, description="comma-separated tasks to return (default: all main tasks; the forward pass is "
                               "shared)")) -> Any:
        """Predictions for rows given as JSON objects, every task from one (micro-batched) forward pass."""
        body = await _read_body(request, limits.max_body_bytes)
        if isinstance(body, JSONResponse):
            return body
        try:
            payload = json.loads(body, parse_constant=_NonFinite)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            return _error(400, f"the body is not valid JSON ({error})", field="body")
        rows = _rows(payload, limits.max_rows_per_request)
        if isinstance(rows, JSONResponse):
            return rows
        try:
            names = predictor.pick_tasks([t.strip() for t in tasks.split(",") if t.strip()] if tasks else None)
            inputs = predictor.encode_records(rows)
        except InputError as error:
            return _error(422, error.message, field=error.field, row=error.row)
        try:
            outputs = await batcher.submit(inputs)
        except Overloaded as error:
            return _error(503, f"the server is busy ({error}); retry shortly", field=None,
                          headers={"Retry-After": str(limits.retry_after_seconds)})
        return JSONResponse({"tasks": names, "predictions": rows_of(predictor.columns(outputs, names))})

    return app


def serve(predictor: Predictor, host: str = "127.0.0.1", port: int = 8000, limits: ServeLimits | None = None,
          log_level: str = "warning") -> None:
    """Run the server with uvicorn until interrupted (127.0.0.1 by default: not reachable from other machines)."""
    import uvicorn

    uvicorn.run(create_app(predictor, limits), host=host, port=port, log_level=log_level, access_log=False)


__all__ = ["PredictRequest", "PredictResponse", "ServeLimits", "create_app", "serve"]
