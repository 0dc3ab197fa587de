"""The README's "Extending backprop" definitions (a softsign activation, the Recenter layer, the
LogCoshLoss), executed from the README itself, so the tests and the worker processes of the
data-parallel tests use exactly the code the README shows."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def extending_blocks() -> list[str]:
    """The Python code blocks of the README's "Extending backprop" section, in order."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Extending backprop", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


_definitions: dict = {"__name__": __name__}  # classes pickle by reference to this module
exec(compile(extending_blocks()[0], f"{README}:Extending backprop", "exec"), _definitions)  # noqa: S102
Recenter = _definitions["Recenter"]
LogCoshLoss = _definitions["LogCoshLoss"]
softsign = _definitions["softsign"]
