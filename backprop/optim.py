"""Optimizers with torch.optim's definitions, updating the flat parameter buffer in one pass.

The parameters an optimizer is given are merged into contiguous segments of their network's
flat buffer; given a whole network (the usual case) that is one segment, so a step is one
backend call whatever the depth. State (momentum, Adam's moments) lives in buffers of the same
layout. Hyperparameters are checked when the optimizer is built.
"""

from __future__ import annotations

import math

import numpy as np

from backprop.checks import check_bool, check_int, check_real


class Optimizer:
    """Base: resolves the parameters into segments of one flat buffer and allocates state."""

    state_names: tuple[str, ...] = ()
    state_minimum: dict[str, float] = {}  # the least value a state buffer can hold

    def __init__(self, params, lr: float):
        try:
            params = list(params)
        except TypeError:
            raise TypeError(f"params must be a list of parameters (net.parameters()), "
                            f"got {type(params).__name__}") from None
        if not params:
            raise ValueError("params is empty: pass net.parameters()")
        stranger = next((p for p in params if getattr(p, "store", None) is None), None)
        if stranger is not None:
            raise TypeError(f"params must hold a network's parameters (net.parameters()), "
                            f"got an element of type {type(stranger).__name__}")
        if len({id(p.store) for p in params}) != 1:
            raise ValueError("params must all come from one network's parameters(), got parameters "
                             "of several networks")
        self.params = params
        self.store = params[0].store
        self.generation = self.store.generation
        self.lr = check_real("lr", lr)
        self.step_count = 0
        self.segments = self._segments(params)
        backend = self.store.backend
        self.state = {name: backend.zeros((self.store.size,)) for name in self.state_names}
        self._segment_arrays = None  # the views step() updates, made on its first call

    @staticmethod
    def _segments(params) -> list[tuple[int, int]]:
        """Merge the parameters' [offset, offset + size) ranges into contiguous segments."""
        ranges = sorted({(p.offset, p.offset + p.size) for p in params})
        merged = [list(ranges[0])]
        for start, stop in ranges[1:]:
            if start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], stop)
            else:
                merged.append([start, stop])
        return [(a, b) for a, b in merged]

    def _check_device(self) -> None:
        if self.store.generation != self.generation:
            raise RuntimeError(f"{type(self).__name__} was built before the network moved to "
                               f"{self.store.backend.device}; build the optimizer again after net.to()")

    def _views(self, start: int, stop: int):
        """(param, grad, *state) views of one segment."""
        backend = self.store.backend
        arrays = [self.store.data, self.store.grad] + [self.state[n] for n in self.state_names]
        if start == 0 and stop == self.store.size:
            return arrays
        return [backend.view(a, start, (stop - start,)) for a in arrays]

    def zero_grad(self) -> None:
        """Set the gradients of this optimizer's parameters to zero (backward overwrites them anyway)."""
        with self.store.owner.usage.training("zero_grad"), self.store.backend.on_device():
            for start, stop in self.segments:
                grad = self._views(start, stop)[1]
                grad[...] = 0

    def step(self) -> None:
        """One update of every parameter from its .grad, with the network's device current;
        refused, before anything changes, while another thread uses the network."""
        self._check_device()
        usage = self.store.owner.usage
        token = usage.begin_training("an optimizer step")  # never beside another thread's predict
        try:
            with self.store.backend.on_device():
                self.update()
        finally:
            usage.end_training(token)

    def update(self) -> None:
        """The update itself, for a caller that already holds the network and its device and has
        checked the optimizer against it (fit, every step)."""
        self.step_count += 1
        if self._segment_arrays is None:  # views stay valid: a moved store is refused by step and fit
            self._segment_arrays = [self._views(start, stop) for start, stop in self.segments]
        for arrays in self._segment_arrays:
            self._update(*arrays)

    def _update(self, param, grad, *state) -> None:
        raise NotImplementedError

    # -- checkpoints
    def hyperparameters(self) -> dict:
        raise NotImplementedError

    def state_arrays(self) -> dict:
        backend = self.store.backend
        return {name: backend.to_host(buf) for name, buf in self.state.items()}

    def load_state(self, step_count: int, arrays: dict) -> None:
        """Continue from saved state: the steps taken and each state buffer (host arrays over the
        flat buffer). Everything is checked before anything is set: a step count that is not a
        non-negative integer, or a buffer of the wrong shape, not finite or below its
        `state_minimum` (Adam's exp_avg_sq is a mean of squares), is a ValueError or TypeError."""
        with self.store.owner.usage.training("optimizer.load_state()"):  # never under another thread's fit
            self._load_state(step_count, arrays)

    def _load_state(self, step_count, arrays: dict) -> None:
        step_count = self.check_state(step_count, arrays)
        backend = self.store.backend
        for name in self.state_names:
            self.state[name] = backend.asarray(arrays[name])
        self._segment_arrays = None  # new state buffers: views of the old ones are stale
        self.step_count = step_count

    def check_state(self, step_count, arrays: dict) -> int:
        """The checks of `load_state` (a checkpoint runs them before saving, too): the step count
        as an int, or the error naming what is wrong."""
        step_count = check_int("step_count", step_count, 0, wanted="a non-negative integer")
        for name in self.state_names:
            values = arrays.get(name)
            if values is None or values.shape != (self.store.size,):
                raise ValueError(f"optimizer state {name!r} is missing or has the wrong shape")
            if values.dtype.kind != "f" or not np.isfinite(values).all():
                raise ValueError(f"optimizer state {name!r} holds non-finite or non-numeric values")
            minimum = self.state_minimum.get(name)
            if minimum is not None and values.size and values.min() < minimum:
                raise ValueError(f"optimizer state {name!r} must be >= {minimum:g} everywhere, "
                                 f"got {float(values.min())!r}")
        return step_count

    def __getstate__(self) -> dict:
        """Pickles and deep copies hold the state on the host; the parameters pickle as places in
        their network, which pickles with them (see Parameter.__reduce__)."""
        state = dict(self.__dict__)
        state["state"] = {name: self.store.backend.to_host(buf) for name, buf in self.state.items()}
        state["_segment_arrays"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        # the network was rebuilt, maybe on another device: the state follows its buffers
        self.generation = self.store.generation
        backend = self.store.backend
        with backend.on_device():
            self.state = {name: backend.asarray(buf) for name, buf in self.state.items()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, Nesterov and weight decay, as torch.optim.SGD:

    g = grad + wd param;  b = g (first step) or momentum b + (1 - dampening) g
    param -= lr (g + momentum b if nesterov else b)      (b = g when momentum is 0)
    """

    state_names = ("momentum_buffer",)

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.0, dampening: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0):
        self.momentum = check_real("momentum", momentum, 0.0, 1.0, high_open=True)
        self.dampening = check_real("dampening", dampening, 0.0, 1.0)
        self.weight_decay = check_real("weight_decay", weight_decay)
        nesterov = check_bool("nesterov", nesterov)
        if nesterov and (self.momentum == 0 or self.dampening != 0):
            raise ValueError(f"nesterov=True needs momentum > 0 and dampening = 0 (as in PyTorch), "
                             f"got momentum={self.momentum}, dampening={self.dampening}")
        self.nesterov = nesterov
        if momentum == 0:
            self.state_names = ()
        super().__init__(params, lr)

    def _update(self, param, grad, *state):
        buf = state[0] if state else None
        self.store.backend.sgd_step(param, grad, buf, self.lr, self.momentum, self.dampening,
                                    self.nesterov, self.weight_decay, self.step_count == 1)

    def hyperparameters(self):
        return {"lr": self.lr, "momentum": self.momentum, "dampening": self.dampening,
                "nesterov": self.nesterov, "weight_decay": self.weight_decay}


class Adam(Optimizer):
    """Adam as torch.optim.Adam (weight decay added to the gradient):

    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
    param -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    """

    state_names = ("exp_avg", "exp_avg_sq")
    state_minimum = {"exp_avg_sq": 0.0}
    decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.betas = (check_real("betas[0]", betas[0], 0.0, 1.0, high_open=True),
                      check_real("betas[1]", betas[1], 0.0, 1.0, high_open=True))
        self.eps = check_real("eps", eps)
        self.weight_decay = check_real("weight_decay", weight_decay)
        super().__init__(params, lr)

    def _update(self, param, grad, exp_avg, exp_avg_sq):
        self.store.backend.adam_step(param, grad, exp_avg, exp_avg_sq, self.lr, self.betas[0],
                                     self.betas[1], self.eps, self.weight_decay, self.step_count,
                                     self.decoupled)

    def hyperparameters(self):
        return {"lr": self.lr, "betas": list(self.betas), "eps": self.eps, "weight_decay": self.weight_decay}


class AdamW(Adam):
    """AdamW as torch.optim.AdamW: weight decay decoupled, param *= 1 - lr wd before the Adam step."""

    decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


class LRScheduler:
    """Base of the schedules: `step()` once per epoch sets optimizer.lr from the epoch count.

    Its state is (base_lr, epoch): the lr the schedule started from and the epochs stepped so
    far; checkpoints keep both, so a resumed schedule goes on where it stopped.
    """

    def __init__(self, optimizer: Optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a backprop optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.epoch = 0

    def step(self) -> None:
        """Move to the next epoch and set its lr; a schedule whose lr there is not a finite
        number (gamma 10 for 400 epochs) raises ValueError and changes nothing. Refused while
        another thread trains the optimizer's network (fit steps the schedule itself)."""
        with self.optimizer.store.owner.usage.training("a schedule's step()"):
            self._step()

    def _step(self) -> None:
        epoch = self.epoch + 1
        try:
            lr = float(self.lr_at(epoch))
        except OverflowError:  # Python's float ** raises where * would give inf
            lr = math.inf
        if not math.isfinite(lr):
            settings = ", ".join(f"{k} {v!r}" for k, v in self.hyperparameters().items())
            raise ValueError(f"{type(self).__name__}'s learning rate at epoch {epoch} would be {lr} "
                             f"(base_lr {self.base_lr!r}, {settings}); choose a schedule that stays finite")
        self.epoch, self.optimizer.lr = epoch, lr

    def lr_at(self, epoch: int) -> float:
        raise NotImplementedError

    # -- checkpoints
    def hyperparameters(self) -> dict:
        raise NotImplementedError

    def load_state(self, base_lr: float, epoch: int) -> None:
        """Continue a saved schedule: the lr it started from and the epochs it has stepped."""
        base_lr = check_real("base_lr", base_lr)  # both checked before either is set
        epoch = check_int("epoch", epoch, 0, wanted="a non-negative integer")
        self.base_lr, self.epoch = base_lr, epoch

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({args})"


class StepLR(LRScheduler):
    """lr = base_lr * gamma ** (epoch // step_size), as torch.optim.lr_scheduler.StepLR."""

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1):
        super().__init__(optimizer)
        self.step_size = check_int("step_size", step_size)
        self.gamma = check_real("gamma", gamma)

    def lr_at(self, epoch):
        return self.base_lr * self.gamma ** (epoch // self.step_size)

    def hyperparameters(self):
        return {"step_size": self.step_size, "gamma": self.gamma}


class ExponentialLR(LRScheduler):
    """lr = base_lr * gamma ** epoch."""

    def __init__(self, optimizer, gamma: float):
        super().__init__(optimizer)
        self.gamma = check_real("gamma", gamma)

    def lr_at(self, epoch):
        return self.base_lr * self.gamma**epoch

    def hyperparameters(self):
        return {"gamma": self.gamma}


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base_lr - eta_min) (1 + cos(pi epoch / T_max)) / 2, as PyTorch's closed form."""

    def __init__(self, optimizer, T_max: int, eta_min: float = 0.0):
        super().__init__(optimizer)
        self.T_max = check_int("T_max", T_max)
        self.eta_min = check_real("eta_min", eta_min)

    def lr_at(self, epoch):
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2

    def hyperparameters(self):
        return {"T_max": self.T_max, "eta_min": self.eta_min}


SCHEDULERS = {"step": StepLR, "exponential": ExponentialLR, "cosine": CosineAnnealingLR}
