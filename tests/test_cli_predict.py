"""`python -m backprop predict` and `evaluate`: a saved model on a data file (npz, npy, csv, IDX),
shaped and scaled as it was trained, for flat and image-shaped models."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, run_cli
from test_cli_data import write_houses, write_species
from test_cli_train import digit_like_images, write_idx

import backprop as bp
from backprop.apps.report import regression_metrics


def trained(tmp_path, dataset, *flags, epochs="40"):
    status, _, err = run_cli("train", "--dataset", dataset, "--hidden", "16", "--epochs", epochs, "--lr", "0.01",
                             *flags, "--out", str(tmp_path / "run"))
    assert status == 0, err
    return str(tmp_path / "run" / "model.safetensors")


def read_csv(path):
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], rows[1:]


def test_a_csv_classifier_predicts_class_names_and_probabilities(tmp_path):
    data = write_species(tmp_path / "species.csv")
    model = trained(tmp_path, f"csv:{data}", "--target", "species")
    status, out, err = run_cli("predict", model, str(data), "--out", str(tmp_path / "p.csv"))
    assert status == 0, err
    assert "300 predictions (species)" in out
    header, rows = read_csv(tmp_path / "p.csv")
    truth = [row[0] for row in read_csv(data)[1]]
    assert header == ["species"] and np.mean([r[0] == t for r, t in zip(rows, truth)]) > 0.95

    status, _, err = run_cli("predict", model, str(data), "--proba", "--out", str(tmp_path / "p.npy"))
    assert status == 0, err
    probabilities = np.load(tmp_path / "p.npy")
    assert probabilities.shape == (300, 3) and np.allclose(probabilities.sum(axis=1), 1)
    names = np.array(["setosa", "versicolor", "virginica"])
    assert [r[0] for r in rows] == names[probabilities.argmax(axis=1)].tolist()

    status, out, err = run_cli("evaluate", model, str(data))
    assert status == 0, err
    accuracy = float(re.search(r"^accuracy\s+([\d.]+)%", out, re.M).group(1))
    assert accuracy == pytest.approx(100 * np.mean([r[0] == t for r, t in zip(rows, truth)]), abs=0.01)
    assert re.search(r"^\s+virginica\s+100\s+", out, re.M), out


def test_csv_columns_are_matched_by_name_and_a_mismatch_is_named(tmp_path):
    data = write_species(tmp_path / "species.csv")
    model = trained(tmp_path, f"csv:{data}", "--target", "species", epochs="5")
    header, rows = read_csv(data)
    reordered = tmp_path / "reordered.csv"
    reordered.write_text("\n".join(",".join([r[2], r[1]]) for r in [["", "width", "length"]] + rows) + "\n")
    _, first, _ = run_cli("predict", model, str(data))
    status, second, err = run_cli("predict", model, str(reordered))
    assert status == 0, err
    assert first == second  # the same predictions: columns are taken by name, the target column ignored

    (tmp_path / "missing.csv").write_text("width,colour\n1,2\n")
    status, _, err = run_cli("predict", model, str(tmp_path / "missing.csv"))
    assert_one_line_error(status, err, "lacks the model's columns length",
                          "has columns the model was not trained on: colour", "the model's features: width, length")
    status, _, err = run_cli("evaluate", model, str(reordered))
    assert_one_line_error(status, err, "has no target column 'species'", "length, width")


def test_a_csv_regression_predicts_in_the_targets_units(tmp_path):
    data = write_houses(tmp_path / "houses.csv")
    model = trained(tmp_path, f"csv:{data}", "--target", "price", epochs="150")
    status, _, err = run_cli("predict", model, str(data), "--out", str(tmp_path / "p.csv"))
    assert status == 0, err
    header, rows = read_csv(tmp_path / "p.csv")
    predicted = np.array([float(r[0]) for r in rows])
    raw = np.loadtxt(data, delimiter=",", skiprows=1)
    # the same numbers as the library gives with the model's own scaling
    net, info = bp.load(model), bp.load_data_info(model)
    expected = info.unscale_targets(bp.predict(net, info.scale_inputs(raw[:, :2])))[:, 0]
    assert header == ["price"] and np.array_equal(predicted, expected)
    status, out, err = run_cli("evaluate", model, str(data))
    assert status == 0, err
    metrics = regression_metrics(raw[:, 2], predicted)
    assert f"R^2       {metrics['r2']:.4f}" in out and metrics["r2"] > 0.95
    assert "MAE" in out and "(price)" in out
    status, _, err = run_cli("predict", model, str(data), "--proba")
    assert_one_line_error(status, err, "--proba gives class probabilities", "regression model")


def test_npz_and_npy_with_labels(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    y = (X[:, 0] + X[:, 1] > 0).astype(int) * 3 + 2  # labels 2 and 5
    np.savez(tmp_path / "d.npz", X=X, y=y)
    model = trained(tmp_path, f"npz:{tmp_path / 'd.npz'}")
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    status, out, err = run_cli("evaluate", model, str(tmp_path / "d.npz"))
    assert status == 0, err
    status, same, err = run_cli("evaluate", model, str(tmp_path / "X.npy"), "--labels", str(tmp_path / "y.npy"))
    assert status == 0, err
    assert out.split("data")[1].split("\n", 1)[1] == same.split("data")[1].split("\n", 1)[1]
    assert float(re.search(r"accuracy\s+([\d.]+)%", out).group(1)) > 90
    status, printed, _ = run_cli("predict", model, str(tmp_path / "X.npy"))
    assert set(printed.split()[1:]) == {"2", "5"}  # the labels as given, under the header "class"

    np.save(tmp_path / "bad.npy", np.where(y == 5, 7, y))
    status, _, err = run_cli("evaluate", model, str(tmp_path / "X.npy"), "--labels", str(tmp_path / "bad.npy"))
    assert_one_line_error(status, err, "label 7 is no class of the model (its classes: 2, 5)")
    status, _, err = run_cli("evaluate", model, str(tmp_path / "X.npy"))
    assert_one_line_error(status, err, "holds no targets", "--labels")
    np.save(tmp_path / "wide.npy", np.zeros((3, 5)))
    status, _, err = run_cli("predict", model, str(tmp_path / "wide.npy"))
    assert_one_line_error(status, err, "has 5 values per example but the model takes 4")


def test_idx_images_and_an_image_shaped_model(tmp_path):
    rng = np.random.default_rng(3)
    images, labels = digit_like_images(200, rng)
    write_idx(tmp_path / "img.idx", images)
    write_idx(tmp_path / "lab.idx", labels)
    model = trained(tmp_path, f"idx:{tmp_path / 'img.idx'},{tmp_path / 'lab.idx'}")
    status, out, err = run_cli("evaluate", model, str(tmp_path / "img.idx"), "--labels", str(tmp_path / "lab.idx"))
    assert status == 0, err
    assert float(re.search(r"accuracy\s+([\d.]+)%", out).group(1)) > 95

    # a model of images (1, 6, 6), saved without a DataInfo: its classes are 0..k-1, and an image
    # file, flat rows and (1, 6, 6) arrays are the same examples
    net = bp.Sequential(bp.Flatten(), bp.Dense(36, 3), input_shape=(1, 6, 6), seed=0)
    bp.fit(net, images[:, None] / 255.0, labels, loss=bp.CrossEntropyLoss(), epochs=30, progress=False)
    bp.save(net, tmp_path / "image.safetensors")
    np.save(tmp_path / "flat.npy", images.reshape(200, 36))
    np.save(tmp_path / "nchw.npy", images[:, None])
    outputs = [run_cli("predict", str(tmp_path / "image.safetensors"), str(tmp_path / name), "--proba")
               for name in ("img.idx", "flat.npy", "nchw.npy")]
    assert all(status == 0 for status, _, _ in outputs)
    assert outputs[0][1] == outputs[1][1] == outputs[2][1]
    assert outputs[0][1].splitlines()[0] == "0,1,2"
    status, _, err = run_cli("evaluate", str(tmp_path / "image.safetensors"), str(tmp_path / "img.idx"),
                             "--labels", str(tmp_path / "lab.idx"))
    assert status == 0, err
    np.save(tmp_path / "big.npy", np.zeros((2, 7, 7), np.uint8))
    status, _, err = run_cli("predict", str(tmp_path / "image.safetensors"), str(tmp_path / "big.npy"))
    assert_one_line_error(status, err, "49 values per example but the model takes 36 (input shape (1, 6, 6))")


@pytest.mark.parametrize("argv, fragments", [
    (["predict", "nope.safetensors", "d.npz"], ["nope.safetensors"]),
    (["predict", "MODEL", "nope.csv"], ["nope.csv: no such file"]),
    (["predict", "MODEL", "d.npz", "--out", "p.txt"], ["--out p.txt: expected a file name ending in .csv or .npy"]),
    (["predict", "MODEL", "notes.md"], ["not a data file backprop reads"]),
])
def test_mistakes_are_one_line(tmp_path, monkeypatch, argv, fragments):
    monkeypatch.chdir(tmp_path)
    net = bp.Sequential(bp.Dense(2, 2), seed=0)
    bp.save(net, "MODEL")
    np.savez("d.npz", X=np.zeros((3, 2)), y=np.zeros(3))
    (tmp_path / "notes.md").write_text("hello\n")
    status, _, err = run_cli(*argv)
    assert_one_line_error(status, err, *fragments)


def test_the_readmes_own_data_commands_run_as_written(tmp_path, monkeypatch):
    """The README's "Your own data" commands, on house prices written as its files are named."""
    from readme_extensions import README

    monkeypatch.chdir(tmp_path)
    section = README.read_text(encoding="utf-8").split("### Your own data", 1)[1]
    commands = re.search(r"```bash\n(.*?)```", section, re.S).group(1).strip().splitlines()
    for name, seed in (("houses.csv", 0), ("new_houses.csv", 1), ("test_houses.csv", 2)):
        write_houses(tmp_path / name, seed=seed)
    outputs = []
    for command in commands:
        assert command.startswith("python -m backprop ")
        status, out, err = run_cli(*command.split()[3:])
        assert status == 0, (command, err)
        outputs.append(out)
    header, rows = read_csv(tmp_path / "prices.csv")
    assert header == ["price"] and len(rows) == 300
    assert float(re.search(r"^R\^2\s+([-\d.]+)", outputs[2], re.M).group(1)) > 0.9


def test_an_npy_file_is_read_a_batch_at_a_time(tmp_path, monkeypatch):
    """predict and evaluate map an .npy file and read it batch by batch: no read asks for more
    rows than a batch (the checking pass reads chunks of about a MiB, here the whole small file
    once), and the predictions equal those of the file read whole."""
    from backprop.apps import datafile

    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 4))
    y = (X[:, 0] > 0).astype(int)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    model = trained(tmp_path, f"npz:{tmp_path / 'd.npz'}", epochs="5")
    np.save(tmp_path / "X.npy", X)
    reads = []
    real = datafile.ExamplesOnDemand.__getitem__

    def counted(self, index):
        reads.append(len(np.atleast_1d(np.arange(len(self))[index])))
        return real(self, index)

    monkeypatch.setattr(datafile.ExamplesOnDemand, "__getitem__", counted)
    status, from_map, err = run_cli("predict", model, str(tmp_path / "X.npy"), "--batch-size", "64")
    assert status == 0, err
    assert isinstance(np.load(tmp_path / "X.npy", mmap_mode="r"), np.memmap)
    assert reads and sorted(reads)[-2] <= 64, reads  # every read but the one checking pass is a batch
    monkeypatch.setattr(datafile.ExamplesOnDemand, "__getitem__", real)
    status, from_npz, err = run_cli("predict", model, str(tmp_path / "d.npz"), "--batch-size", "64")
    assert status == 0, err
    assert from_map == from_npz
