"""The HTML report from a small real run directory, checked as text and in headless Chromium."""
from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image
import pytest

from report.run_fixture import write_fixture_run
from taskloom.report import load_run, write_report
from taskloom.report.html import SECTIONS
from taskloom.report.plots import pareto_front

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
IMAGES_IN_FIXTURE = 3 + 1 + 2 + 1  # learning curves per task, DWA weights, two heatmaps, Pareto


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return write_fixture_run(tmp_path_factory.mktemp("run") / "fixture-run")


@pytest.fixture(scope="module")
def report(run_dir) -> Path:
    return write_report(run_dir)


def _images(text: str) -> list[str]:
    return re.findall(r"<img src='([^']*)'", text)


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
    assert "class='absent'" not in text


def test_report_tables_carry_the_comparison(report, run_dir):
    text = report.read_text()
    comparison = json.loads((run_dir / "comparison.json").read_text())
    assert f"{comparison['delta_m']:+.2f}%" in text
    for task in comparison["tasks"]:
        assert f"<td class='name'>{task}</td>" in text
    for variant in ("single", "hard+ew", "hard+dwa"):
        assert f"<td class='name'>{variant}</td>" in text
    assert "paired t-test over 2 seeds" in text
    assert "name: report-fixture" in text


def test_missing_data_is_said_in_one_line_per_section(tmp_path):
    (tmp_path / "config.yaml").write_text("name: empty\n")
    text = write_report(tmp_path).read_text()
    assert text.count("class='absent'") == len(SECTIONS)  # all but config, and two lines for conflict + affinity
    assert "No comparison yet" in text and "No per-epoch metrics" in text and "<img" not in text


def test_malformed_lines_are_skipped(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"model": "multitask", "epoch": 1, "train_loss": {"a": 1.0}}\nnot json\n'
                                            '{"epoch": 2}\n')
    assert len(load_run(tmp_path).records) == 1
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_run(tmp_path / "nowhere")


def test_pareto_front_respects_the_metric_direction():
    import numpy as np

    points = np.array([[0.9, 2.0], [0.8, 1.0], [0.7, 3.0], [0.9, 2.5]])
    assert pareto_front(points, [True, False]).tolist() == [True, True, False, False]
    assert pareto_front(points, [True, True]).tolist() == [False, False, True, True]


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent: apt-get install -y chromium")
def test_report_in_headless_chromium(report, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "report.png"
    common = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    url = report.resolve().as_uri()
    shot = subprocess.run(common + [f"--screenshot={screenshot}", "--window-size=1280,4000", url],
                          capture_output=True, text=True, timeout=120)
    dom = subprocess.run(common + ["--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert shot.returncode == 0 and dom.returncode == 0, shot.stderr[-2000:] + dom.stderr[-2000:]
    console = [line for line in (shot.stderr + dom.stderr).splitlines()
               if "CONSOLE" in line or "Uncaught" in line or "Failed to load resource" in line]
    assert not console, console
    for key, title in SECTIONS:
        assert re.search(rf'<section id="{key}"><h2>{re.escape(title)}</h2>', dom.stdout), key
    assert len(re.findall(r'<img src="data:image/png;base64,', dom.stdout)) == IMAGES_IN_FIXTURE
    pixels = matplotlib.image.imread(screenshot)
    assert pixels.shape[:2] == (4000, 1280)
    assert pixels[..., :3].std() > 0.05  # not a blank page
    shutil.copy(report, ARTIFACTS / "report.html")


def test_constant_weights_are_said_in_one_line_not_plotted(tmp_path):
    lines = [{"model": "multitask", "epoch": e, "train_loss": {"a": 1.0 / e, "b": 2.0 / e},
              "weights": {"a": 1.0, "b": 1.0}} for e in (1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    text = write_report(tmp_path).read_text()
    assert "task weights are constant over training (a 1, b 1)" in text
    assert text.count("<img") == 2  # the learning curves of a and b only
