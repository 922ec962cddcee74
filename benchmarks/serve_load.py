"""Load test of `taskloom serve` against the model's batched forward, on 127.0.0.1 only.

Starts a real uvicorn server (`python -m taskloom serve RUN_DIR`) in a subprocess bound to
127.0.0.1, sends ``--requests`` rows (raw rows of Adult's test file), one per request unless
``--rows-per-request`` says otherwise, at each concurrency, and reports throughput (requests/s
and rows/s), p50/p99 latency, errors, the server's
mean rows per forward pass, and the ratio against calling the same predictor directly on the
same rows: one batched call (encode + one forward + answers) and one call per row. Every
request has a timeout and the whole run a deadline. Without RUN_DIR it first trains the Adult
MLP of examples/adult.yaml for ``--epochs`` epochs. Prints JSON.

Run: python benchmarks/serve_load.py [RUN_DIR] [--requests 2000] [--concurrency 1,8,32]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import torch

import taskloom

ROOT = Path(__file__).resolve().parents[1]


def train_adult(epochs: int, output: Path) -> Path:
    from taskloom.config import load_config, parse_config
    from taskloom.train.runner import run_training

    data = load_config(ROOT / "examples" / "adult.yaml").model_dump()
    data["train"]["epochs"], data["output_dir"] = epochs, str(output)
    return Path(run_training(parse_config(data))["run_dir"])


def adult_rows(count: int, columns: list[str]) -> list[dict[str, Any]]:
    """The first ``count`` rows of adult.test as JSON records of the model's feature columns."""
    from taskloom.data.datasets.adult import adult_dir, read_adult

    frame = read_adult(adult_dir() / "adult.test", skip_first=True)
    frame = frame.iloc[[i % len(frame) for i in range(count)]][columns]
    return json.loads(frame.to_json(orient="records"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(run_dir: Path, port: int, args: argparse.Namespace) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "taskloom", "serve", str(run_dir), "--host", "127.0.0.1", "--port", str(port),
               "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited: {server.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.2)
    server.terminate()
    raise RuntimeError("the server did not answer /health within 60 s")


class Connection:
    """A minimal HTTP/1.1 keep-alive client (the load generator must cost the shared CPUs less than httpx does)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = next(int(line.split(":", 1)[1]) for line in lines[1:] if line.lower().startswith("content-length:"))
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def load(port: int, rows: list[dict[str, Any]], concurrency: int, timeout: float,
               per_request: int = 1) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    starts = range(0, len(rows), per_request)
    answers: list[Any] = [None] * len(starts)
    bodies = [json.dumps({"rows": rows[i:i + per_request]}).encode() for i in starts]
    position = iter(range(len(bodies)))

    async def worker() -> None:
        nonlocal errors
        connection = Connection(port)
        try:
            for i in position:
                started = time.perf_counter()
                try:
                    status, body = await asyncio.wait_for(connection.post("/predict", bodies[i]), timeout)
                    if status == 200:
                        answers[i] = json.loads(body)["predictions"]
                    else:
                        errors += 1
                except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
                    errors += 1
                    await connection.close()
                    connection = Connection(port)
                latencies.append(time.perf_counter() - started)
        finally:
            await connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    ordered = sorted(latencies)
    return {"concurrency": concurrency, "requests": len(bodies), "rows": len(rows), "errors": errors,
            "seconds": seconds, "requests_per_second": len(bodies) / seconds, "rows_per_second": len(rows) / seconds,
            "p50_ms": 1000 * ordered[len(ordered) // 2], "p99_ms": 1000 * ordered[int(0.99 * (len(ordered) - 1))],
            "answers": [row for answer in answers for row in (answer or [None] * per_request)]}


def compare_answers(answers: list[Any], expected: list[dict[str, Any]]) -> dict[str, Any]:
    """Labels must be equal; probabilities differ only by float32 rounding (a batch of 1 and of 32 take other
    BLAS paths), so their largest difference is reported."""
    labels = all(a is not None and all(a[k] == e[k] for k in e if not k.endswith(("_prob",)) and "_prob_" not in k)
                 for a, e in zip(answers, expected))
    worst = max((abs(a[k] - e[k]) for a, e in zip(answers, expected) if a is not None for k in e
                 if isinstance(e[k], float)), default=0.0)
    return {"labels_identical_to_direct": labels, "max_abs_difference_to_direct": worst}


def direct(predictor: taskloom.Predictor, rows: list[dict[str, Any]], repeats: int = 5) -> dict[str, Any]:
    """The same rows through the predictor in-process: batched (best of ``repeats``) and one call per row."""
    torch.set_num_threads(1)
    batched = []
    for _ in range(repeats):
        started = time.perf_counter()
        expected = predictor.predict_records(rows)
        batched.append(time.perf_counter() - started)
    inputs = predictor.encode_records(rows)
    forward = []
    for _ in range(repeats):
        started = time.perf_counter()
        predictor.outputs(inputs)
        forward.append(time.perf_counter() - started)
    started = time.perf_counter()
    for row in rows[:500]:
        predictor.predict_records([row])
    per_row = (time.perf_counter() - started) / min(500, len(rows))
    return {"batched_rows_per_second": len(rows) / min(batched),
            "forward_only_rows_per_second": len(rows) / min(forward),
            "one_call_per_row_rows_per_second": 1 / per_row, "expected": expected}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", help="a trained table run (default: train examples/adult.yaml)")
    parser.add_argument("--requests", type=int, default=2000, help="rows sent at each concurrency")
    parser.add_argument("--rows-per-request", type=int, default=1)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--epochs", type=int, default=2, help="epochs when training Adult here")
    parser.add_argument("--max-batch", type=int, default=256)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    parser.add_argument("--deadline", type=float, default=600.0, help="seconds for each concurrency level")
    args = parser.parse_args()
    scratch = tempfile.TemporaryDirectory()
    run_dir = Path(args.run_dir) if args.run_dir else train_adult(args.epochs, Path(scratch.name))
    predictor = taskloom.load(run_dir)
    rows = adult_rows(args.requests, predictor.feature_columns)
    baseline = direct(predictor, rows)
    expected = baseline.pop("expected")
    port = free_port()
    server = start_server(run_dir, port, args)
    levels = []
    try:
        asyncio.run(load(port, rows[:200], 4, args.timeout))  # warm-up, not reported
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            before = httpx.get(f"http://127.0.0.1:{port}/metadata").json()["batching"]
            result = asyncio.run(asyncio.wait_for(load(port, rows, concurrency, args.timeout, args.rows_per_request),
                                                  args.deadline))
            after = httpx.get(f"http://127.0.0.1:{port}/metadata").json()["batching"]
            answers = result.pop("answers")
            batches = after["batches"] - before["batches"]
            result["mean_rows_per_forward"] = (after["rows"] - before["rows"]) / batches if batches else None
            result.update(compare_answers(answers, expected))
            result["ratio_to_direct_batched"] = result["rows_per_second"] / baseline["batched_rows_per_second"]
            result["ratio_to_one_call_per_row"] = (result["rows_per_second"]
                                                   / baseline["one_call_per_row_rows_per_second"])
            levels.append(result)
    finally:
        server.terminate()
        server.wait(10)
        scratch.cleanup()
    print(json.dumps({
        "benchmark": "serve_load", "run_dir": str(run_dir), "model": predictor.spec["architecture"],
        "trunk": predictor.spec["trunk"], "host": "127.0.0.1", "requests_per_level": args.requests,
        "rows_per_request": args.rows_per_request, "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms,
        "direct": baseline, "levels": levels, "machine": platform.platform(), "cpus": os.cpu_count(),
        "torch_threads": 1,
    }, indent=2))


if __name__ == "__main__":
    main()
