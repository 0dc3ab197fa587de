"""Fused ops: one module each, everything about the op in it.

An array primitive (allocation, copies, views, matmul, reductions, row gathers, finiteness, the
activation table's functors) lives on `Backend`. A *fused op* (a loss with its gradient, a norm
layer's passes, an optimizer's update, dropout, a penalty, a metric's counts) is one module of
this package, as an activation is one entry of the activation table. The module holds:

- the math, in the docstring of its reference;
- its **reference**, written with Array API functions on `backend.xp` only: the definition of
  what the op computes, run by the reference backend (and on array-api-strict by a test);
- optionally a **NumPy fast path** with the same signature (same results, fewer NumPy calls);
- optionally its **CuPy launch** with the same signature: the host-side logic (grid choice,
  two-launch reductions, bias corrections) around the kernels of `kernels/`, whose CUDA C sits
  beside its `bound[...]` lines;
- its **case**: the call the parity tests run on every backend (reference on array-api-strict,
  NumPy against the reference, the CuPy double and a real GPU against the reference).

    @fused_op
    def huber_loss(backend, pred, target, delta, reduction="mean"):
        '''l = d^2 / 2 where |d| < delta, ...'''          # the reference

    @huber_loss.numpy
    def _(backend, pred, target, delta, reduction="mean"): ...

    @huber_loss.cupy
    def _(backend, pred, target, delta, reduction="mean"): ...

    @huber_loss.case()
    def _(backend, a):
        return [*huber_loss_on(backend, a["x"], a["dy"], 1.5, "mean")]

A backend finds an op by name (`backend.huber_loss(...)`, see `Backend.__getattr__`): the
backends' own files name no fused op. Each backend class says which implementation it runs
(`Backend.op_flavor`: "reference", "numpy" or "cupy"); an op without that flavour runs its
reference on the backend's arrays.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from dataclasses import dataclass, field
from typing import Callable

FLAVORS = ("reference", "numpy", "cupy")

OPS: dict[str, "FusedOp"] = {}      # every fused op, by name
CASES: dict[str, "Case"] = {}       # every op case, by name ("huber_loss", "sgd_step/nesterov")

_loaded = False


@dataclass(frozen=True)
class Case:
    """One parity case of an op module: `run(backend, arrays)` returns the results to compare
    (a sequence of arrays, Python scalars or None). `arrays` are the named device inputs of
    tests/op_cases.py. `exact`: the results must equal the reference's bit for bit (no rounding
    is involved); otherwise within the tolerance the tests derive for the dtype. `min_rows`: the
    fewest rows the case is defined on (batch norm needs two)."""

    name: str
    run: Callable
    exact: bool = False
    min_rows: int = 1


@dataclass
class FusedOp:
    """A fused op: its reference and, by flavour, the faster implementations of the same signature."""

    name: str
    reference: Callable
    implementations: dict = field(default_factory=dict)
    module: str = ""

    def numpy(self, function: Callable) -> Callable:
        """Decorator: `function` is this op's NumPy fast path."""
        return self._add("numpy", function)

    def cupy(self, function: Callable) -> Callable:
        """Decorator: `function` is this op's CuPy launch."""
        return self._add("cupy", function)

    def _add(self, flavor: str, function: Callable) -> Callable:
        if inspect.signature(function) != inspect.signature(self.reference):
            raise TypeError(f"the {flavor} implementation of op {self.name!r} has the signature "
                            f"{inspect.signature(function)}, the reference {inspect.signature(self.reference)}")
        self.implementations[flavor] = function
        return function

    def case(self, variant: str = "", exact: bool = False, min_rows: int = 1) -> Callable:
        """Decorator: `run(backend, arrays)` is a parity case of this op (named after the op, and
        `variant` when the op has several)."""

        def register(run: Callable) -> Callable:
            name = f"{self.name}/{variant}" if variant else self.name
            if name in CASES:
                raise ValueError(f"op case {name!r} is defined twice")
            CASES[name] = Case(name, run, exact, min_rows)
            return run

        return register

    def implementation(self, flavor: str) -> Callable:
        """What a backend of `flavor` runs: its own implementation, else the reference."""
        return self.implementations.get(flavor, self.reference)

    def __call__(self, backend, *args, **kwargs):
        """The op on `backend` (its flavour's implementation), as `backend.<name>(...)` runs it."""
        return getattr(backend, self.name)(*args, **kwargs)


def fused_op(reference: Callable) -> FusedOp:
    """Decorator: `reference(backend, ...)` defines a new fused op named after the function."""
    name = reference.__name__
    if name in OPS:
        raise ValueError(f"fused op {name!r} is defined twice ({OPS[name].module} and {reference.__module__})")
    op = FusedOp(name, reference, module=reference.__module__)
    OPS[name] = op
    return op


def load_all() -> dict[str, FusedOp]:
    """Imports every op module of this package once; returns the registry."""
    global _loaded
    if not _loaded:
        for info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
            importlib.import_module(f"{__name__}.{info.name}")
        _loaded = True
    return OPS


def find(name: str) -> FusedOp | None:
    """The fused op called `name`, or None."""
    op = OPS.get(name)
    if op is None and not _loaded:
        op = load_all().get(name)
    return op
