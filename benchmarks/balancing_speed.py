"""Milliseconds per training step of every balancing method, and its ratio to taskloom's equal weighting.

Same model, data, batch and thread count for every method: a hard-sharing model with an
MLP 64-256-256 trunk and K regression heads at batch 256 (K = 4 and K = 40), or with
``--trunk resnet18`` a small ResNet-18 on 32x32 inputs with 2 ten-class heads, or with
``--trunk lenet`` taskloom's LeNet trunk on 1x36x36 (MultiMNIST-sized) inputs with K ten-class
heads (K = 2 and K = 10). Every
registered method runs in parameter mode, gradient methods also in representation mode.
Blocks of steps of a method alternate with blocks of equal weighting, so machine noise
hits both alike; the ratio is median over median. ``engine_floor`` is the per-task
gradient engine with a plain sum: the cost every gradient method pays before aggregating
(K backward passes through the trunk in parameter mode, one in representation mode).

TorchJD (0.18) and LibMTL run side by side on the same model, data and optimizer when
importable, each timed in blocks alternating with taskloom's equal weighting
(``ratio_to_taskloom_equal``). LibMTL's PyPI release is stale and does not import: put a
source checkout on ``PYTHONPATH``. Its section (``libmtl``, see ``_libmtl.py``) has every
method it shares with taskloom, in parameter mode and, where LibMTL allows it,
representation mode (``rep_grad``); a method it cannot run is reported with its error.
``engines`` runs every Gramian-based method (``weights_from_gram``) in parameter mode with the
full Jacobian engine (``engine: jacobian``) and the layer Gramian engine (``engine: gramian``)
side by side: ms per step and ratio to equal weighting (alternating blocks, as above), and the
peak memory of one step beyond what is live before it (``memory.py``'s measure, CPU profiler
memory events or the CUDA allocator) with its ratio to equal weighting's; on the MLP also ``floor``
(``_gramian_floor.py``): the multiply-adds of equal weighting's step and the least an exact Gramian
step needs (K activation backward passes and the layers' factors), their ratio, and the bytes an
exact Gramian must hold at once, as a ratio to equal weighting's measured peak. Where TorchJD is
importable, its own Gramian engine (``torchjd.autogram.Engine`` on the trunk, its weighting of the
same method, one weighted backward) runs beside them (``torchjd_autogram``). ``--engines-only``
runs that section alone (``--methods`` limits it to some methods). Prints JSON.

    python benchmarks/balancing_speed.py                      # CPU, K = 4 and 40
    OMP_NUM_THREADS=1 python benchmarks/balancing_speed.py --engines-only --threads 1
    python benchmarks/balancing_speed.py --device cuda --trunk resnet18
    OMP_NUM_THREADS=1 python benchmarks/balancing_speed.py --engines-only --threads 1 --trunk lenet --batch 64
    PYTHONPATH=/path/to/LibMTL python benchmarks/balancing_speed.py   # with LibMTL side by side
"""
from __future__ import annotations

import argparse
import functools
import inspect
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from taskloom.balancing import BALANCERS
from taskloom.balancing.gradient import GradientBalancer
from taskloom.sharing.hard import MultiTaskModel
from taskloom.trunks import MLP, LeNet

HERE = Path(__file__).resolve().parent
NEEDS_OPTIONS = {"static"}  # methods that cannot be built from task names alone
MLP_WIDTHS = (64, 256, 256)  # the CPU MLP trunk: input, hidden layers


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = nn.Sequential()
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.skip(x))


class ResNet18(nn.Module):
    """ResNet-18 (He et al. 2016) for 32x32 inputs: 3x3 stem, four stages of two basic blocks, global pooling."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        blocks, cin = [], 64
        for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            blocks += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.out_features = 512

    def forward(self, x: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1).flatten(1)


def make_problem(trunk: str, k: int, batch: int, device: str, n_batches: int = 4):
    generator = torch.Generator().manual_seed(0)
    names = [f"task{i}" for i in range(k)]
    if trunk == "resnet18":
        x = torch.randn(n_batches, batch, 3, 32, 32, generator=generator)
        y = torch.randint(0, 10, (n_batches, k, batch), generator=generator)

        def build() -> MultiTaskModel:
            torch.manual_seed(0)
            return MultiTaskModel(ResNet18(), heads={n: nn.Linear(512, 10) for n in names}).to(device)

        def loss_fn(out: Tensor, i: int, target: Tensor) -> Tensor:
            return F.cross_entropy(out, target[i])
    elif trunk == "lenet":
        x = torch.rand(n_batches, batch, 1, 36, 36, generator=generator)
        y = torch.randint(0, 10, (n_batches, k, batch), generator=generator)

        def build() -> MultiTaskModel:
            torch.manual_seed(0)
            return MultiTaskModel(LeNet(image_size=36), heads={n: nn.Linear(50, 10) for n in names}).to(device)

        def loss_fn(out: Tensor, i: int, target: Tensor) -> Tensor:
            return F.cross_entropy(out, target[i])
    else:
        x = torch.randn(n_batches, batch, MLP_WIDTHS[0], generator=generator)
        y = torch.randn(n_batches, k, batch, 1, generator=generator)

        def build() -> MultiTaskModel:
            torch.manual_seed(0)
            return MultiTaskModel(MLP(MLP_WIDTHS[0], tuple(MLP_WIDTHS[1:])),
                                  heads={n: nn.Linear(MLP_WIDTHS[-1], 1) for n in names}).to(device)

        def loss_fn(out: Tensor, i: int, target: Tensor) -> Tensor:
            return F.mse_loss(out, target[i])
    batches = [(x[b].to(device), y[b].to(device)) for b in range(n_batches)]
    return names, build, loss_fn, batches


class SummedGradients(GradientBalancer):
    """The engine alone: K per-task gradients, then their plain sum (what every gradient method pays at least)."""

    def combine(self, grads: Tensor, names) -> tuple[Tensor, None]:
        return grads.sum(dim=0), None


def taskloom_step(model, balancer, optimizer, names, loss_fn) -> Callable[[Any], None]:
    """What the trainer does in one step: gradient methods forward through ``balancer.outputs``.

    As the trainer decides it, from what the balancer declares: needed in representation mode,
    the fast path in parameter mode; loss-level methods take the plain forward.
    """
    representation = balancer.needs_task_gradients or getattr(balancer, "needs_representation", False)

    def step(batch) -> None:
        x, y = batch
        optimizer.zero_grad(set_to_none=True)
        outputs = balancer.outputs(model, x) if representation else model(x)
        losses = {n: loss_fn(outputs[n], i, y) for i, n in enumerate(names)}
        balancer.backward(losses, model)
        optimizer.step()
        if balancer.needs_post_step_losses:
            with torch.no_grad():
                out = model(x)
                balancer.post_step({n: loss_fn(out[n], i, y) for i, n in enumerate(names)})

    return step


def torchjd_step(model, aggregator, optimizer, names, loss_fn) -> Callable[[Any], None]:
    from torchjd.autojac import jac_to_grad, mtl_backward

    shared = list(model.trunk.parameters())
    heads = [list(model.heads[n].parameters()) for n in names]

    def step(batch) -> None:
        x, y = batch
        optimizer.zero_grad(set_to_none=True)
        features = model.trunk(x)
        losses = [loss_fn(model.heads[n](features), i, y) for i, n in enumerate(names)]
        mtl_backward(losses, features, tasks_params=heads, shared_params=shared)
        jac_to_grad(shared, aggregator)
        optimizer.step()

    return step


#: taskloom method -> TorchJD (0.18) weighting of the Gramian, for its autogram engine (those without extra deps)
TORCHJD_WEIGHTINGS = {"upgrad": "UPGradWeighting", "mgda": "MGDAWeighting", "imtl_g": "IMTLGWeighting",
                      "alignedmtl": "AlignedMTLWeighting", "pcgrad": "PCGradWeighting"}


def torchjd_importable() -> bool:
    try:
        import torchjd.autogram  # noqa: F401
    except ImportError:
        return False
    return True


def torchjd_autogram_step(build, weighting: str, names, loss_fn) -> Callable[[Any], None]:
    """TorchJD's autogram engine: the K x K Gramian of the trunk's parameters, its weights, one weighted backward.

    As TorchJD documents it (``Engine.compute_gramian`` of the K losses, ``losses.backward(weights)``);
    the heads then get the weighted sum of their gradients, which for one head per task is task
    t's own gradient times w_t (taskloom's heads get their own gradient unweighted).
    """
    import torchjd.aggregation as aggregation
    from torchjd.autogram import Engine

    model = build()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    engine = Engine(model.trunk, batch_dim=None)
    combine = getattr(aggregation, weighting)()

    def step(batch) -> None:
        x, y = batch
        optimizer.zero_grad(set_to_none=True)
        features = model.trunk(x)
        losses = torch.stack([loss_fn(model.heads[n](features), i, y) for i, n in enumerate(names)])
        losses.backward(combine(engine.compute_gramian(losses)))
        optimizer.step()

    return step


def timed(step: Callable[[Any], None], batches, steps: int, device: str) -> list[float]:
    times = []
    for i in range(steps):
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        step(batches[i % len(batches)])
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - started) * 1000)
    return times


def compare(step, baseline, batches, warmup: int, steps: int, device: str, rounds: int = 4) -> tuple[float, float]:
    """Median ms per step of ``step`` and of ``baseline``, measured in alternating blocks."""
    timed(step, batches, warmup, device)
    ours, base = [], []
    per_block = max(1, steps // rounds)
    for _ in range(rounds):
        ours += timed(step, batches, per_block, device)
        base += timed(baseline, batches, per_block, device)
    return statistics.median(ours), statistics.median(base)


def run_setting(trunk: str, k: int, batch: int, device: str, warmup: int, steps: int, torchjd: bool,
                torchjd_steps: int, libmtl: bool = True, libmtl_steps: int = 10) -> dict[str, Any]:
    names, build, loss_fn, batches = make_problem(trunk, k, batch, device)

    def ours(name: str, **options) -> Callable[[Any], None]:
        model = build()
        balancer = BALANCERS.get(name)(names, **options).to(device)
        optimizer = torch.optim.AdamW(list(model.parameters()) + list(balancer.parameters()), lr=1e-3)
        return taskloom_step(model, balancer, optimizer, names, loss_fn)

    baseline = ours("equal")
    timed(baseline, batches, warmup, device)
    equal_ms = statistics.median(timed(baseline, batches, steps, device))
    rows: dict[str, Any] = {"equal": {"parameters": {"ms": round(equal_ms, 3), "ratio": 1.0}}}
    for name in BALANCERS:
        if name in NEEDS_OPTIONS or name == "equal":
            continue
        cls = BALANCERS.get(name)
        modes = list(cls.modes) if issubclass(cls, GradientBalancer) else ["parameters"]
        if name == "mgda_ub":
            modes = ["representation"]
        rows[name] = {}
        for mode in modes:
            options = {} if mode == "parameters" or name == "mgda_ub" else {"mode": mode}
            try:
                step = ours(name, **options)
                ms, base = compare(step, baseline, batches, warmup, steps, device)
            except Exception as error:  # a method that cannot run here is reported, not fatal
                rows[name][mode] = {"error": f"{type(error).__name__}: {error}"}
                continue
            rows[name][mode] = {"ms": round(ms, 3), "ratio": round(ms / base, 3)}
    floor = {}
    for mode in ("parameters", "representation"):
        model = build()
        balancer = SummedGradients(names, mode=mode).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        ms, base = compare(taskloom_step(model, balancer, optimizer, names, loss_fn), baseline, batches, warmup,
                           steps, device)
        floor[mode] = {"ms": round(ms, 3), "ratio": round(ms / base, 3)}
    result: dict[str, Any] = {"trunk": trunk, "tasks": k, "batch": batch, "methods": rows,
                              "engine_floor": floor}
    if torchjd:
        result["torchjd"] = run_torchjd(build, names, loss_fn, batches, baseline, device, warmup, torchjd_steps)
    result["libmtl"] = (run_libmtl(build, names, loss_fn, batches, baseline, device, warmup, libmtl_steps)
                        if libmtl else {"skipped": "--no-libmtl"})
    return result


def gramian_methods() -> list[str]:
    """The registered methods whose update is a function of the Gramian, parameter mode by default (not mgda_ub)."""
    return [n for n in BALANCERS if issubclass(BALANCERS.get(n), GradientBalancer)
            and BALANCERS.get(n).weights_from_gram
            and inspect.signature(BALANCERS.get(n)).parameters["mode"].default == "parameters"]


def run_engines(trunk: str, k: int, batch: int, device: str, warmup: int, steps: int,
                methods: list[str] | None = None) -> dict[str, Any]:
    """Full Jacobian vs layer Gramian engine for every Gramian-based method: ms, peak MB, ratios to EW's."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    from memory import measure  # noqa: E402  (peak bytes of one step after two warm-up steps)

    names, build, loss_fn, batches = make_problem(trunk, k, batch, device)

    def make(name: str, **options) -> Callable[[], Callable[[Any], None]]:
        def make_step() -> Callable[[Any], None]:
            model = build()
            balancer = BALANCERS.get(name)(names, **options).to(device)
            optimizer = torch.optim.AdamW(list(model.parameters()) + list(balancer.parameters()), lr=1e-3)
            return taskloom_step(model, balancer, optimizer, names, loss_fn)
        return make_step

    baseline = make("equal")()
    equal_mb = measure(make("equal"), batches, device, 1)["mb"]
    rows: dict[str, Any] = {"equal": {"mb": round(equal_mb, 3)}}
    for name in methods or gramian_methods():
        rows[name] = {}
        for engine in ("jacobian", "gramian"):
            try:
                mb = measure(make(name, engine=engine), batches, device, 1)["mb"]
                ms, base = compare(make(name, engine=engine)(), baseline, batches, warmup, steps, device)
            except Exception as error:  # reported, not fatal
                rows[name][engine] = {"error": f"{type(error).__name__}: {error}"}
                continue
            rows[name][engine] = {"ms": round(ms, 3), "ratio": round(ms / base, 3), "equal_ms": round(base, 3),
                                  "mb": round(mb, 3), "mb_ratio": round(mb / equal_mb, 3)}
        autogram = TORCHJD_WEIGHTINGS.get(name)
        if autogram is not None and torchjd_importable():  # TorchJD's own Gramian engine, same model and batches
            try:
                make_step = functools.partial(torchjd_autogram_step, build, autogram, names, loss_fn)
                mb = measure(make_step, batches, device, 1)["mb"]
                ms, base = compare(make_step(), baseline, batches, warmup, steps, device)
                rows[name]["torchjd_autogram"] = {"ms": round(ms, 3), "ratio": round(ms / base, 3),
                                                  "mb": round(mb, 3), "mb_ratio": round(mb / equal_mb, 3)}
            except Exception as error:  # reported, not fatal
                rows[name]["torchjd_autogram"] = {"error": f"{type(error).__name__}: {error}"}
    setting = {"trunk": trunk, "tasks": k, "batch": batch, "engines": rows}
    if trunk == "mlp":  # what no exact engine can go below here (see _gramian_floor.py)
        from _gramian_floor import gramian_floor  # noqa: E402
        floor = gramian_floor(MLP_WIDTHS, batch, k)
        floor["factor_mb_ratio"] = round(floor["factor_bytes"] / 2**20 / equal_mb, 3)
        setting["floor"] = floor
    return setting


def run_torchjd(build, names, loss_fn, batches, baseline, device, warmup, steps) -> dict[str, Any]:
    try:
        import torchjd.aggregation as aggregation
    except ImportError:
        return {"skipped": "torchjd not importable (pip install 'torchjd[full]==0.18.0')"}
    made = {"mgda": lambda: aggregation.MGDA(), "pcgrad": lambda: aggregation.PCGrad(),
            "gradvac": lambda: aggregation.GradVac(), "cagrad": lambda: aggregation.CAGrad(c=0.4),
            "nashmtl": lambda: aggregation.NashMTL(n_tasks=len(names)), "imtl_g": lambda: aggregation.IMTLG(),
            "graddrop": lambda: aggregation.GradDrop(), "alignedmtl": lambda: aggregation.AlignedMTL(),
            "upgrad": lambda: aggregation.UPGrad(), "mean": lambda: aggregation.Mean()}
    rows: dict[str, Any] = {}
    for name, make in made.items():
        model = build()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        try:
            ms, base = compare(torchjd_step(model, make(), optimizer, names, loss_fn), baseline, batches,
                               min(warmup, 2), steps, device, rounds=2)
        except Exception as error:
            rows[name] = {"error": f"{type(error).__name__}: {error}"}
            continue
        rows[name] = {"ms": round(ms, 3), "ratio_to_taskloom_equal": round(ms / base, 3)}
    return rows


def run_libmtl(build, names, loss_fn, batches, baseline, device, warmup, steps) -> dict[str, Any]:
    """LibMTL's implementation of each method taskloom shares with it, on the same model, data and optimizer."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    from _libmtl import LOSS_LEVEL, METHODS, NO_TRUNK_GRADIENT, libmtl_defaults, libmtl_step, libmtl_unavailable

    reason = libmtl_unavailable()
    if reason:
        return {"skipped": reason}

    def losses_of(target, outputs):
        return [loss_fn(outputs[n], i, target) for i, n in enumerate(names)]

    rows: dict[str, Any] = {}
    for name, (weighting, only) in METHODS.items():
        if name == "mgda_ub":  # LibMTL's MGDA in representation mode, listed under mgda
            continue
        modes = [only] if only is not None else [False, True]
        row: dict[str, Any] = {"libmtl": weighting, "options": libmtl_defaults(weighting)}
        for rep_grad in modes:
            mode = "representation" if rep_grad else "parameters"
            try:
                step = libmtl_step(build(), weighting, losses_of, rep_grad=rep_grad)
                ms, base = compare(step, baseline, batches, min(warmup, 2), steps, device, rounds=2)
            except Exception as error:  # a method LibMTL cannot run here is reported, not fatal
                row[mode] = {"error": f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0]}"}
                continue
            row[mode] = {"ms": round(ms, 3), "ratio_to_taskloom_equal": round(ms / base, 3)}
        if weighting in LOSS_LEVEL:
            row["representation"] = {"skipped": NO_TRUNK_GRADIENT}
        rows[name] = row
    equal_ms = rows.get("equal", {}).get("parameters", {}).get("ms")
    for row in rows.values():
        for entry in row.values():
            if isinstance(entry, dict) and "ms" in entry and equal_ms:
                entry["ratio_to_libmtl_equal"] = round(entry["ms"] / equal_ms, 3)
    return {"step": "LibMTL Trainer's: forward, losses (each read by .item()), weighting.backward(losses, "
                    "**options), optimizer.step(); AdamW lr 1e-3 over the model and the method's parameters; "
                    "DWA and GradNorm placed past their equal-weighting first epochs",
            "methods": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--trunk", choices=["mlp", "resnet18", "lenet"], default="mlp")
    parser.add_argument("--tasks", type=int, nargs="+", default=None,
                        help="K values (default: 4 40 for mlp, 2 10 for lenet, 2 for resnet18)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--torchjd-steps", type=int, default=None,
                        help="timed steps of TorchJD (default: half of --steps)")
    parser.add_argument("--no-torchjd", action="store_true")
    parser.add_argument("--libmtl-steps", type=int, default=None,
                        help="timed steps of LibMTL (default: half of --steps)")
    parser.add_argument("--no-libmtl", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--engines-only", action="store_true",
                        help="only the full Jacobian vs layer Gramian engine section")
    parser.add_argument("--methods", nargs="+", default=None,
                        help="Gramian-based methods of the engines section (default: all of them)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    unknown = sorted(set(args.methods or []) - set(gramian_methods()))
    if unknown:
        parser.error(f"--methods: {unknown} are not Gramian-based methods; choose from {gramian_methods()}")
    ks = args.tasks or {"resnet18": [2], "lenet": [2, 10]}.get(args.trunk, [4, 40])
    started = time.perf_counter()
    if args.engines_only:
        settings = [run_engines(args.trunk, k, args.batch, args.device, args.warmup, args.steps, args.methods)
                    for k in ks]
        print(json.dumps({"benchmark": "balancing_speed (engines)", "device": args.device,
                          "threads": torch.get_num_threads(), "torch": torch.__version__, "steps": args.steps,
                          "settings": settings, "seconds": round(time.perf_counter() - started, 1)}, indent=1))
        return
    settings = [run_setting(args.trunk, k, args.batch, args.device, args.warmup, args.steps, not args.no_torchjd,
                            args.torchjd_steps or max(4, args.steps // 2), not args.no_libmtl,
                            args.libmtl_steps or max(4, args.steps // 2)) for k in ks]
    for setting in settings:
        setting["engines"] = run_engines(args.trunk, setting["tasks"], args.batch, args.device, args.warmup,
                                         args.steps, args.methods)["engines"]
    print(json.dumps({
        "benchmark": "balancing_speed", "device": args.device, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": sys.version.split()[0], "machine": platform.machine(),
        "steps": args.steps, "settings": settings, "seconds": round(time.perf_counter() - started, 1),
    }, indent=1))


if __name__ == "__main__":
    main()
