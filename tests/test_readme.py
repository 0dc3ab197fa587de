"""Every Python block of the README runs as written: all of them in order, in one namespace (as
a reader pasting them one after another into one session), in a fresh folder."""

from __future__ import annotations

import re
import textwrap

from readme_extensions import README

# A block, possibly indented inside a list item: the fence's indentation closes it too.
BLOCK = re.compile(r"^( *)```python\n(.*?)^\1```", re.M | re.S)


def python_blocks() -> list[tuple[int, str]]:
    """(line number, code) of each ```python block of the README, dedented, in order."""
    text = README.read_text(encoding="utf-8")
    return [(text.count("\n", 0, match.start()) + 2, textwrap.dedent(match.group(2)))
            for match in BLOCK.finditer(text)]


def test_every_python_block_of_the_readme_runs_as_written(tmp_path, monkeypatch):
    from backprop.backends.activations import ACTIVATIONS
    from backprop.layers import LAYERS

    monkeypatch.chdir(tmp_path)
    # The README registers its own Recenter and softsign, as a fresh process would:
    # readme_extensions' are set aside meanwhile, and the other tests keep them.
    monkeypatch.delitem(LAYERS, "Recenter")
    monkeypatch.delitem(ACTIVATIONS, "softsign")
    blocks = python_blocks()
    assert len(blocks) >= 5
    namespace: dict = {"__name__": "readme"}
    after: dict = {}  # the namespace after each block, by the block's first line
    for line, code in blocks:
        # compiled at its README line numbers, so a failure's traceback points into the README
        exec(compile("\n" * (line - 1) + code, str(README), "exec"), namespace)  # noqa: S102
        after.setdefault(code.splitlines()[0], dict(namespace))

    # what the blocks say they do
    tour = after["import numpy as np"]
    bp = tour["bp"]
    assert tour["probs"].shape == (5, 10)
    assert bp.evaluate(tour["clf"], tour["X_test"], tour["y_test"], loss=bp.CrossEntropyLoss())["accuracy"] > 0.9
    custom = after["rng = np.random.default_rng(0)"]
    assert custom["history"]["loss"][-1] < custom["history"]["loss"][0] / 2
    assert custom["net"].layers[1].label().startswith("Recenter(")
    assert after["from sklearn.datasets import load_digits"]["search"].best_score_ > 0.9
    for name in ("model.safetensors", "custom.safetensors", "resume.safetensors"):
        assert (tmp_path / name).exists(), name
