"""The HTML report of a short real compare run, checked as text, against hand computations and in headless Chromium."""
from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from report import browser
from report.run_fixture import METHODS, SEEDS, TASKS, write_fixture_run
from taskloom.report import html as report_html
from taskloom.report import load_run, plots, write_report
from taskloom.report.html import SECTIONS, variant_matrices
from taskloom.report.plots import pareto_front

VARIANTS = tuple(f"hard+{m}" for m in METHODS)
# learning curves of 3 tasks, uncertainty's weights, conflict + affinity of 2 variants, change strip, Pareto pairs
IMAGES_IN_FIXTURE = 3 + 1 + 2 * 2 + 1 + 1
needs_chromium = pytest.mark.skipif(browser.chromium() is None, reason=browser.skip_reason())


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return write_fixture_run(tmp_path_factory.mktemp("run") / "fixture-run")


@pytest.fixture(scope="module")
def report(run_dir) -> Path:
    return write_report(run_dir)


def _images(text: str) -> list[str]:
    return re.findall(r"<img src='([^']*)'", text)


def _results(run_dir: Path, variant: str, seed: int) -> dict:
    return json.loads((run_dir / variant / f"seed{seed}" / "results.json").read_text())


def test_report_is_self_contained_with_every_section(report):
    text = report.read_text()
    assert report.name == "report.html"
    for key, title in SECTIONS:
        assert f"<section id='{key}'><h2>{title}</h2>" in text
    assert "<script" not in text.lower()
    without_images = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text)
    assert not re.search(r"https?:|//|url\(|@import", without_images, re.IGNORECASE)
    assert all(link.startswith("#") for link in re.findall(r"href='([^']*)'", text))
    images = _images(text)
    assert len(images) == IMAGES_IN_FIXTURE
    for uri in images:
        assert uri.startswith("data:image/png;base64,")
        pixels = matplotlib.image.imread(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])), format="png")
        assert pixels.shape[0] > 50 and pixels.shape[1] > 50
    absent = re.findall(r"<p class='absent'>(.*?)</p>", text)
    assert all("task weights are constant over training" in line for line in absent), absent  # equal weighting


def test_report_tables_match_a_hand_computation_from_the_cells(report, run_dir):
    """Means over seeds, relative change and delta-m (Maninis et al. 2019; mse: lower is better) by hand."""
    text = report.read_text()
    single = {s: {t: _results(run_dir, f"single/{t}", s)["values"][t] for t in TASKS} for s in SEEDS}
    for variant in VARIANTS:
        values = {s: _results(run_dir, variant, s)["values"] for s in SEEDS}
        for task in TASKS:
            mean = sum(values[s][task] for s in SEEDS) / len(SEEDS)
            base = sum(single[s][task] for s in SEEDS) / len(SEEDS)
            assert f"{-100 * (mean - base) / base:+.2f}%" in text
        base = {t: sum(single[s][t] for s in SEEDS) / len(SEEDS) for t in TASKS}  # changes against the seed mean
        per_seed = [sum(-100 * (values[s][t] - single[s][t]) / base[t] for t in TASKS) / len(TASKS) for s in SEEDS]
        assert f"{sum(per_seed) / len(per_seed):+.2f}%" in text
        assert f"<td class='name'>{variant}</td>" in text
    assert "Intervals cover seeds and test rows" in text and "paired bootstrap over test rows" in text
    assert "name: report-fixture" in text


def _hand_mean(paths: list[Path], key: str) -> dict[tuple[str, str], float]:
    sums: dict[tuple[str, str], list[float]] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            record = json.loads(line)
            for a, row in (record.get(key) or {}).items():
                for b, value in row.items():
                    if value is not None:
                        sums.setdefault((a, b), []).append(value)
    return {pair: sum(v) / len(v) for pair, v in sums.items()}


def test_one_heatmap_per_variant_over_all_its_seeds(run_dir):
    entries = variant_matrices(load_run(run_dir))
    assert [(e["model"], e["key"]) for e in entries] == [(v, k) for v in VARIANTS for k in ("conflict", "affinity")]
    for entry in entries:
        paths = [run_dir / entry["model"] / f"seed{s}" / "metrics.jsonl" for s in SEEDS]
        expected = _hand_mean(paths, entry["key"])
        assert entry["epochs"] == 2 * len(SEEDS) and entry["seeds"] == len(SEEDS)
        for (a, b), value in expected.items():
            assert entry["matrix"][a][b] == pytest.approx(value)
    grouping = [e for e in entries if e["grouping"]]
    assert [(e["model"], e["key"]) for e in grouping] == [("hard+equal", "affinity")]  # the first variant groups


def test_heatmap_titles_name_the_variant_and_the_grouping_matrix_is_labelled(report):
    text = report.read_text()
    for variant in VARIANTS:
        assert f"<h3>{variant}</h3>" in text
        assert f"alt='conflict heatmap of {variant}'" in text and f"alt='affinity heatmap of {variant}'" in text
    assert "heatmap of group/" not in text
    assert text.count("chose the task groups by") == 1


def _write(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_matrices_of_variants_and_group_models_are_not_mixed(tmp_path):
    """Hand-made run: two variants with known matrices and a group model far off; each heatmap is its own mean."""
    def matrix(x: float) -> dict:
        return {"a": {"a": 1.0, "b": x}, "b": {"a": -x, "b": 1.0}}

    compare = {"tasks": {"a": {"metric": "mse", "higher_is_better": False},
                         "b": {"metric": "mse", "higher_is_better": False}},
               "seeds": [0, 1], "baseline": "single",
               "variants": {"single": {"kind": "single", "values": {"0": {"a": 1.0, "b": 1.0}}},
                            "hard+equal": {"kind": "multi", "values": {"0": {"a": 1.0, "b": 1.0}}},
                            "hard+pcgrad": {"kind": "multi", "values": {"0": {"a": 1.0, "b": 1.0}}},
                            "groups-1": {"kind": "groups", "values": {"0": {"a": 1.0, "b": 1.0}}}}}
    (tmp_path / "compare.json").write_text(json.dumps(compare))
    _write(tmp_path / "hard+equal" / "seed0" / "metrics.jsonl",
           [{"model": "hard+equal", "epoch": 1, "conflict": matrix(0.2)},
            {"model": "hard+equal", "epoch": 2, "conflict": matrix(0.4)}])
    _write(tmp_path / "hard+equal" / "seed1" / "metrics.jsonl",
           [{"model": "hard+equal", "epoch": 1, "conflict": matrix(0.9)}])
    _write(tmp_path / "hard+pcgrad" / "seed0" / "metrics.jsonl", [{"model": "hard+pcgrad", "epoch": 1,
                                                                  "conflict": matrix(-0.5)}])
    _write(tmp_path / "group" / "a+b" / "seed0" / "metrics.jsonl", [{"model": "group/a+b", "epoch": 1,
                                                                    "conflict": matrix(-100.0)}])
    entries = {(e["model"], e["key"]): e for e in variant_matrices(load_run(tmp_path))}
    assert set(entries) == {("hard+equal", "conflict"), ("hard+pcgrad", "conflict")}
    assert entries[("hard+equal", "conflict")]["matrix"]["a"]["b"] == pytest.approx((0.2 + 0.4 + 0.9) / 3)
    assert entries[("hard+equal", "conflict")]["seeds"] == 2
    assert entries[("hard+pcgrad", "conflict")]["matrix"]["b"]["a"] == pytest.approx(0.5)


def test_signals_put_the_other_tasks_plateaus_next_to_each_gain(tmp_path):
    # a falls to 1 at epoch 2 then flat: plateau 2; b keeps falling 10% a step: plateau 5 (the last)
    curves = {"a": [2.0, 1.0, 1.0, 1.0, 1.0], "b": [10.0, 9.0, 8.1, 7.29, 6.561]}
    records = [{"model": f"single/{t}", "epoch": e + 1, "train_loss": {t: v}}
               for t, curve in curves.items() for e, v in enumerate(curve)]
    _write(tmp_path / "metrics.jsonl", records)
    text = write_report(tmp_path).read_text()
    section = text.split("id='signals'")[1].split("</section>")[0]
    rows = re.findall(r"<tr><td class='name'>(a|b)</td>(.*?)</tr>", section)
    by_task = dict(rows)
    assert "<td>2 / 5</td><td class='name aux'>b 5</td>" in by_task["a"]
    assert "<td>5 / 5</td><td class='name aux'>a 2</td>" in by_task["b"]
    # b's relative slope at 50% (epoch index 2): numpy.gradient (7.29 - 9) / 2 = -0.855, over b's first loss 10
    assert f"<td>{(7.29 - 9.0) / 2 / 10:+.3f}</td>" in by_task["a"]
    assert "plateaus early" in text and "keep improving" in text


def test_learning_curves_get_training_and_validation_loss(tmp_path, monkeypatch):
    seen = {}

    def spy(task, train, val, metric, val_loss=None):
        seen[task] = (train, val_loss, val)
        return "data:image/png;base64,AAAA"

    monkeypatch.setattr(report_html.plots, "learning_curves", spy)
    _write(tmp_path / "metrics.jsonl", [
        {"model": "multitask", "epoch": e, "train_loss": {"a": 3.0 - e}, "val_loss": {"a": 4.0 - e / 2},
         "val": {"a": {"mse": 5.0 - e}}} for e in (1, 2)])
    write_report(tmp_path)
    train, val_loss, val = seen["a"]
    assert train == {"multitask": [(1, 2.0), (2, 1.0)]}
    assert val_loss == {"multitask": [(1, 3.5), (2, 3.0)]}
    assert val == {"multitask": [(1, 4.0), (2, 3.0)]}


def test_many_tasks_get_a_relative_change_strip_with_the_pareto_variants_marked(tmp_path, monkeypatch):
    tasks = [f"t{i}" for i in range(14)]
    base = {t: 1.0 for t in tasks}
    better_on_t0 = {**base, "t0": 1.1}          # higher is better: +10% on t0, same elsewhere
    worse_everywhere = {t: 0.9 for t in tasks}  # -10% on every task: dominated by the baseline
    compare = {"tasks": {t: {"metric": "auroc", "higher_is_better": True} for t in tasks}, "seeds": [0],
               "baseline": "single",
               "variants": {"single": {"kind": "single", "values": {"0": base}},
                            "hard+up": {"kind": "multi", "values": {"0": better_on_t0}},
                            "hard+down": {"kind": "multi", "values": {"0": worse_everywhere}}}}
    (tmp_path / "compare.json").write_text(json.dumps(compare))
    seen = {}
    original = plots.relative_change_strip

    def spy(changes, names, pareto, baseline):
        seen.update(changes=changes, pareto=pareto, baseline=baseline)
        return original(changes, names, pareto, baseline)

    monkeypatch.setattr(report_html.plots, "relative_change_strip", spy)
    text = write_report(tmp_path).read_text()
    assert seen["baseline"] == "single"
    assert seen["changes"]["hard+up"]["t0"] == pytest.approx(10.0)
    assert seen["changes"]["hard+up"]["t13"] == pytest.approx(0.0)
    assert all(seen["changes"]["hard+down"][t] == pytest.approx(-10.0) for t in tasks)
    # hard+up dominates single (as good everywhere, better on t0); both dominate hard+down
    assert seen["pareto"] == {"single": False, "hard+up": True, "hard+down": False}
    assert "alt='relative change per task of every variant'" in text
    assert "the front, and the strip above, cover all tasks" in text


def test_missing_data_is_said_in_one_line_per_section(tmp_path):
    (tmp_path / "config.yaml").write_text("name: empty\n")
    text = write_report(tmp_path).read_text()
    assert text.count("class='absent'") == len(SECTIONS)  # all but config, and two lines for conflict + affinity
    assert "No comparison yet" in text and "No per-epoch metrics" in text and "<img" not in text


def test_malformed_lines_are_skipped_and_a_repeated_epoch_counts_once(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        '{"model": "multitask", "epoch": 1, "train_loss": {"a": 1.0}}\nnot json\n{"epoch": 2}\n'
        '{"model": "multitask", "epoch": 2, "train_loss": {"a": 0.9}}\n'
        '{"model": "multitask", "epoch": 2, "train_loss": {"a": 0.5}}\n')
    records = load_run(tmp_path).records
    assert [(r["epoch"], r["train_loss"]["a"]) for r in records] == [(1, 1.0), (2, 0.5)]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_run(tmp_path / "nowhere")


def test_pareto_front_respects_the_metric_direction():
    points = np.array([[0.9, 2.0], [0.8, 1.0], [0.7, 3.0], [0.9, 2.5]])
    assert pareto_front(points, [True, False]).tolist() == [True, True, False, False]
    assert pareto_front(points, [True, True]).tolist() == [False, False, True, True]


def test_constant_weights_are_said_in_one_line_not_plotted(tmp_path):
    lines = [{"model": "multitask", "epoch": e, "train_loss": {"a": 1.0 / e, "b": 2.0 / e},
              "weights": {"a": 1.0, "b": 1.0}} for e in (1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    text = write_report(tmp_path).read_text()
    assert "task weights are constant over training (a 1, b 1)" in text
    assert text.count("<img") == 2  # the learning curves of a and b only


ONE_PIXEL = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAA"
             "AABJRU5ErkJggg==")  # a valid 1 x 1 PNG
CONTROL_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>control</title></head><body>
<section id="s"><h2>Shown</h2><img alt="good" src="{one_pixel}"></section>
<img alt="broken" src="data:image/png;base64,AAAABBBB">
<script>console.error("planted console error");</script><script>notDefinedAnywhere();</script>
</body></html>"""


@needs_chromium
def test_the_browser_harness_catches_a_console_error_and_a_broken_image(tmp_path):
    page = tmp_path / "control.html"
    page.write_text(CONTROL_PAGE.replace("{one_pixel}", ONE_PIXEL))
    seen = browser.check_page(page)
    assert seen.console == ["planted console error"]
    assert any("notDefinedAnywhere" in e for e in seen.errors)
    assert any(e.startswith("failed to load <img>") for e in seen.errors)
    assert {i["alt"]: i["width"] for i in seen.images} == {"good": 1, "broken": 0}
    assert [h["text"] for h in seen.headings] == ["Shown"]
    assert any("planted console error" in line for line in seen.chromium_console)


@needs_chromium
def test_report_in_headless_chromium(report):
    seen = browser.check_page(report)
    assert seen.problems == [], seen.problems
    assert [(h["id"], h["text"]) for h in seen.headings] == SECTIONS
    assert all(h["visible"] for h in seen.headings)
    assert len(seen.images) == len(_images(report.read_text())) == IMAGES_IN_FIXTURE
    undecoded = [i["alt"] for i in seen.images if not (i["complete"] and i["width"] > 0 and i["height"] > 0)]
    assert not undecoded, undecoded
    shot = browser.screenshot(report, browser.ARTIFACTS / "report.png", seen.height)
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (seen.height, 1280)  # the whole page, top to bottom
    assert pixels[..., :3].std() > 0.05  # not a blank page
    (browser.ARTIFACTS / "report.html").write_text(report.read_text())
