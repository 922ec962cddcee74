"""Reading a run directory: the resolved config, per-epoch metrics, compare.json and grid.json.

Every part is optional, so a report can be written for a run that is partway through.
A repeated (model, epoch) record (an epoch logged again after a resume) counts once: the last.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskloom.evaluate.logged import dedupe_epochs, variant_records

log = logging.getLogger(__name__)


@dataclass
class RunData:
    """What the report draws from: config text, metrics.jsonl records, compare.json, grid.json, auto.json."""

    path: Path
    config_text: str | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    compare: dict[str, Any] | None = None
    grid: dict[str, Any] | None = None
    auto: dict[str, Any] | None = None

    def seeds(self) -> list[int]:
        """The seeds of a compare run (empty for a single run)."""
        for source in (self.compare, self.grid):
            if source and source.get("seeds"):
                return [int(s) for s in source["seeds"]]
        return []

    def all_seed_records(self, model: str) -> tuple[list[dict[str, Any]], int]:
        """``(records, seeds)``: a compare variant's records over every seed (its cells' metrics.jsonl),
        else the run's records of ``model`` with ``seeds`` 1."""
        seeds = self.seeds()
        if seeds:
            found = [s for s in seeds if (self.path / model / f"seed{s}" / "metrics.jsonl").is_file()]
            if found:
                return variant_records(self.path, model, found), len(found)
        return self.model_records(model), 1

    def models(self) -> list[str]:
        """Model names: the multi-task models first, then the single-task ones, each sorted by name."""
        names = list(dict.fromkeys(r["model"] for r in self.records))
        return sorted(names, key=lambda n: (n.startswith("single/"), n))

    def model_records(self, model: str) -> list[dict[str, Any]]:
        return sorted((r for r in self.records if r["model"] == model), key=lambda r: r["epoch"])

    def tasks(self) -> list[str]:
        if self.compare and isinstance(self.compare.get("tasks"), dict):
            return list(self.compare["tasks"])
        names: dict[str, None] = {}
        for record in self.records:
            names.update(dict.fromkeys(record.get("train_loss") or {}))
        return list(names)

    def main_metric(self, task: str) -> str | None:
        if self.compare and task in self.compare.get("tasks", {}):
            return self.compare["tasks"][task].get("metric")
        for record in self.records:
            metrics = (record.get("val") or {}).get(task)
            if metrics:
                return next(iter(metrics))
        return None


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        log.warning("%s is not valid JSON (%s); the report leaves it out", path, error)
        return None


def load_run(run_dir: str | Path) -> RunData:
    """Load whatever of the run directory's files exist; malformed metric lines are skipped with a warning."""
    path = Path(run_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"run directory {path} does not exist; pass the directory a run wrote")
    data = RunData(path)
    config = path / "config.yaml"
    if config.is_file():
        data.config_text = config.read_text()
    metrics = path / "metrics.jsonl"
    if metrics.is_file():
        for number, line in enumerate(metrics.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s line %d is not JSON; skipped", metrics, number)
                continue
            if not isinstance(record, dict) or "model" not in record or "epoch" not in record:
                log.warning("%s line %d lacks 'model' or 'epoch'; skipped", metrics, number)
                continue
            data.records.append(record)
    data.records = dedupe_epochs(data.records)
    data.compare = _read_json(path / "compare.json")
    data.grid = _read_json(path / "grid.json")
    data.auto = _read_json(path / "auto.json")
    return data
