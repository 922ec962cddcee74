"""The HTTP server (in process): endpoints, micro-batching, the bounded queue, and a bad-input matrix."""
from __future__ import annotations

import asyncio
import json
import threading

import numpy as np
import pytest
import torch

import taskloom

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from taskloom.serve.app import ServeLimits, create_app  # noqa: E402
from taskloom.serve.batching import MicroBatcher, Overloaded  # noqa: E402

GOOD = {"age": 40.0, "income": 55.0, "channel": "web"}


@pytest.fixture(scope="module")
def predictor(plain_run):
    return taskloom.load(plain_run[0], unknown="error")


@pytest.fixture(scope="module")
def client(predictor):
    limits = ServeLimits(max_body_bytes=4096, max_rows_per_request=20)
    with TestClient(create_app(predictor, limits)) as client:
        yield client


def test_health_metadata_and_openapi(client, plain_run):
    assert client.get("/health").json() == {"status": "ok", "tasks": ["churn", "segment", "spend"],
                                            "checkpoint": "best"}
    meta = client.get("/metadata").json()
    kinds = {t["name"]: t["kind"] for t in meta["tasks"]}
    assert kinds == {"churn": "binary", "segment": "multiclass", "spend": "regression"}
    assert meta["columns"]["channel"]["values"] == ["<missing>", "phone", "store", "web"]
    assert meta["columns"]["age"]["type"] == "number"
    results = json.loads((plain_run[0] / "hard+equal" / "seed0" / "results.json").read_text())
    assert meta["test_metrics"] == results["test"]
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "rows" in body["properties"]
    assert "PredictResponse" in json.dumps(schema["paths"]["/predict"]["post"]["responses"]["200"])


def test_predict_returns_every_task_and_a_chosen_subset(client, predictor):
    rows = [GOOD, {**GOOD, "channel": None, "age": 70}]
    answer = client.post("/predict", json={"rows": rows})
    assert answer.status_code == 200
    expected = predictor.predict_records(rows)
    assert answer.json() == {"tasks": ["churn", "segment", "spend"], "predictions": expected}
    subset = client.post("/predict?tasks=spend", json={"rows": rows}).json()
    assert subset["predictions"] == [{"spend": e["spend"]} for e in expected]
    assert client.post("/predict", json=rows).json()["predictions"] == expected  # a bare list of rows also works


def _post(client, body):
    if isinstance(body, (bytes, str)):
        return client.post("/predict", content=body, headers={"content-type": "application/json"})
    return client.post("/predict", json=body)


BAD_REQUESTS = [
    # (case, body or raw bytes, query, status, field, row)
    ("missing column", {"rows": [GOOD, {"age": 30, "channel": "web"}]}, "", 422, "income", 1),
    ("text in a numeric column", {"rows": [{**GOOD, "age": "forty"}]}, "", 422, "age", 0),
    ("NaN literal", b'{"rows": [{"age": NaN, "income": 1, "channel": "web"}]}', "", 422, "age", 0),
    ("Infinity literal", b'{"rows": [{"age": 1, "income": -Infinity, "channel": "web"}]}', "", 422, "income", 0),
    ("infinite number as text", {"rows": [GOOD, GOOD, {**GOOD, "income": "inf"}]}, "", 422, "income", 2),
    ("empty numeric cell", {"rows": [{**GOOD, "age": None}]}, "", 422, "age", 0),
    ("unseen category", {"rows": [{**GOOD, "channel": "fax"}]}, "", 422, "channel", 0),
    ("object as a category", {"rows": [{**GOOD, "channel": {"a": 1}}]}, "", 422, "channel", 0),
    ("list as a number", {"rows": [{**GOOD, "age": [1, 2]}]}, "", 422, "age", 0),
    ("row is not an object", {"rows": [GOOD, 3]}, "", 422, "rows", 1),
    ("rows is not a list", {"rows": "all"}, "", 422, "rows", None),
    ("no rows", {"rows": []}, "", 422, "rows", None),
    ("unknown task", {"rows": [GOOD]}, "?tasks=spend,profit", 422, "tasks", None),
    ("not JSON", b'{"rows": [', "", 400, "body", None),
    ("body too large", {"rows": [{**GOOD, "note": "x" * 5000}]}, "", 413, "body", None),
    ("too many rows", {"rows": [GOOD] * 21}, "", 413, "rows", None),
]


@pytest.mark.parametrize("case, body, query, status, field, row", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_requests_get_a_4xx_naming_the_field_and_row(client, case, body, query, status, field, row):
    if isinstance(body, bytes):
        answer = client.post(f"/predict{query}", content=body, headers={"content-type": "application/json"})
    else:
        answer = client.post(f"/predict{query}", json=body)
    assert answer.status_code == status, answer.text
    detail = answer.json()["detail"]
    assert detail["field"] == field and detail["row"] == row
    assert field in detail["message"] or field == "body" and "body" in detail["message"]
    if row is not None:
        assert f"row {row}" in detail["message"] or f"rows[{row}]" in detail["message"]
    assert client.post("/predict", json={"rows": [GOOD]}).status_code == 200  # and it keeps serving


def test_concurrent_requests_share_one_forward_pass():
    seen = []

    def forward(inputs):
        seen.append(len(inputs))
        return {"double": (inputs * 2).numpy()}

    async def scenario():
        batcher = MicroBatcher(forward, max_rows=64, max_wait=0.5, max_pending=64)
        await batcher.start()
        try:
            inputs = [torch.full((1, 1), float(i)) for i in range(10)]
            return await asyncio.gather(*(batcher.submit(x) for x in inputs))
        finally:
            await batcher.stop()

    answers = asyncio.run(scenario())
    assert seen == [10]  # ten requests, one forward pass
    assert [float(a["double"][0, 0]) for a in answers] == [2.0 * i for i in range(10)]  # each got its own rows


def test_a_batch_stops_at_max_rows():
    seen = []

    async def scenario():
        batcher = MicroBatcher(lambda x: seen.append(len(x)) or {"x": x.numpy()}, max_rows=4, max_wait=0.5,
                               max_pending=64)
        await batcher.start()
        try:
            await asyncio.gather(*(batcher.submit(torch.zeros(1, 1)) for _ in range(10)))
        finally:
            await batcher.stop()

    asyncio.run(scenario())
    assert seen == [4, 4, 2]


def test_a_full_queue_is_refused_at_once():
    release = threading.Event()

    def forward(inputs):
        release.wait(5)
        return {"x": inputs.numpy()}

    async def scenario():
        batcher = MicroBatcher(forward, max_rows=1, max_wait=0.0, max_pending=1)
        await batcher.start()
        try:
            first = asyncio.ensure_future(batcher.submit(torch.zeros(1, 1)))
            while batcher.pending:  # the worker took the first request and is stuck in its forward pass
                await asyncio.sleep(0.001)
            await asyncio.sleep(0.01)
            second = asyncio.ensure_future(batcher.submit(torch.ones(1, 1)))
            await asyncio.sleep(0.01)
            with pytest.raises(Overloaded):
                await batcher.submit(torch.ones(1, 1))
            release.set()
            return await first, await second
        finally:
            release.set()
            await batcher.stop()

    first, second = asyncio.run(scenario())
    assert first["x"].tolist() == [[0.0]] and second["x"].tolist() == [[1.0]]


def test_the_server_answers_503_with_retry_after_when_its_queue_is_full(predictor):
    release, entered = threading.Event(), threading.Event()
    app = create_app(predictor, ServeLimits(max_pending=1, max_batch_rows=1, max_wait_ms=0))
    original = app.state.batcher.forward

    def slow(inputs):
        entered.set()
        release.wait(5)
        return original(inputs)

    app.state.batcher.forward = slow
    with TestClient(app) as client:
        answers = {}
        def ask(name):
            answers[name] = client.post("/predict", json={"rows": [GOOD]})

        first = threading.Thread(target=ask, args=("first",))
        first.start()
        assert entered.wait(5)
        second = threading.Thread(target=ask, args=("second",))
        second.start()
        for _ in range(500):
            if app.state.batcher.pending:
                break
            threading.Event().wait(0.01)
        refused = client.post("/predict", json={"rows": [GOOD]})
        release.set()
        first.join(5)
        second.join(5)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert answers["first"].status_code == 200 and answers["second"].status_code == 200


def test_a_model_over_images_is_not_served_as_json_rows():
    class NoTable:
        encoder = None

    with pytest.raises(ValueError, match="serves models trained on a table"):
        create_app(NoTable())


def test_server_outputs_equal_the_direct_forward(client, predictor, plain_run):
    frame = plain_run[1].head(15)
    records = json.loads(frame[["age", "income", "channel"]].to_json(orient="records"))
    served = client.post("/predict", json={"rows": records}).json()["predictions"]
    direct = predictor.predict(frame)
    assert [r["churn"] for r in served] == direct.churn.tolist()
    np.testing.assert_array_equal([r["spend"] for r in served], direct.spend.to_numpy())
