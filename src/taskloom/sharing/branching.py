"""Fully-adaptive feature sharing: a thin MLP trunk that splits into task branches, layer by layer from the top.

Lu, Kumar, Zhai, Cheng, Javidi & Feris 2017, "Fully-adaptive feature sharing in multi-task networks with
applications in person attribute classification" (CVPR). Every ``split_every`` epochs the next layer down
is split: at each branch point the branches (or, at the top layer, the tasks) it feeds are grouped by
task affinity (:mod:`taskloom.sharing.branch_grouping`) and the layer becomes one copy per group, each
starting from the original layer's weights, so the network computes the same function right after a
split. Splitting stops below the bottom layer or when no branch point pays for a split. The tree is plain
data (``structure()``), kept in the state dict (as its JSON bytes), so a checkpoint rebuilds the branched model
it was saved from.
"""
from __future__ import annotations

import copy
import json
import logging
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from taskloom.data.dataset import BatchLoader, MultiTaskDataset
from taskloom.sharing.branch_grouping import best_grouping, branch_affinity, lu_affinity
from taskloom.sharing.parameters import Reach, ReachSplit, count_parameters, params
from taskloom.task import Task

log = logging.getLogger(__name__)

AFFINITIES = ("lu", "tag")
TAG_BATCHES = 4  # validation batches whose lookahead affinities are averaged
TREE_KEY = "_extra_state"


def trunk_blocks(trunk: nn.Module) -> tuple[nn.Sequential, list[nn.Sequential]]:
    """The trunk's parameter-free stem and its layers, one block per ``nn.Linear`` with what follows it."""
    layers = getattr(trunk, "layers", trunk)
    if not isinstance(layers, nn.Sequential):
        raise ValueError("architecture branching needs an nn.Sequential trunk or one with .layers (trunk mlp)")
    stem: list[nn.Module] = []
    blocks: list[list[nn.Module]] = []
    for module in layers:
        if isinstance(module, nn.Linear):
            blocks.append([module])
        elif blocks:
            blocks[-1].append(module)
        else:
            stem.append(module)
        if not isinstance(module, nn.Linear) and any(True for _ in module.parameters()):
            raise ValueError(f"architecture branching splits a trunk of linear layers; {type(module).__name__} "
                             "has parameters of its own (use trunk mlp)")
    if not blocks:
        raise ValueError("architecture branching needs a trunk with at least one nn.Linear layer (trunk mlp, "
                         "model.trunk.options.hidden)")
    return nn.Sequential(*stem), [nn.Sequential(*block) for block in blocks]


def encode_tree(tree: dict[str, Any]) -> Tensor:
    """A tree as the UTF-8 bytes of its JSON (a uint8 tensor)."""
    return torch.tensor(list(json.dumps(tree, sort_keys=True).encode("utf-8")), dtype=torch.uint8)


def decode_tree(state: Tensor | dict[str, Any]) -> dict[str, Any]:
    """The tree :func:`encode_tree` wrote (a plain dict passes through)."""
    if isinstance(state, dict):
        return state
    return json.loads(bytes(state.to("cpu", torch.uint8).tolist()).decode("utf-8"))


def initial_tree(task_names: Sequence[str], depth: int) -> dict[str, Any]:
    """One branch per layer holding every task; the first split is at the top layer."""
    return {"layers": [[{"tasks": list(task_names), "parent": 0}] for _ in range(depth)],
            "next_layer": depth - 1, "done": False, "splits": []}


class BranchingNetwork(ReachSplit):
    """A tree of MLP layers: ``tree["layers"][d]`` lists layer d's branches (tasks served, parent branch index
    in layer d - 1); each task's head reads the top-layer branch holding it (Lu et al. 2017)."""

    structure_file = "branching.json"

    def __init__(self, trunk: nn.Module, tasks: Sequence[Task], alpha: float = 1e-4,
                 max_parameters: int | None = None, max_branches: int | None = None, split_every: int = 2,
                 affinity: str = "lu") -> None:
        super().__init__()
        check_branching_options(alpha, max_parameters, max_branches, split_every, affinity)
        self.stem, blocks = trunk_blocks(trunk)
        self.tasks = {task.name: task for task in tasks}
        self.task_names = list(self.tasks)
        self.alpha, self.max_parameters, self.max_branches = float(alpha), max_parameters, max_branches
        self.split_every, self.affinity = split_every, affinity
        width = blocks[-1][0].out_features
        self.heads = nn.ModuleDict({task.name: task.build_head(width) for task in tasks})
        self.branches = nn.ModuleList([nn.ModuleList([block]) for block in blocks])
        self.tree = initial_tree(self.task_names, len(blocks))
        if max_parameters is not None and count_parameters(self) > max_parameters:
            log.warning("branching: the unsplit model has %d parameters, over max_parameters %d; no split will "
                        "be made", count_parameters(self), max_parameters)

    # -- the function --------------------------------------------------------------------
    def forward(self, inputs: Tensor) -> dict[str, Tensor]:
        below = [self.stem(inputs)]
        for depth, layer in enumerate(self.tree["layers"]):
            below = [self.branches[depth][b](below[spec["parent"]]) for b, spec in enumerate(layer)]
        outputs = {}
        for b, spec in enumerate(self.tree["layers"][-1]):
            for name in spec["tasks"]:
                outputs[name] = self.heads[name](below[b])
        return {name: outputs[name] for name in self.task_names}

    def parameter_reach(self) -> Reach:
        reach = [(params(self.branches[d][b]), frozenset(spec["tasks"]))
                 for d, layer in enumerate(self.tree["layers"]) for b, spec in enumerate(layer)]
        return reach + [(params(self.heads[name]), frozenset([name])) for name in self.task_names]

    # -- the tree ------------------------------------------------------------------------
    def structure(self) -> dict[str, Any]:
        """The tree as plain data (what ``branching.json`` and checkpoints hold)."""
        return copy.deepcopy(self.tree)

    def get_extra_state(self) -> Tensor:
        """The tree as the UTF-8 bytes of its JSON in a uint8 tensor: a state dict of tensors only, so tracing
        exporters (ONNX, TorchScript) accept it and ``torch.load(weights_only=True)`` reads it."""
        return encode_tree(self.tree)

    def set_extra_state(self, state: Any) -> None:
        tree = decode_tree(state)
        if tree != self.tree:
            self.set_structure(tree)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """Rebuild the saved tree first, so that its branches' weights find their modules."""
        saved = state_dict.get(TREE_KEY)
        tree = None if saved is None else decode_tree(saved)
        if tree is not None and tree != self.tree:
            self.set_structure(tree)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def set_structure(self, tree: dict[str, Any]) -> None:
        """Replace the branches by fresh ones shaped as ``tree`` says (weights are loaded afterwards)."""
        layers = tree.get("layers") if isinstance(tree, dict) else None
        if not isinstance(layers, list) or len(layers) != len(self.branches):
            raise ValueError(f"branching: a saved tree must have {len(self.branches)} layers (the trunk's); got "
                             f"{None if layers is None else len(layers)}: was the checkpoint made with another "
                             "model.trunk?")
        served = sorted(name for spec in layers[-1] for name in spec["tasks"])
        if served != sorted(self.task_names):
            raise ValueError(f"branching: the saved tree serves tasks {served}, this model {self.task_names}")
        self.branches = nn.ModuleList([
            nn.ModuleList([copy.deepcopy(self.branches[d][0]) for _ in layer]) for d, layer in enumerate(layers)])
        self.tree = copy.deepcopy(tree)

    def _children(self, layer: int, branch: int) -> list[list[str]]:
        """What branch ``branch`` of ``layer`` feeds: its tasks one by one at the top, else the branches above."""
        if layer == len(self.tree["layers"]) - 1:
            return [[name] for name in self.tree["layers"][layer][branch]["tasks"]]
        return [spec["tasks"] for spec in self.tree["layers"][layer + 1] if spec["parent"] == branch]

    def plan_split(self, layer: int, task_affinity: Tensor) -> list[list[list[int]]]:
        """For each branch of ``layer``, the groups of its children (indices into ``_children``) to split into."""
        index = {name: k for k, name in enumerate(self.task_names)}
        budget = None if self.max_parameters is None else self.max_parameters - count_parameters(self)
        plan = []
        for b in range(len(self.tree["layers"][layer])):
            children = self._children(layer, b)
            size = count_parameters(self.branches[layer][b])
            affinity = branch_affinity(task_affinity, [[index[n] for n in child] for child in children])
            groups, losses = best_grouping(affinity, size, self.alpha, self.max_branches, budget)
            log.info("branching: layer %d branch %d, loss by number of groups %s", layer, b,
                     {c: round(v, 4) for c, v in losses.items()})
            if budget is not None:
                budget -= (len(groups) - 1) * size
            plan.append(groups)
        return plan

    @torch.no_grad()
    def split(self, layer: int, plan: list[list[list[int]]]) -> None:
        """Split each branch of ``layer`` into copies (original weights) by ``plan``; the layers below keep theirs."""
        old = self.tree["layers"][layer]
        if len(plan) != len(old):
            raise ValueError(f"branching: a split plan of layer {layer} needs one grouping per branch ({len(old)}), "
                             f"got {len(plan)}")
        new_specs, new_modules, child_to_new = [], [], {}
        top = layer == len(self.tree["layers"]) - 1
        for b, groups in enumerate(plan):
            children = self._children(layer, b)
            child_ids = [None] * len(children) if top else [
                j for j, spec in enumerate(self.tree["layers"][layer + 1]) if spec["parent"] == b]
            for group in groups:
                tasks = [name for k in group for name in children[k]]
                for k in group:
                    if child_ids[k] is not None:
                        child_to_new[child_ids[k]] = len(new_specs)
                new_specs.append({"tasks": [n for n in self.task_names if n in tasks], "parent": old[b]["parent"]})
                module = self.branches[layer][b]
                new_modules.append(module if len(groups) == 1 else copy.deepcopy(module))
        self.tree["layers"][layer] = new_specs
        self.branches[layer] = nn.ModuleList(new_modules)
        if not top:
            for j, spec in enumerate(self.tree["layers"][layer + 1]):
                spec["parent"] = child_to_new[j]

    def restructure(self, epoch: int, val: MultiTaskDataset | None, device: torch.device | str = "cpu",
                    lr: float = 1e-3) -> bool:
        """At the end of every ``split_every``-th epoch, split the next layer down; True when parameters changed.

        ``lr`` is the optimizer's learning rate, the step of TAG's lookahead (``affinity: tag``)."""
        if self.tree["done"] or epoch % self.split_every:
            return False
        if val is None:
            raise ValueError("architecture branching measures task affinity on validation data; set "
                             "data.val_fraction > 0 (or pass val to fit)")
        layer = self.tree["next_layer"]
        tasks = list(self.tasks.values())
        if self.affinity == "tag":
            affinity = tag_affinity(self, val, tasks, lr, device)
        else:
            affinity = task_affinity(self, val, tasks, device)
        plan = self.plan_split(layer, affinity)
        record = {"epoch": epoch, "layer": layer, "affinity": affinity.tolist()}
        if all(len(groups) == 1 for groups in plan):
            self.tree["done"] = True
            self.tree["splits"].append({**record, "groups": None})
            log.info("branching: epoch %d, no split of layer %d pays off; the tree is final", epoch, layer)
            return False
        self.split(layer, plan)
        self.to(device)
        self.tree["next_layer"] = layer - 1
        self.tree["done"] = layer == 0
        groups = [spec["tasks"] for spec in self.tree["layers"][layer]]
        self.tree["splits"].append({**record, "groups": groups})
        log.info("branching: epoch %d, layer %d split into %s (%d parameters)", epoch, layer, groups,
                 count_parameters(self))
        return True


@torch.no_grad()
def example_losses(model: nn.Module, data: MultiTaskDataset, tasks: Sequence[Task],
                   device: torch.device | str = "cpu", batch_size: int = 512) -> tuple[Tensor, Tensor]:
    """Per-example losses (N x K, a row's mean over its units) and which exist (N x K), in eval mode."""
    was_training = model.training
    model.eval()
    losses, labelled = [], []
    try:
        for batch in BatchLoader(data, batch_size, shuffle=False):
            batch = batch.to(device)
            outputs = model(batch.inputs)
            row_losses, row_labelled = [], []
            for task in tasks:
                target = batch.targets[task.name]
                rows = batch.masks.get(task.name)
                unit = task.kind_spec.unit_mask(rows, target, batch.inputs)
                if unit is not None:
                    target = torch.where(unit.reshape(unit.shape + (1,) * (target.dim() - unit.dim())), target, 0)
                loss, _ = task.kind_spec.row_loss(outputs[task.name], target, None)
                loss = loss.float().reshape(loss.shape[0], -1)
                weight = torch.ones_like(loss) if unit is None else unit.reshape(loss.shape).float()
                row_losses.append((loss * weight).sum(1) / weight.sum(1).clamp_min(1))
                row_labelled.append(weight.sum(1) > 0)
            losses.append(torch.stack(row_losses, 1).cpu())
            labelled.append(torch.stack(row_labelled, 1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(losses), torch.cat(labelled)


def task_affinity(model: nn.Module, data: MultiTaskDataset, tasks: Sequence[Task],
                  device: torch.device | str = "cpu") -> Tensor:
    """The K x K affinity of Lu et al. 2017 of the model's tasks on ``data`` (see :func:`lu_affinity`)."""
    losses, labelled = example_losses(model, data, tasks, device)
    return lu_affinity(losses, labelled)


def tag_affinity(model: BranchingNetwork, data: MultiTaskDataset, tasks: Sequence[Task], lr: float,
                 device: torch.device | str = "cpu", batches: int = TAG_BATCHES) -> Tensor:
    """TAG's lookahead affinity (Fifty, Amid, Zhao, Yu, Anil & Finn 2021, "Efficiently identifying task groupings
    for multi-task learning", NeurIPS) on up to ``batches`` validation batches, made a similarity in [-1, 1]:
    ``A(i, j) = (Z(i->j) + Z(j->i)) / 2 / sqrt(Z(i->i) Z(j->j))`` (0 where a task's own lookahead did not lower
    its loss), with Z averaged over the batches."""
    from taskloom.evaluate.affinity import lookahead_affinity

    names = [t.name for t in tasks]
    total = torch.zeros(len(names), len(names), dtype=torch.float64)
    counts = torch.zeros_like(total)
    was_training = model.training
    model.eval()
    try:
        for k, batch in enumerate(BatchLoader(data, 256, shuffle=False)):
            if k == batches:
                break
            with torch.enable_grad():
                z = lookahead_affinity(model, batch.to(device), tasks, lr)
            for i, a in enumerate(names):
                for j, b in enumerate(names):
                    value = z.get(a, {}).get(b, float("nan"))
                    if value == value:  # not NaN: both tasks labelled in the batch
                        total[i, j] += value
                        counts[i, j] += 1
    finally:
        model.train(was_training)
    z = torch.where(counts > 0, total / counts.clamp_min(1), torch.zeros_like(total))
    own = z.diagonal().clamp_min(0).sqrt()
    scale = own[:, None] * own[None, :]
    affinity = torch.where(scale > 0, (z + z.T) / 2 / scale.clamp_min(1e-300), torch.zeros_like(z)).clamp(-1, 1)
    affinity.fill_diagonal_(1.0)
    return affinity


def check_branching_options(alpha: float, max_parameters: int | None, max_branches: int | None, split_every: int,
                  affinity: str) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha < 0:
        raise ValueError(f"model.options.alpha must be a number >= 0 (the cost of one created parameter), got {alpha!r}")
    for name, value in (("max_parameters", max_parameters), ("max_branches", max_branches)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"model.options.{name} must be a positive whole number or null, got {value!r}")
    if isinstance(split_every, bool) or not isinstance(split_every, int) or split_every < 1:
        raise ValueError(f"model.options.split_every must be a positive whole number of epochs, got {split_every!r}")
    if affinity not in AFFINITIES:
        raise ValueError(f"model.options.affinity: unknown affinity {affinity!r}; choose one of {AFFINITIES}")


def build_branching(trunk_factory: Callable[[], nn.Module], tasks: Sequence[Task], alpha: float = 1e-4,
                    max_parameters: int | None = None, max_branches: int | None = None, split_every: int = 2,
                    affinity: str = "lu") -> BranchingNetwork:
    """Fully-adaptive feature sharing (Lu et al. 2017) from an MLP trunk factory."""
    return BranchingNetwork(trunk_factory(), tasks, alpha=alpha, max_parameters=max_parameters,
                            max_branches=max_branches, split_every=split_every, affinity=affinity)
