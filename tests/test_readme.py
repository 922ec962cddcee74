"""Every Python example in the README runs, each on its own, in an empty working directory."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[tuple[int, str]]:
    """``(line, code)`` of every ```python block of the README, ``line`` where the code starts."""
    text = README.read_text()
    return [(text.count("\n", 0, match.start(1)) + 1, match.group(1))
            for match in re.finditer(r"```python\n(.*?)```", text, flags=re.S)]


def test_the_readme_has_python_examples_including_a_hand_written_loop():
    blocks = [code for _, code in python_blocks()]
    assert len(blocks) >= 5
    assert any("task_losses(" in code and "balancer.backward(" in code for code in blocks)


@pytest.mark.parametrize("line, code", python_blocks(), ids=lambda value: f"line{value}" if isinstance(value, int)
                         else "")
def test_readme_python_example_runs(line, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an example that writes a file or a run directory writes it here
    exec(compile("\n" * (line - 1) + code, str(README), "exec"), {"__name__": "readme_example"})


def test_readme_quick_start_has_exactly_the_two_commands():
    quick = README.read_text().split("## Quick start", 1)[1].split("##", 1)[0]
    commands = re.findall(r"^make (\w+)", quick, flags=re.M)
    assert commands == ["demo", "test"]


def test_readme_config_example_is_valid():
    import yaml

    from taskloom.config import parse_config

    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks
    for block in blocks:
        parse_config(yaml.safe_load(block), "README")
