"""Every Python block of the README and docs/ type-checks against the installed module's stubs.

The blocks talk to stores and namespaces a reader has and this machine does not, so they are
checked as a compiler would check them (mypy --strict: every call, keyword and attribute must
exist with the right types), not run; the behaviour they show is what the rest of this suite
runs.
"""

from __future__ import annotations

import re
from pathlib import Path

from test_stubs import have_mypy, mypy_strict

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.M | re.S)


def python_blocks() -> list[tuple[str, str]]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    out = []
    for f in files:
        text = f.read_text()
        for m in BLOCK.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            out.append((f"{f.relative_to(ROOT)}:{line}", m.group(1)))
    return out


def test_the_docs_have_python_blocks() -> None:
    # A check of no blocks would pass whatever the docs say.
    assert python_blocks(), "no ```python block found in README.md or docs/"


def test_every_python_block_type_checks() -> None:
    have_mypy()
    failures = []
    for where, code in python_blocks():
        out = mypy_strict(code)
        if out.returncode != 0:
            failures.append(f"{where}:\n{out.stdout}{out.stderr}")
    assert not failures, "\n".join(failures)
