"""Learning to branch: a tree of MLP blocks whose branching is learned by gradient descent.

Guo, Lee & Ulbricht 2020, "Learning to branch for multi-task learning" (ICML). Layer d of the trunk becomes
``branches[d]`` candidate blocks (nodes); every node of layer d >= 1, and every task head, picks its parent among
the nodes of the layer below through a learned categorical distribution (softmax of its row of logits). In
training each forward pass draws one Gumbel-softmax sample per child (Jang, Gu & Poole 2017; Maddison, Mnih &
Teh 2017) at a temperature annealed per epoch; the child reads the sample-weighted sum of its parents (``hard``:
straight-through, exactly one parent forward, the soft sample's gradient backward). Weights and branching logits
are trained jointly by the task losses. In evaluation, and for good after ``search_epochs`` epochs
(:meth:`LearnToBranch.finalize`), each child reads only its argmax parent: a discrete tree, pruned of the nodes no
task reads, kept as plain data in the state dict and written to ``learn_to_branch.json``.
"""
from __future__ import annotations

import base64
import copy
import logging
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from taskloom.sharing.branching import decode_tree, encode_tree, trunk_blocks
from taskloom.sharing.parameters import Reach, ReachSplit, params
from taskloom.task import Task

log = logging.getLogger(__name__)

STATE_KEY = "_extra_state"
HEADS = "heads"


def gumbel_noise(shape: Sequence[int], generator: torch.Generator | None = None) -> Tensor:
    """Standard Gumbel draws ``-log(-log U)``, U uniform on (0, 1), from ``generator`` (on the CPU)."""
    uniform = torch.rand(tuple(shape), generator=generator, dtype=torch.float64)
    tiny = torch.finfo(torch.float64).tiny
    return -torch.log(-torch.log(uniform.clamp(tiny, 1.0 - 1e-12)))


def relaxed_sample(logits: Tensor, noise: Tensor, temperature: float, hard: bool = False) -> Tensor:
    """The Gumbel-softmax sample ``softmax((logits + noise) / temperature)`` over the last axis; with ``hard`` its
    one-hot argmax forward and the soft sample's gradient backward (straight-through)."""
    soft = torch.softmax((logits + noise.to(logits.device, logits.dtype)) / temperature, dim=-1)
    if not hard:
        return soft
    one_hot = torch.zeros_like(soft).scatter_(-1, soft.argmax(-1, keepdim=True), 1.0)
    return one_hot - soft.detach() + soft


def mix(weights: Tensor, below: Sequence[Tensor]) -> list[Tensor]:
    """Each child's input: row c of ``weights`` (C, P) weighting the P parents' outputs."""
    stacked = torch.stack(list(below))
    mixed = (weights.reshape(*weights.shape, *[1] * (stacked.dim() - 1)) * stacked.unsqueeze(0)).sum(1)
    return list(mixed.unbind(0))


class LearnToBranch(ReachSplit):
    """Candidate blocks per layer, each child's parent chosen by Gumbel-softmax over learned logits
    (Guo, Lee & Ulbricht 2020); ``finalize`` fixes the argmax tree."""

    structure_file = "learn_to_branch.json"

    def __init__(self, trunks: Sequence[nn.Module], tasks: Sequence[Task], branches: Sequence[int],
                 temperature: float = 5.0, min_temperature: float = 0.5, decay: float = 0.8, hard: bool = False,
                 search_epochs: int | None = 5, seed: int | None = None) -> None:
        super().__init__()
        self.stem, first = trunk_blocks(trunks[0])
        layers = [first] + [trunk_blocks(trunk)[1] for trunk in trunks[1:]]
        check_options(branches, len(first), temperature, min_temperature, decay, hard, search_epochs, seed)
        if len(trunks) < max(branches):
            raise ValueError(f"learn_to_branch needs {max(branches)} trunks for branches {list(branches)}, got "
                             f"{len(trunks)}")
        self.tasks = {task.name: task for task in tasks}
        self.task_names = list(self.tasks)
        self.branches = [int(b) for b in branches]
        self.temperature0, self.min_temperature, self.decay = float(temperature), float(min_temperature), float(decay)
        if seed is None:  # drawn from torch's global generator, which the trainer seeds with train.seed
            seed = int(torch.randint(2**31 - 1, (1,)).item())
        self.hard, self.search_epochs, self.seed = bool(hard), search_epochs, int(seed)
        self.nodes = nn.ModuleList([nn.ModuleList([layers[b][d] for b in range(count)])
                                    for d, count in enumerate(self.branches)])
        self.heads = nn.ModuleDict({task.name: task.build_head(first[-1][0].out_features) for task in tasks})
        self.logits = nn.ParameterDict()  # only where a child has more than one parent to choose from
        for d in range(1, len(self.branches)):
            if self.branches[d - 1] > 1:
                self.logits[f"layer{d}"] = nn.Parameter(torch.zeros(self.branches[d], self.branches[d - 1]))
        if self.branches[-1] > 1:
            self.logits[HEADS] = nn.Parameter(torch.zeros(len(self.task_names), self.branches[-1]))
        self.generator = torch.Generator().manual_seed(self.seed)
        self.epochs_done = 0
        self.final: dict[str, Any] | None = None  # the fixed tree after finalize()
        self.last_sample: dict[str, Tensor] = {}  # the latest training forward's parent weights (detached)

    # -- the distributions ---------------------------------------------------------------
    def temperature(self) -> float:
        """The Gumbel-softmax temperature of the current epoch: ``max(min_temperature, temperature * decay^e)``."""
        return max(self.min_temperature, self.temperature0 * self.decay ** self.epochs_done)

    def probabilities(self) -> dict[str, Tensor]:
        """Each child's categorical distribution over its parents (rows sum to 1), by logits key."""
        return {key: torch.softmax(logit.detach(), dim=-1) for key, logit in self.logits.items()}

    def sample_weights(self) -> dict[str, Tensor]:
        """One Gumbel-softmax sample of every child's parent weights, noise from the model's seeded generator."""
        weights = {}
        for key, logit in self.logits.items():
            noise = gumbel_noise(logit.shape, self.generator)
            weights[key] = relaxed_sample(logit, noise, self.temperature(), self.hard)
        self.last_sample = {key: w.detach() for key, w in weights.items()}
        return weights

    # -- the function --------------------------------------------------------------------
    def forward(self, inputs: Tensor) -> dict[str, Tensor]:
        x = self.stem(inputs)
        if self.final is not None:
            return self._tree_forward(x, self.final, pruned=True)
        if not self.training:
            return self._tree_forward(x, self.discrete_tree(), pruned=False)
        weights = self.sample_weights()
        below = [x]
        for d, layer in enumerate(self.nodes):
            key = f"layer{d}"
            inputs_d = mix(weights[key], below) if key in weights else [below[0]] * len(layer)
            below = [node(h) for node, h in zip(layer, inputs_d)]
        tops = mix(weights[HEADS], below) if HEADS in weights else [below[0]] * len(self.task_names)
        return {name: self.heads[name](h) for name, h in zip(self.task_names, tops)}

    def _tree_forward(self, x: Tensor, tree: dict[str, Any], pruned: bool) -> dict[str, Tensor]:
        below = [x]
        for d, layer in enumerate(tree["layers"]):
            below = [self.nodes[d][b if pruned else spec["node"]](below[spec["parent"]])
                     for b, spec in enumerate(layer)]
        return {name: self.heads[name](below[tree["heads"][name]]) for name in self.task_names}

    def parameter_reach(self) -> Reach:
        everyone = frozenset(self.task_names)
        if self.final is None:
            reach: Reach = [(params(self.nodes), everyone)]
            reach += [(params(p), everyone) for key, p in self.logits.items() if key != HEADS]
            if HEADS in self.logits:  # one tensor, a row per task: shared unless there is one task
                reach.append(([self.logits[HEADS]], everyone))
            reach += [(params(self.heads[name]), frozenset([name])) for name in self.task_names]
            return reach
        reach = [(params(self.nodes[d][b]), frozenset(spec["tasks"]))
                 for d, layer in enumerate(self.final["layers"]) for b, spec in enumerate(layer)]
        return reach + [(params(self.heads[name]), frozenset([name])) for name in self.task_names]

    # -- the tree ------------------------------------------------------------------------
    def discrete_tree(self) -> dict[str, Any]:
        """The argmax tree, pruned of nodes no task reads: ``layers[d]`` lists the kept nodes of layer d (their
        index ``node`` among the candidates, ``parent`` index in the kept nodes below, ``tasks`` served);
        ``heads`` maps each task to its kept top node."""
        if self.final is not None:
            return copy.deepcopy(self.final)
        depth = len(self.branches)
        choice = {key: logit.detach().argmax(-1).tolist() for key, logit in self.logits.items()}
        head_parent = choice.get(HEADS, [0] * len(self.task_names))
        served: list[dict[int, list[str]]] = [{} for _ in range(depth)]
        for name, node in zip(self.task_names, head_parent):
            served[-1].setdefault(node, []).append(name)
        for d in range(depth - 1, 0, -1):
            parents = choice.get(f"layer{d}", [0] * self.branches[d])
            for node, names in served[d].items():
                served[d - 1].setdefault(parents[node], []).extend(names)
        kept = [sorted(s) for s in served]
        layers = []
        for d in range(depth):
            parents = choice.get(f"layer{d}", [0] * self.branches[d]) if d else [0] * self.branches[0]
            layers.append([{"node": node, "parent": kept[d - 1].index(parents[node]) if d else 0,
                            "tasks": [n for n in self.task_names if n in served[d][node]]} for node in kept[d]])
        heads = {name: kept[-1].index(node) for name, node in zip(self.task_names, head_parent)}
        return {"layers": layers, "heads": heads}

    def structure(self) -> dict[str, Any]:
        """The tree and the learned parent distributions as plain data (what ``learn_to_branch.json`` holds)."""
        tree = {key: value for key, value in self.discrete_tree().items() if key in ("layers", "heads")}
        return {"architecture": "learn_to_branch", "final": self.final is not None, "epochs": self.epochs_done,
                "fixed_after": None if self.final is None else self.final["fixed_after"],
                "temperature": self.temperature(), "branches": list(self.branches), **tree,
                "probabilities": self._recorded_probabilities}

    @property
    def _recorded_probabilities(self) -> dict[str, Any]:
        if self.final is not None:
            return copy.deepcopy(self.final.get("probabilities", {}))
        probabilities = {key: p.tolist() for key, p in self.probabilities().items()}
        if HEADS in probabilities:
            probabilities[HEADS] = dict(zip(self.task_names, probabilities[HEADS]))
        return probabilities

    @torch.no_grad()
    def finalize(self) -> dict[str, Any]:
        """Fix the argmax tree: drop the nodes no task reads and the branching logits; returns the tree."""
        if self.final is not None:
            return copy.deepcopy(self.final)
        tree = {**self.discrete_tree(), "probabilities": self._recorded_probabilities, "fixed_after": self.epochs_done}
        self._apply_final(tree)
        log.info("learn_to_branch: after %d epochs the tree is final: %s", self.epochs_done,
                 [[spec["tasks"] for spec in layer] for layer in tree["layers"]])
        return copy.deepcopy(tree)

    def _apply_final(self, tree: dict[str, Any]) -> None:
        layers = tree.get("layers") if isinstance(tree, dict) else None
        if not isinstance(layers, list) or len(layers) != len(self.branches):
            raise ValueError(f"learn_to_branch: a saved tree must have {len(self.branches)} layers (the trunk's); "
                             f"got {None if layers is None else len(layers)}: was it saved with another model.trunk?")
        if sorted(tree.get("heads", {})) != sorted(self.task_names):
            raise ValueError(f"learn_to_branch: the saved tree serves tasks {sorted(tree.get('heads', {}))}, this "
                             f"model {self.task_names}")
        for d, layer in enumerate(layers):
            if any(not 0 <= spec["node"] < self.branches[d] for spec in layer):
                raise ValueError(f"learn_to_branch: the saved tree's layer {d} names a node beyond its "
                                 f"{self.branches[d]} branches; set model.options.branches as when it was saved")
        self.nodes = nn.ModuleList([nn.ModuleList([self.nodes[d][spec["node"]] for spec in layer])
                                    for d, layer in enumerate(layers)])
        self.logits = nn.ParameterDict()
        self.final = copy.deepcopy(tree)

    def restructure(self, epoch: int, val: Any = None, device: torch.device | str = "cpu", lr: float = 0.0) -> bool:
        """End of ``epoch``: anneal the temperature; after ``search_epochs`` fix the tree (True: parameters changed)."""
        self.epochs_done = epoch
        if self.final is None and self.search_epochs is not None and epoch >= self.search_epochs:
            self.finalize()
            return True
        if self.final is None:
            log.info("learn_to_branch: epoch %d, argmax tree %s, next temperature %.4g", epoch,
                     [[spec["tasks"] for spec in layer] for layer in self.discrete_tree()["layers"]], self.temperature())
        return False

    # -- state ---------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        state = self.generator.get_state().numpy().tobytes()
        return {"final": self.final, "epochs": self.epochs_done,
                "generator": base64.b64encode(state).decode("ascii")}

    def get_extra_state(self) -> Tensor:
        """The fixed tree, the epoch and the Gumbel generator's state as the UTF-8 bytes of their JSON (a uint8
        tensor, so ``torch.load(weights_only=True)`` and the exporters accept it)."""
        return encode_tree(self._state())

    def set_extra_state(self, state: Any) -> None:
        saved = decode_tree(state)
        self._match_tree(saved.get("final"))
        self.epochs_done = int(saved.get("epochs", 0))
        if saved.get("generator"):
            raw = bytearray(base64.b64decode(saved["generator"]))
            self.generator.set_state(torch.frombuffer(raw, dtype=torch.uint8).clone())

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """Shape the model as the saved one first (searching, or its fixed tree), so its weights find their modules."""
        saved = state_dict.get(STATE_KEY)
        if saved is not None:
            self._match_tree(decode_tree(saved).get("final"))
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _match_tree(self, final: dict[str, Any] | None) -> None:
        """Become a searching model (``final`` None) or the fixed tree ``final``; weights are loaded afterwards."""
        if final == self.final:
            return
        if self.final is not None:  # e.g. a best.pt saved while searching, loaded after the tree was fixed
            self._restore_search()
        if final is not None:
            self._apply_final(final)

    def _restore_search(self) -> None:
        """Every candidate block and the branching logits again (fresh modules shaped as the kept ones)."""
        self.nodes = nn.ModuleList([nn.ModuleList([copy.deepcopy(layer[0]) for _ in range(count)])
                                    for layer, count in zip(self.nodes, self.branches)])
        device = next(self.nodes.parameters()).device
        for d in range(1, len(self.branches)):
            if self.branches[d - 1] > 1:
                self.logits[f"layer{d}"] = nn.Parameter(torch.zeros(self.branches[d], self.branches[d - 1],
                                                                    device=device))
        if self.branches[-1] > 1:
            self.logits[HEADS] = nn.Parameter(torch.zeros(len(self.task_names), self.branches[-1], device=device))
        self.final = None


def check_options(branches: Sequence[int], depth: int, temperature: float, min_temperature: float, decay: float,
                  hard: bool, search_epochs: int | None, seed: int | None) -> None:
    def whole(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if len(branches) != depth or not all(whole(b) and b >= 1 for b in branches):
        raise ValueError(f"model.options.branches must be one positive whole number of candidate blocks per trunk "
                         f"layer ({depth} layers: model.trunk.options.hidden), or one number for all; got "
                         f"{list(branches)!r}")
    for name, value in (("temperature", temperature), ("min_temperature", min_temperature)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"model.options.{name} must be a number > 0, got {value!r}")
    if min_temperature > temperature:
        raise ValueError(f"model.options.min_temperature ({min_temperature}) must not exceed temperature "
                         f"({temperature})")
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay <= 1:
        raise ValueError(f"model.options.decay must be in (0, 1] (the temperature's factor per epoch), got {decay!r}")
    if not isinstance(hard, bool):
        raise ValueError(f"model.options.hard must be true or false, got {hard!r}")
    if search_epochs is not None and not (whole(search_epochs) and search_epochs >= 1):
        raise ValueError(f"model.options.search_epochs must be a positive whole number of epochs or null, got "
                         f"{search_epochs!r}")
    if seed is not None and not whole(seed):
        raise ValueError(f"model.options.seed must be a whole number (the Gumbel draws' seed), got {seed!r}")


def build_learn_to_branch(trunk_factory: Callable[[], nn.Module], tasks: Sequence[Task],
                          branches: int | Sequence[int] | None = None, temperature: float = 5.0,
                          min_temperature: float = 0.5, decay: float = 0.8, hard: bool = False,
                          search_epochs: int | None = 5, seed: int | None = None) -> LearnToBranch:
    """Learning to branch (Guo, Lee & Ulbricht 2020) from an MLP trunk factory; ``branches`` is the number of
    candidate blocks per layer (one number for all, or a list; default: 1 at the bottom layer, one per task above)."""
    first = trunk_factory()
    depth = len(trunk_blocks(first)[1])
    if branches is None:
        branches = [len(tasks)] if depth == 1 else [1] + [len(tasks)] * (depth - 1)
    elif isinstance(branches, int) and not isinstance(branches, bool):
        branches = [branches] * depth
    elif not isinstance(branches, (list, tuple)):
        raise ValueError(f"model.options.branches must be a whole number or a list of them, got {branches!r}")
    count = max([b for b in branches if isinstance(b, int)] + [1])
    return LearnToBranch([first] + [trunk_factory() for _ in range(count - 1)], tasks, list(branches),
                         temperature=temperature, min_temperature=min_temperature, decay=decay, hard=hard,
                         search_epochs=search_epochs, seed=seed)
