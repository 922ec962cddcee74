"""Built-in data sets, registered by name. Each loader returns :class:`~taskloom.data.DataSplits`."""
from __future__ import annotations

import inspect
import re
from typing import Any

from taskloom.data.dataset import DataSplits
from taskloom.registry import Registry

DATASETS: Registry = Registry("data set")


def load_dataset(name: str, **options: Any) -> DataSplits:
    """Load the built-in data set ``name`` with its options (tasks, split, seed, paths, ...)."""
    return DATASETS.get(name)(**options)


SET_BY_CONFIG = {"tasks": "tasks", "val_fraction": "data.val_fraction", "test_fraction": "data.test_fraction",
                 "seed": "data.split_seed", "stratify": "data.split.stratify",
                 "split_key": "data.split.key"}


def _documented(doc: str) -> dict[str, str]:
    """Descriptions from an ``Options:`` section (``name: text``, continued on deeper-indented lines)."""
    lines = doc.expandtabs().splitlines()
    out: dict[str, str] = {}
    start = next((i for i, line in enumerate(lines) if line.strip() == "Options:"), None)
    if start is None:
        return out
    indent, current = None, None
    for line in lines[start + 1:]:
        if not line.strip():
            break
        depth = len(line) - len(line.lstrip())
        indent = depth if indent is None else indent
        match = re.match(r"\s*([A-Za-z_]\w*):\s*(.*)", line)
        if depth == indent and match:
            current = match.group(1)
            out[current] = match.group(2).strip()
        elif depth > indent and current is not None:
            out[current] += " " + line.strip()
        else:
            break
    return out


def _mentioned(doc: str, name: str) -> str:
    """The docstring's sentences that mention ``name`` in double backquotes (loaders without an Options section)."""
    text = " ".join(doc.split())
    sentences = re.split(r"(?<=[.;])\s+", text)
    return " ".join(s for s in sentences if f"``{name}``" in s).replace("``", "")


def describe_options(name: str) -> list[dict[str, str]]:
    """Each option of data set ``name``: its name, default, type and description, from the loader's signature and
    docstring; options taskloom fills from the config say which field sets them."""
    loader = DATASETS.get(name)
    doc = inspect.getdoc(loader) or ""
    documented = _documented(doc)
    rows = []
    for parameter in inspect.signature(loader).parameters.values():
        if parameter.kind not in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
            continue
        default = "required" if parameter.default is parameter.empty else repr(parameter.default)
        annotation = parameter.annotation if isinstance(parameter.annotation, str) else getattr(
            parameter.annotation, "__name__", str(parameter.annotation))
        description = documented.get(parameter.name) or _mentioned(doc, parameter.name)
        if parameter.name in SET_BY_CONFIG:
            tail = f"; {description}" if description else ""
            description = f"set by {SET_BY_CONFIG[parameter.name]} in a config{tail}"
        rows.append({"option": parameter.name, "default": default, "type": str(annotation),
                     "description": description})
    return rows


# each loader module registers itself on import
from taskloom.data.datasets import adult, multimnist, synthetic, table, yeast  # noqa: E402,F401
from taskloom.data.datasets import petrogold  # noqa: E402,F401

__all__ = ["DATASETS", "describe_options", "load_dataset"]
