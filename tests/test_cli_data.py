"""Your own data on the command line: `train --dataset csv:FILE`, regression (csv: and npz:),
the task inferred or chosen, the scaling and names kept with the model (bp.DataInfo)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from checkpoint_helpers import rewrite
from cli_helpers import assert_one_line_error, run_cli

import backprop as bp
from backprop.apps.tabular import infer_task

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_houses(path, n=300, seed=0):
    """price = 100 + 30 rooms - 0.5 age + noise: a regression on two features of unlike scales."""
    rng = np.random.default_rng(seed)
    rooms, age = rng.integers(1, 8, size=n), rng.uniform(0, 80, size=n)
    price = 100 + 30 * rooms - 0.5 * age + rng.normal(0, 3, size=n)
    lines = ["rooms,age,price"] + [f"{r},{a:.1f},{p:.2f}" for r, a, p in zip(rooms, age, price)]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_species(path, n=300, seed=0):
    """Three well separated classes named by text, the label in the first column."""
    rng = np.random.default_rng(seed)
    names = ["setosa", "versicolor", "virginica"]
    lines = ["species,width,length"]
    for i in range(n):
        k = i % 3
        lines.append(f"{names[k]},{rng.normal(3 * k, 0.4):.3f},{rng.normal(-2 * k, 0.4):.3f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_csv_regression_reports_r2_and_mae_and_keeps_its_scaling(tmp_path):
    csv = write_houses(tmp_path / "houses.csv")
    status, out, err = run_cli("train", "--dataset", f"csv:{csv}", "--target", "price", "--hidden", "32",
                               "--epochs", "150", "--lr", "0.01", "--out", str(tmp_path / "run"))
    assert status == 0, err
    assert "2 features, 1 target; regression (inferred from the target" in out
    assert "mean squared error" in out
    r2 = float(re.search(r"^test R\^2 ([-\d.]+), MAE ([\d.]+)", out, re.M).group(1))
    assert r2 > 0.95, out
    record = json.loads((tmp_path / "run" / "history.json").read_text())
    assert record["task"] == "regression" and record["test"]["r2"] == pytest.approx(r2, abs=1e-4)
    assert record["test"]["mae"] < 10
    assert (tmp_path / "run" / "training.png").read_bytes()[:8] == PNG_MAGIC

    info = bp.load_data_info(tmp_path / "run" / "model.safetensors")
    assert info.task == "regression" and info.feature_names == ("rooms", "age") and info.target_name == "price"
    from backprop.apps.datasets import load_dataset

    data = load_dataset(f"csv:{csv}", seed=0, target="price")
    assert np.array_equal(info.x_mean, data.info.x_mean) and np.array_equal(info.y_scale, data.info.y_scale)
    # the training part is standardised: mean 0 and standard deviation 1 per feature and target
    assert np.allclose(data.X_train.mean(axis=0), 0) and np.allclose(data.X_train.std(axis=0), 1)
    assert np.allclose(data.y_train.mean(), 0) and np.allclose(data.y_train.std(), 1)
    raw = np.loadtxt(csv, delimiter=",", skiprows=1)
    assert 0 < info.x_mean[1] < 80 and info.x_scale[0] == pytest.approx(raw[:, 0].std(), rel=0.15)


@pytest.mark.parametrize("target", ["price", "2", "-1"])
def test_the_target_is_named_or_indexed_and_defaults_to_the_last_column(tmp_path, target):
    from backprop.apps.datasets import load_dataset

    csv = write_houses(tmp_path / "houses.csv", n=60)
    data = load_dataset(f"csv:{csv}", target=target)
    default = load_dataset(f"csv:{csv}")
    assert data.info.target_name == default.info.target_name == "price"
    assert data.info.feature_names == ("rooms", "age")


def test_text_class_labels_are_the_class_names_printed_and_kept(tmp_path):
    csv = write_species(tmp_path / "species.csv")
    status, out, err = run_cli("train", "--dataset", f"csv:{csv}", "--target", "species", "--hidden", "16",
                               "--epochs", "30", "--lr", "0.01", "--out", str(tmp_path / "run"))
    assert status == 0, err
    assert "3 classes; classification (inferred from the target" in out
    for name in ("setosa", "versicolor", "virginica"):
        assert re.search(rf"^\s+{name}\s+20\s+", out, re.M), out
    assert float(re.search(r"test accuracy ([\d.]+)%", out).group(1)) >= 95
    info = bp.load_data_info(tmp_path / "run" / "model.safetensors")
    assert info.class_names == ("setosa", "versicolor", "virginica")
    assert info.feature_names == ("width", "length") and info.x_mean is not None


def test_a_regression_npz_trains_where_it_said_labels_must_be_whole(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 3))
    np.savez(tmp_path / "reg.npz", X=X, y=np.sin(X[:, 0]) + 0.5 * X[:, 1])
    status, out, err = run_cli("train", "--dataset", f"npz:{tmp_path / 'reg.npz'}", "--hidden", "32", "--epochs",
                               "60", "--lr", "0.01", "--loss", "huber", "--out", str(tmp_path / "run"))
    assert status == 0, err
    assert "1 target; regression" in out and "Huber loss" in out
    assert float(re.search(r"test R\^2 ([-\d.]+)", out).group(1)) > 0.8, out
    info = bp.load_data_info(tmp_path / "run" / "model.safetensors")
    assert info.task == "regression" and info.x_mean is None and info.y_mean is not None


def test_the_task_is_inferred_from_the_target():
    assert infer_task(np.array([0, 1, 2] * 20)) == "classification"
    assert infer_task(np.array([0.0, 1.0] * 30)) == "classification"
    assert infer_task(np.array(["a", "b"])) == "classification"
    assert infer_task(np.arange(60)) == "regression"  # whole numbers, but one sample per value
    assert infer_task(np.linspace(0, 1, 60)) == "regression"
    assert infer_task(np.array([0, 1, 2, 3, 4, 5] * 2)) == "regression"  # 6 values in 12 samples: not classes


def test_task_regression_on_whole_numbers_and_classification_on_fractions(tmp_path):
    from backprop.apps.datasets import load_dataset

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "ints.npz", X=rng.normal(size=(100, 2)), y=rng.integers(0, 3, size=100))
    assert load_dataset(f"npz:{tmp_path / 'ints.npz'}").task == "classification"
    assert load_dataset(f"npz:{tmp_path / 'ints.npz'}", task="regression").task == "regression"
    np.savez(tmp_path / "floats.npz", X=rng.normal(size=(100, 2)), y=rng.normal(size=100))
    status, _, err = run_cli("train", "--dataset", f"npz:{tmp_path / 'floats.npz'}", "--task", "classification",
                             "--out", str(tmp_path / "run"))
    assert_one_line_error(status, err, "labels must be whole numbers")


@pytest.mark.parametrize("content, fragments", [
    ("a,b,y\n1,2,0\n3,,1\n", ["line 3", "column 'b'", "missing value"]),
    ("a,b,y\n1,2,0\n3,x4,1\n", ["line 3", "column 'b'", "expected a number, got 'x4'"]),
    ("a,b,y\n1,2,0\n3,nan,1\n", ["line 3", "expected a finite number"]),
    ("a,b,y\n1,2,0\n1,2\n", ["line 3", "2 values, but the header names 3 columns"]),
    ("a,b,y\n1,2,0\n1,2,\n", ["line 3", "column 'y'", "missing target value"]),
    ("1,2,3\n1,2,0\n", ["line 1", "expected a header row"]),
    ("", ["is empty"]),
    ("a,b,y\n", ["no samples"]),
])
def test_a_bad_csv_is_one_line_naming_the_line(tmp_path, content, fragments):
    (tmp_path / "bad.csv").write_text(content)
    status, _, err = run_cli("train", "--dataset", f"csv:{tmp_path / 'bad.csv'}", "--out", str(tmp_path / "run"))
    assert_one_line_error(status, err, *fragments)
    assert not (tmp_path / "run").exists()


def test_a_regression_target_that_is_text_is_refused_with_its_line(tmp_path):
    (tmp_path / "t.csv").write_text("a,y\n1,2.5\n2,high\n")
    status, _, err = run_cli("train", "--dataset", f"csv:{tmp_path / 't.csv'}", "--task", "regression",
                             "--out", str(tmp_path / "run"))
    assert_one_line_error(status, err, "line 3", "column 'y'", "expected a number, got 'high'")


@pytest.mark.parametrize("argv, fragments", [
    (["--target", "nope"], ["--target nope", "no such column", "rooms, age, price"]),
    (["--target", "7"], ["--target 7", "3 columns"]),
    (["--loss", "cross-entropy"], ["--loss cross-entropy does not fit a regression"]),
    (["--loss", "huber", "--target", "rooms"], ["--loss huber does not fit a classification"]),
])
def test_flags_that_do_not_fit_the_data_are_one_line(tmp_path, argv, fragments):
    csv = write_houses(tmp_path / "houses.csv", n=60)
    status, _, err = run_cli("train", "--dataset", f"csv:{csv}", *argv, "--out", str(tmp_path / "run"))
    assert_one_line_error(status, err, *fragments)


@pytest.mark.parametrize("argv, fragments", [
    (["--dataset", "moons", "--target", "y"], ["--target names a column of a csv: data set"]),
    (["--dataset", "moons", "--task", "regression"], ["--task regression needs a csv: or npz: data set"]),
])
def test_csv_flags_on_other_sets_are_one_line(tmp_path, argv, fragments):
    status, _, err = run_cli("train", *argv, "--out", str(tmp_path / "run"))
    assert_one_line_error(status, err, *fragments)


# ---------------------------------------------------------------------- DataInfo in the checkpoint


def small_regression():
    net = bp.Sequential(bp.Dense(3, 4, activation="tanh"), bp.Dense(4, 2), seed=0)
    info = bp.DataInfo(task="regression", feature_names=["a", "b", "c"], target_name="t",
                       x_mean=[0.1, 1 / 3, 2.0], x_scale=[1.0, 2.5, np.pi], y_mean=[5.0, -1.0], y_scale=[2.0, 0.1])
    return net, info


def test_data_info_round_trips_bit_for_bit(tmp_path):
    net, info = small_regression()
    path = bp.save(net, tmp_path / "m.safetensors", data_info=info)
    again = bp.load_data_info(path)
    for field in ("x_mean", "x_scale", "y_mean", "y_scale"):
        assert getattr(again, field).tobytes() == getattr(info, field).tobytes()
    assert again.feature_names == ("a", "b", "c") and again.task == "regression"
    bp.save(net, tmp_path / "plain.safetensors")
    assert bp.load_data_info(tmp_path / "plain.safetensors") is None


@pytest.mark.parametrize("info, message", [
    (dict(feature_names=["a", "b"]), "feature_names has 2 values but the network takes 3"),
    (dict(task="classification", class_names=["x", "y", "z"]), "names 3 classes but the network has 2 outputs"),
    (dict(x_mean=[0, 0, 0], x_scale=[1, 0, 1]), "x_scale must be > 0"),
    (dict(x_mean=[0, 0, 0]), "x_mean and x_scale come together"),
    (dict(task="ranking"), "task must be one of classification, regression"),
])
def test_save_refuses_a_data_info_that_does_not_describe_the_network(tmp_path, info, message):
    net, _ = small_regression()
    with pytest.raises(ValueError, match=message):
        bp.save(net, tmp_path / "m.safetensors", data_info=bp.DataInfo(**info))
    assert not (tmp_path / "m.safetensors").exists()


@pytest.mark.parametrize("record", [
    {"task": "regression", "x_mean": [0, 0], "x_scale": [1, 1]},
    {"task": "regression", "x_mean": [0, 0, 0], "x_scale": [1, -1, 1]},
    {"task": "regression", "x_mean": [0, 0, "a"], "x_scale": [1, 1, 1]},
    {"task": "regression", "colour": "red"},
    {"task": "classification", "class_names": "ab"},
    ["regression"],
])
def test_load_refuses_a_malformed_data_record(tmp_path, record):
    net, info = small_regression()
    path = bp.save(net, tmp_path / "m.safetensors", data_info=info)
    rewrite(path, record={"data": record})
    for read in (bp.load, bp.load_data_info):
        with pytest.raises(ValueError, match="invalid data record"):
            read(path)


def png_size(path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    header = path.read_bytes()[:24]
    assert header[:8] == PNG_MAGIC
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def test_the_plot_of_a_2d_set_adds_its_decision_boundary(tmp_path):
    """Loss, accuracy and confusion matrix for any classifier; a fourth panel, the decision
    boundary, for 2-D data; a regression's loss and predicted-against-true panels."""
    from backprop.apps.plots import boundary_panel

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "three.npz", X=rng.normal(size=(100, 3)), y=np.arange(100) % 2)
    species = ["--dataset", f"csv:{write_species(tmp_path / 's.csv')}", "--target", "species"]
    for argv, panels in ((["--dataset", "xor"], 4), (species, 4), (["--dataset", f"npz:{tmp_path / 'three.npz'}"], 3)):
        status, _, err = run_cli("train", *argv, "--hidden", "8", "--epochs", "2", "--out", str(tmp_path / "run"))
        assert status == 0, err
        assert png_size(tmp_path / "run" / "training.png")[0] == pytest.approx(panels * 530, abs=5)
    status, _, err = run_cli("train", "--dataset", f"csv:{write_houses(tmp_path / 'h.csv')}", "--hidden", "8",
                             "--epochs", "2", "--out", str(tmp_path / "reg"))
    assert status == 0, err
    assert png_size(tmp_path / "reg" / "training.png")[0] == pytest.approx(2 * 530, abs=5)

    # the regions are the classifier's own answers over a grid spanning the data
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    asked = []
    X = np.array([[0.0, 0.0], [1.0, 2.0]])

    def predict_class(points):
        asked.append(points)
        return (points[:, 0] > 0.5).astype(int)

    fig, ax = plt.subplots()
    boundary_panel(predict_class, X, np.array([0, 1]), ["a", "b"])(fig, ax)
    plt.close(fig)
    (grid,) = asked
    assert grid[:, 0].min() < 0 < 1 < grid[:, 0].max() and grid[:, 1].min() < 0 < 2 < grid[:, 1].max()


def test_r2_and_mae_are_scikit_learns():
    from sklearn.metrics import mean_absolute_error, r2_score

    from backprop.apps.report import regression_metrics

    rng = np.random.default_rng(0)
    true, predicted = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    true[:, 2] = 4.0  # a constant target: R^2 0 where predictions differ, as scikit-learn has it
    for t, p in ((true, predicted), (true[:, 0], predicted[:, 0]), (true[:, 2:], true[:, 2:])):
        metrics = regression_metrics(t, p)
        assert metrics["r2"] == pytest.approx(r2_score(t, p))
        assert metrics["mae"] == pytest.approx(mean_absolute_error(t, p))
