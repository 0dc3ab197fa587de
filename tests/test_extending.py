"""A user's own activation, stateful layer and loss (the README's "Extending backprop") work
everywhere the built-ins do: fit, summary, gradcheck, checkpoints bit for bit, pickles, moving
between devices, and data-parallel training on 2 MPI ranks (tests/test_distributed.py); the
CuPy test double runs them in tests/test_cupy_double.py."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
from readme_extensions import LogCoshLoss, Recenter

import backprop as bp

rng = np.random.default_rng(3)
X = rng.normal(size=(64, 3))
Y = np.sin(X[:, :1]) + 0.5 * X[:, 1:2]


def make(dtype="float64", seed=1):
    return bp.Sequential(bp.Dense(3, 6, activation="softsign"), Recenter(momentum=0.2), bp.Dense(6, 1),
                         dtype=dtype, seed=seed)


def everything(net) -> list:
    return [net.store.data.tobytes(), net.config(), net.epochs_trained,
            [(k, np.asarray(v).tobytes()) for layer in net.layers for k, v in sorted(layer.state().items())]]


def test_the_three_train_gradcheck_and_print():
    net = make()
    history = bp.fit(net, X, Y, loss=LogCoshLoss(), epochs=20, batch_size=16, progress=False)
    assert history["loss"][-1] < 0.8 * history["loss"][0]
    assert not np.array_equal(net.layers[1].mu, np.zeros(6))  # the buffer was updated in training
    assert bp.gradcheck(net, LogCoshLoss(), X[:8], Y[:8]) < 1e-6
    net.train()
    assert bp.gradcheck(net, LogCoshLoss(), X[:8], Y[:8]) < 1e-6  # training mode: mu moves, backward holds
    summary = net.summary()
    assert "Recenter(momentum=0.2)" in summary and "Dense 3->6 softsign" in summary


def test_checkpoints_and_resumes_are_bit_for_bit(tmp_path):
    whole = make()
    whole_opt = bp.Adam(whole.parameters(), lr=0.01)
    bp.fit(whole, X, Y, loss=LogCoshLoss(), optimizer=whole_opt, epochs=4, batch_size=16, progress=False)

    first = make()
    first_opt = bp.Adam(first.parameters(), lr=0.01)
    bp.fit(first, X, Y, loss=LogCoshLoss(), optimizer=first_opt, epochs=2, batch_size=16, progress=False)
    bp.save(first, tmp_path / "m.safetensors", optimizer=first_opt)
    loaded, loaded_opt = bp.load(tmp_path / "m.safetensors", optimizer=True)
    assert everything(loaded) == everything(first)
    bp.fit(loaded, X, Y, loss=LogCoshLoss(), optimizer=loaded_opt, epochs=2, batch_size=16, progress=False)
    assert everything(loaded) == everything(whole)


def test_pickles_deep_copies_and_float64_copies_keep_them():
    net = make(dtype="float32")
    bp.fit(net, X, Y, loss=LogCoshLoss(), epochs=2, batch_size=16, progress=False)
    for clone in (pickle.loads(pickle.dumps(net)), copy.deepcopy(net)):
        assert everything(clone) == everything(net)
        np.testing.assert_array_equal(bp.predict(clone, X), bp.predict(net, X))


def test_a_checkpoint_naming_an_unregistered_activation_is_refused(tmp_path):
    net = make()
    bp.save(net, tmp_path / "m.safetensors")
    from backprop.backends.activations import ACTIVATIONS

    saved = ACTIVATIONS.pop("softsign")
    try:
        with pytest.raises(ValueError, match=r"m.safetensors cannot be loaded in this process: activation 'softsign' is "
                                             r"not registered in this process \(known: .*\); register your own with "
                                             r"bp.register_activation") as info:
            bp.load(tmp_path / "m.safetensors")
        assert "malformed" not in str(info.value)
    finally:
        ACTIVATIONS["softsign"] = saved


def test_a_checkpoint_naming_an_unregistered_layer_is_refused(tmp_path):
    net = make()
    bp.save(net, tmp_path / "m.safetensors")
    from backprop.layers import LAYERS

    saved = LAYERS.pop("Recenter")
    try:
        with pytest.raises(ValueError, match="m.safetensors cannot be loaded in this process: layer type 'Recenter' is "
                                             "not registered in this process"):
            bp.load(tmp_path / "m.safetensors")
    finally:
        LAYERS["Recenter"] = saved


def test_a_layer_whose_config_cannot_be_read_says_what_to_do():
    @bp.register_layer(name="tests.Scale")
    class Scale(bp.Layer):
        def __init__(self, factor):
            super().__init__()
            self.k = factor  # not stored under its argument's name

        def forward(self, x, training):
            return x * self.k

        def backward(self, grad_y, need_input_grad):
            return grad_y * self.k

    net = bp.Sequential(bp.Dense(3, 2), Scale(2.0), seed=0)
    with pytest.raises(TypeError, match=r"__init__ takes 'factor' but the layer has no attribute 'factor'; store it "
                                        r"as self.factor or define config\(\)"):
        bp.save(net, "never-written.safetensors")


def test_a_loss_without_value_and_grad_names_what_is_missing():
    class Incomplete(bp.Loss):
        pass

    net = make()
    with pytest.raises(NotImplementedError, match=r"Incomplete must define value_and_grad\(self, backend, pred, target\)"):
        bp.fit(net, X, Y, loss=Incomplete(), epochs=1, progress=False)


def test_registering_a_builtin_name_or_a_bad_one_is_refused():
    with pytest.raises(ValueError, match="'relu' is a built-in activation and cannot be replaced"):
        bp.register_activation("relu", lambda xp, x, s: x, lambda xp, g, y, x, s: g)
    with pytest.raises(ValueError, match="name must be lowercase ASCII letters"):
        bp.register_activation("Soft Sign", lambda xp, x, s: x, lambda xp, g, y, x, s: g)
    with pytest.raises(ValueError, match="'Dense' is a built-in layer and cannot be replaced"):
        bp.register_layer(type("Dense", (bp.Layer,), {}))


def test_the_readme_lists_exactly_the_built_in_activations():
    from readme_extensions import README

    from backprop.backends.activations import ACTIVATIONS

    line = next(line for line in README.read_text(encoding="utf-8").splitlines() if line.startswith("Activations: "))
    listed = [name.split(" (")[0].strip() for name in line[len("Activations: "):].rstrip(".").split(",")]
    assert sorted(listed) == sorted(name for name, act in ACTIVATIONS.items() if act.builtin)


def test_a_subclass_of_a_registered_layer_is_saved_under_its_own_name_or_refused(tmp_path):
    """A Dense subclass is recorded under its own registration (not its parent's, which would
    rebuild a plain Dense), and an unregistered subclass is refused before anything is written."""

    class Doubled(bp.Dense):
        def forward(self, x, training):
            return 2 * super().forward(x, training)

    net = bp.Sequential(Doubled(3, 2), seed=0)
    with pytest.raises(TypeError, match=r"Doubled is not registered, so a checkpoint could not rebuild it"):
        bp.save(net, tmp_path / "m.safetensors")
    assert not list(tmp_path.iterdir())
    bp.register_layer(Doubled, name="tests.Doubled")
    bp.save(net, tmp_path / "m.safetensors")
    loaded = bp.load(tmp_path / "m.safetensors")
    assert type(loaded.layers[0]) is Doubled
    np.testing.assert_array_equal(bp.predict(loaded, X[:4]), bp.predict(net, X[:4]))


def test_saving_with_an_optimizer_built_before_the_network_moved_is_refused(tmp_path):
    net = bp.Sequential(bp.Dense(3, 2), seed=0)
    opt = bp.Adam(net.parameters())
    net.to("cpu")  # the same backend: nothing moves, the optimizer is still good
    bp.save(net, tmp_path / "ok.safetensors", optimizer=opt)
    net64 = bp.Sequential(bp.Dense(3, 2), seed=0)
    opt64 = bp.Adam(net64.parameters())
    net64.store.generation += 1  # what net.to(another device) does to the buffers the optimizer holds
    with pytest.raises(RuntimeError, match="Adam was built before the network moved"):
        bp.save(net64, tmp_path / "m.safetensors", optimizer=opt64)


# ---------------------------------------------------------------------- registration


def test_a_registered_class_under_a_second_name_or_a_name_another_class_holds_is_refused(tmp_path):
    """A class has one name and a name one class: an alias of Dense made every Dense network
    save as the alias, which a fresh process cannot load."""
    from backprop.layers import LAYERS

    before = dict(LAYERS)
    with pytest.raises(ValueError, match=r"backprop.layers.dense.Dense is already registered as 'Dense'; .* "
                                         r"cannot also be 'Alias'"):
        bp.register_layer(bp.Dense, name="Alias")
    with pytest.raises(ValueError, match=r"readme_extensions.Recenter is already registered as 'Recenter'"):
        bp.register_layer(Recenter, name="tests.Recentre")

    class Other(bp.Layer):
        pass

    with pytest.raises(ValueError, match=r"'Recenter' is already the registered name of readme_extensions.Recenter; "
                                         "choose another name"):
        bp.register_layer(Other, name="Recenter")
    assert LAYERS == before
    bp.save(bp.Sequential(bp.Dense(3, 2), seed=0), tmp_path / "m.safetensors")
    assert bp.load(tmp_path / "m.safetensors").config()["layers"][0]["type"] == "Dense"


@pytest.mark.parametrize("name", ["two\nlines", "tab\there", "nul\x00", "esc\x1b[31m", "with space", "", ".lead",
                                  "trail.", "a..b", "1digit", "dash-ed", "é", "x" * 101])
def test_a_name_outside_the_naming_rule_is_refused_for_layers_and_activations(name):
    from backprop.backends.activations import ACTIVATIONS
    from backprop.layers import LAYERS

    class Named(bp.Layer):
        pass

    with pytest.raises(ValueError, match=r"name must be ASCII letters, digits and underscores, in parts joined by dots"):
        bp.register_layer(Named, name=name)
    with pytest.raises(ValueError, match=r"name must be lowercase ASCII letters, digits and underscores"):
        bp.register_activation(name.lower(), lambda xp, x, s: x, lambda xp, g, y, x, s: g)
    assert name not in LAYERS and name.lower() not in ACTIVATIONS
    with pytest.raises(TypeError, match=r"name must be a string of ASCII letters.*got int 3"):
        bp.register_layer(Named, name=3)


@pytest.mark.parametrize("field, value", [("rowwise", "no"), ("rowwise", 1), ("needs_input", "yes"), ("needs_input", None)])
def test_an_activations_flags_must_be_booleans(field, value):
    from backprop.backends.activations import ACTIVATIONS

    with pytest.raises(TypeError, match=rf"{field} must be True or False, got {type(value).__name__} {value!r}"):
        bp.register_activation("tests_flagged", lambda xp, x, s: x, lambda xp, g, y, x, s: g, **{field: value})
    assert "tests_flagged" not in ACTIVATIONS


def test_a_network_built_before_its_layers_module_was_reloaded_still_saves_and_loads(tmp_path, monkeypatch):
    """A notebook's autoreload runs the user's module again: its decorated class is a new object
    of the same module and name. A network built before saves, and loads as the new class."""
    import importlib
    import sys

    from backprop.layers import LAYERS

    (tmp_path / "tests_reloaded_layer.py").write_text(
        "import backprop as bp\n\n\n"
        "@bp.register_layer(name='tests.Shift')\n"
        "class Shift(bp.Layer):\n"
        "    def forward(self, x, training):\n        return x + 1.0\n\n"
        "    def backward(self, grad_y, need_input_grad=True):\n        return grad_y\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tests_reloaded_layer", raising=False)
    monkeypatch.setitem(LAYERS, "tests.Shift", None)  # restored (then removed) after the test
    del LAYERS["tests.Shift"]
    module = importlib.import_module("tests_reloaded_layer")
    net = bp.Sequential(bp.Dense(3, 2), module.Shift(), seed=0)
    old_class = module.Shift
    module = importlib.reload(module)
    assert module.Shift is not old_class and LAYERS["tests.Shift"] is module.Shift
    bp.save(net, tmp_path / "m.safetensors")
    loaded = bp.load(tmp_path / "m.safetensors")
    assert type(loaded.layers[1]) is module.Shift
    np.testing.assert_array_equal(bp.predict(loaded, X[:4]), bp.predict(net, X[:4]))


# ---------------------------------------------------------------------- what the protocol's docs promise


def test_dense_slope_reaches_a_users_activation():
    """The README and register_activation: `slope` is the using layer's Dense(..., slope=)."""
    bp.register_activation("tests_scaled", lambda xp, x, slope: slope * x, lambda xp, g, y, x, slope: slope * g)
    x = X[:5]
    for slope in (0.01, 3.0):
        net = bp.Sequential(bp.Dense(3, 2, activation="tests_scaled", slope=slope), dtype="float64", seed=0)
        layer = net.layers[0]
        np.testing.assert_allclose(bp.predict(net, x), slope * (x @ layer.weight.data + layer.bias.data), rtol=1e-12)
        assert bp.gradcheck(net, bp.MSELoss(), x, np.zeros((5, 2))) < 1e-6


def test_a_layer_with_a_penalty_adds_its_gradient_in_backward_or_gradcheck_fails():
    """base.py's protocol: the network adds penalty() to the loss; the layer's backward adds
    its derivative (here 0.5 sum w^2 -> w) to the parameter's .grad."""

    class Shrunk(bp.Layer):
        adds_penalty_gradient = True

        def build(self, input_shape):
            self.w = self.add_parameter("w", input_shape, init="ones")
            return input_shape

        def forward(self, x, training):
            self.x = x
            return x * self.w.data

        def backward(self, grad_y, need_input_grad):
            xp = self.backend.xp
            self.w.grad[...] = xp.sum(grad_y * self.x, axis=0)
            if self.adds_penalty_gradient:
                self.w.grad[...] += self.w.data
            return grad_y * self.w.data if need_input_grad else None

        def penalty(self):
            return 0.5 * self.backend.xp.sum(self.w.data ** 2)

    net = bp.Sequential(bp.Dense(3, 4), Shrunk(), seed=0, dtype="float64")
    assert bp.gradcheck(net, bp.MSELoss(), X[:8], Y[:8].repeat(4, axis=1)) < 1e-6
    Shrunk.adds_penalty_gradient = False
    assert bp.gradcheck(net, bp.MSELoss(), X[:8], Y[:8].repeat(4, axis=1)) > 1e-2
