"""Every registered balancing method is listed by ``taskloom list`` and documented in the README's table."""
from __future__ import annotations

import re
from pathlib import Path

from taskloom.balancing import BALANCERS
from taskloom.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"


def test_taskloom_list_names_every_balancing_method(capsys) -> None:
    assert main(["list"]) == 0
    listed = capsys.readouterr().out.split("balancing methods", 1)[1]
    missing = [name for name in BALANCERS if not re.search(rf"\b{name}\b", listed)]
    assert not missing, f"taskloom list does not show {missing}"


def test_readme_table_documents_every_balancing_method() -> None:
    section = README.read_text().split("## Balancing methods", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| (.+?) \|", section, flags=re.M))
    assert sorted(rows) == sorted(BALANCERS)
