"""Headless Chromium as a test harness: what a page logs, whether its images decode, a full-height screenshot.

The page is copied with a small recording script first in its <head>: it records uncaught
errors, failed resource loads (an <img> that does not decode fires ``error``) and
``console.error`` calls, and after ``load`` writes them, every <img>'s natural size and
every section heading into a ``<pre id="taskloom-harness">`` that ``--dump-dom`` returns.
Chromium's own console lines on stderr (``--enable-logging=stderr --v=1``) are kept too.
The page under test is never changed: only its copy carries the script.
"""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
INSTALL_LOG = ARTIFACTS / "chromium-install.log"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=1", "--virtual-time-budget=10000"]

RECORDER = """<script>(function () {
  var errors = [], consoleErrors = [];
  window.addEventListener("error", function (event) {
    var target = event.target;
    if (target && target !== window && target.tagName) {
      errors.push("failed to load <" + target.tagName.toLowerCase() + "> " + String(target.src || "").slice(0, 40));
    } else {
      errors.push("uncaught: " + event.message);
    }
  }, true);
  window.addEventListener("unhandledrejection", function (event) { errors.push("unhandled: " + event.reason); });
  var original = console.error;
  console.error = function () {
    consoleErrors.push(Array.prototype.map.call(arguments, String).join(" "));
    return original.apply(console, arguments);
  };
  window.addEventListener("load", function () {
    var images = Array.prototype.map.call(document.images, function (img) {
      return {alt: img.alt, width: img.naturalWidth, height: img.naturalHeight, complete: img.complete};
    });
    var headings = Array.prototype.map.call(document.querySelectorAll("section > h2"), function (h) {
      var box = h.getBoundingClientRect();
      return {id: h.parentNode.id, text: h.textContent, visible: box.width > 0 && box.height > 0};
    });
    var height = Math.max(document.documentElement.scrollHeight, document.body.scrollHeight);
    var out = document.createElement("pre");
    out.id = "taskloom-harness";
    out.textContent = JSON.stringify({errors: errors, console: consoleErrors, images: images,
                                      headings: headings, height: height});
    document.body.appendChild(out);
  });
})();</script>"""


def chromium() -> str | None:
    """The chromium executable on PATH (Debian's package installs /usr/bin/chromium), or None."""
    return shutil.which("chromium")


def skip_reason() -> str:
    """Why the browser test cannot run: whether `make browser` tried to install chromium, and how that failed."""
    if not INSTALL_LOG.is_file():
        return ("chromium is not on PATH and no install was tried (no test-artifacts/chromium-install.log): run "
                "`make browser` or `apt-get install -y chromium`")
    lines = [line.strip() for line in INSTALL_LOG.read_text(errors="replace").splitlines() if line.strip()]
    first = lines[0] if lines else "(empty log)"
    if first.startswith("install not tried"):
        return f"chromium is not on PATH; {first}"
    tail = " | ".join(lines[-3:])
    return f"chromium is not on PATH; `make browser` tried to install it and failed: {tail}"


@dataclass
class PageCheck:
    """What the recorder saw: errors, console.error calls, Chromium's console lines, images, headings, height."""

    errors: list[str]
    console: list[str]
    chromium_console: list[str]
    images: list[dict[str, Any]]
    headings: list[dict[str, Any]]
    height: int
    stderr: str = field(repr=False, default="")

    @property
    def problems(self) -> list[str]:
        return self.errors + self.console + self.chromium_console


def _run(arguments: list[str], profile: Path) -> subprocess.CompletedProcess:
    command = [chromium() or "chromium", *FLAGS, f"--user-data-dir={profile}", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def _with_recorder(text: str) -> str:
    match = re.search(r"<meta charset=[^>]*>", text, re.IGNORECASE) or re.search(r"<head[^>]*>", text, re.IGNORECASE)
    if match is None:
        return RECORDER + text
    return text[:match.end()] + RECORDER + text[match.end():]


def check_page(page: Path) -> PageCheck:
    """Load a copy of ``page`` with the recorder in headless Chromium and return what it recorded."""
    with tempfile.TemporaryDirectory(prefix="taskloom-browser-") as scratch:
        scratch = Path(scratch)
        copy = scratch / "page.html"
        copy.write_text(_with_recorder(page.read_text(encoding="utf-8")), encoding="utf-8")
        done = _run(["--dump-dom", copy.as_uri()], scratch / "profile")
    if done.returncode != 0:
        raise RuntimeError(f"chromium exited {done.returncode}: {done.stderr[-2000:]}")
    found = re.search(r'<pre id="taskloom-harness">(.*?)</pre>', done.stdout, re.S)
    if found is None:
        raise RuntimeError(f"the recorder wrote nothing (the load event never fired?): {done.stderr[-2000:]}")
    result = json.loads(html.unescape(found.group(1)))
    console_lines = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return PageCheck(result["errors"], result["console"], console_lines, result["images"], result["headings"],
                     int(result["height"]), done.stderr)


def screenshot(page: Path, path: Path, height: int, width: int = 1280) -> Path:
    """A PNG of ``page`` (unchanged) in a ``width`` x ``height`` window: the whole page when ``height`` is its own."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="taskloom-browser-") as scratch:
        done = _run([f"--screenshot={path}", f"--window-size={width},{height}", "--hide-scrollbars",
                     page.resolve().as_uri()], Path(scratch) / "profile")
    if done.returncode != 0 or not path.is_file():
        raise RuntimeError(f"chromium could not take the screenshot ({done.returncode}): {done.stderr[-2000:]}")
    return path
