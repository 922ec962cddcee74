"""Single-task vs hard+equal vs the ``taskloom auto`` winner on full MultiMNIST and Multi-Fashion, over seeds.

Per data set (configs in ``benchmarks/configs/``; needs ``make data``, files under ``$TASKLOOM_DATA``):
``taskloom auto`` searches on the validation split (seeded TPE, successive-halving pruning) over
architectures x balancing methods x learning rate, then its final stage trains the winner,
hard+equal and the single-task models over ``--seeds`` seeds and judges them on test (verdicts,
delta-m over seeds and test rows, Maninis et al. 2019). Published orientation: joint training
about 0.90/0.90 on MultiMNIST (Sener & Koltun 2018). Prints JSON; run with OMP_NUM_THREADS=1.

    python benchmarks/full_mnist_auto.py --epochs 10 --trials 10 --seeds 3 --out /tmp/figs_full > /tmp/figs_full/full.json
    python benchmarks/full_mnist_auto.py --summarize /tmp/figs_full/multimnist /tmp/figs_full/multifashion
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from taskloom.auto import SearchSpace, run_auto
from taskloom.config import load_config, parse_config

CONFIGS = Path(__file__).parent / "configs"
DATASETS = {"multimnist": "full_multimnist.yaml", "multifashion": "full_multifashion.yaml"}


def test_accuracies(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Per variant and task: the main test metric's mean and sd over seeds, from the final stage's compare.json."""
    analysis = json.loads((run_dir / "compare.json").read_text())["analysis"]
    return {name: {task: {"mean": row["mean"], "sd": row["std"], "n": row["n"]} for task, row in entry["tasks"].items()}
            for name, entry in analysis["variants"].items()}


def summarize(run_dir: Path, seconds: float | None = None) -> dict[str, Any]:
    """The figure's numbers of one auto run directory: accuracies, winner, delta-m intervals, verdicts."""
    auto = json.loads((run_dir / "auto.json").read_text())
    final = auto["final"]
    return {"run_dir": str(run_dir), "seconds": seconds, "trials": auto["counts"], "winner": auto["winner"],
            "winner_variant": final["variant"], "test_accuracy": test_accuracies(run_dir),
            "verdicts": final["verdicts"], "recommendation": auto["recommendation"]}


def run_one(dataset: str, out: Path, epochs: int, trials: int, seeds: int, space: SearchSpace,
            size: int | None) -> dict[str, Any]:
    data = load_config(CONFIGS / DATASETS[dataset]).model_dump()
    data["train"]["epochs"] = epochs
    data["output_dir"] = str(out)
    if size is not None:
        data["data"]["options"]["size"] = size
    config = parse_config(data, f"benchmarks/configs/{DATASETS[dataset]}")
    started = time.perf_counter()
    run_auto(config, space, run_dir=out / dataset, trials=trials, seeds=seeds)
    return summarize(out / dataset, time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="multimnist,multifashion")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--architectures", default="hard")
    parser.add_argument("--methods", default="equal,uncertainty,famo,pcgrad")
    parser.add_argument("--lr", default="3e-4,1e-2")
    parser.add_argument("--size", type=int, default=None, help="total composites (default: one per source image)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/figs_full"))
    parser.add_argument("--summarize", nargs="+", type=Path, help="only summarize these finished auto run directories")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.summarize:
        result: dict[str, Any] = {str(p): summarize(p) for p in args.summarize}
    else:
        low, high = (float(x) for x in args.lr.split(","))
        result = {"epochs": args.epochs, "trials": args.trials, "seeds": args.seeds, "lr": [low, high],
                  "architectures": args.architectures.split(","), "methods": args.methods.split(",")}
        for dataset in args.datasets.split(","):
            space = SearchSpace(architectures=args.architectures.split(","), methods=args.methods.split(","),
                                lr=(low, high))
            result[dataset] = run_one(dataset, args.out, args.epochs, args.trials, args.seeds, space, args.size)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
