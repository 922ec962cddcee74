"""Round trip on Adult: train, then predict adult.test's raw rows via the CLI, via Python and via a real server.

The three paths share one predictor; with the same batch composition (``--batch`` rows per CLI
chunk, per Python forward and per request, sent one at a time) their outputs must be identical.
Reports, per pair of paths, the rows whose labels differ and the largest probability difference.
Without RUN_DIR it trains examples/adult.yaml for ``--epochs`` epochs. Prints JSON.

Run: python benchmarks/round_trip.py [RUN_DIR] [--batch 1000]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

import taskloom
from taskloom.cli import main as cli
from taskloom.data.datasets.adult import adult_dir, read_adult

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import free_port, start_server, train_adult  # noqa: E402


def differences(a: pd.DataFrame, b: pd.DataFrame, columns: list[str]) -> dict[str, float]:
    labels = [c for c in columns if "_prob" not in c]
    probabilities = [c for c in columns if "_prob" in c]
    return {"rows_with_a_different_label": int((a[labels].to_numpy() != b[labels].to_numpy()).any(axis=1).sum()),
            "max_abs_probability_difference": float(np.max(np.abs(a[probabilities].to_numpy(float)
                                                                  - b[probabilities].to_numpy(float))))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        run_dir = Path(args.run_dir) if args.run_dir else train_adult(args.epochs, folder)
        rows = read_adult(adult_dir() / "adult.test", skip_first=True)  # raw rows, labels included
        rows.to_csv(folder / "adult_test.csv", index=False)
        with contextlib.redirect_stdout(sys.stderr):  # the CLI's progress bar; stdout is for the JSON
            assert cli(["predict", str(run_dir), str(folder / "adult_test.csv"), "--out", str(folder / "cli.csv"),
                        "--batch-size", str(args.batch)]) == 0
        via_cli = pd.read_csv(folder / "cli.csv")
        predictor = taskloom.load(run_dir)
        via_python = predictor.predict(pd.read_csv(folder / "adult_test.csv"), batch_size=args.batch)
        features = pd.read_csv(folder / "adult_test.csv")[predictor.feature_columns]
        records = json.loads(features.to_json(orient="records"))
        server_args = argparse.Namespace(max_batch=args.batch, max_wait_ms=2.0)
        port = free_port()
        server = start_server(run_dir, port, server_args)
        answers = []
        try:
            with httpx.Client(timeout=60) as client:
                for start in range(0, len(records), args.batch):
                    response = client.post(f"http://127.0.0.1:{port}/predict",
                                           json={"rows": records[start:start + args.batch]})
                    response.raise_for_status()
                    answers += response.json()["predictions"]
        finally:
            server.terminate()
            server.wait(10)
        via_server = pd.DataFrame(answers)
        columns = list(via_server.columns)
        identical = all(via_cli[c].tolist() == via_python[c].tolist() == via_server[c].tolist() for c in columns)
        print(json.dumps({
            "benchmark": "round_trip", "data": "adult.test (raw rows, 16,281)", "rows": len(via_server),
            "run_dir": str(run_dir), "batch": args.batch, "outputs": columns,
            "identical_cli_python_server": identical,
            "cli_vs_python": differences(via_cli, via_python, columns),
            "cli_vs_server": differences(via_cli, via_server, columns),
            "positives": {c: int(via_cli[c].sum()) for c in columns if "_prob" not in c},
            "label_columns_passed_through": [c for c in via_cli.columns if c.endswith("_input")],
        }, indent=2))


if __name__ == "__main__":
    main()
