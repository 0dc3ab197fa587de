"""The command line: python -m backprop train | explain | devices | gradcheck | bench | predict | evaluate.

Each subcommand is a parser built by an `_add_<name>` function and a `run(args) -> exit status`
set with `set_defaults(run=...)`; the work itself lives in its own module, imported when the
command runs. Mistakes a user can make (a bad flag value, a missing file, an unknown data set,
a GPU that is not there) end as one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

from backprop.backends import DeviceUnavailableError
from backprop.training import TrainingDivergedError

FAILED, USAGE_ERROR, INTERRUPTED = 1, 2, 130
# What a user's input can cause; anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, DeviceUnavailableError, OSError, ImportError)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `python -m backprop train: error: ... (see --help)`."""

    def error(self, message):
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ---------------------------------------------------------------------- value checks


def _checked(convert, accept, expected: str):
    """An argparse type: `convert` the text, then refuse it unless `accept(value)`."""

    def check(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not accept(value):  # NaN fails every comparison, so it is refused too
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    return check


positive_int = _checked(int, lambda v: v >= 1, "a positive integer")
non_negative_int = _checked(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _checked(float, lambda v: 0.0 < v < math.inf, "a finite number > 0")
non_negative_float = _checked(float, lambda v: 0.0 <= v < math.inf, "a finite number >= 0")
probability = _checked(float, lambda v: 0.0 <= v < 1.0, "a probability in [0, 1)")


def widths(text: str) -> list[int]:
    """"64,32" -> [64, 32]; "" or "none" -> [] (no hidden layer)."""
    if text.strip().lower() in ("", "none"):
        return []
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer widths such as 64,32, got {text!r}") from None
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"layer widths must be positive, got {text!r}")
    return values


def hidden_activations() -> list[str]:
    """The elementwise activations of the library's table (softmax normalizes rows: outputs only)."""
    from backprop.backends.activations import ACTIVATIONS

    return sorted(name for name, activation in ACTIVATIONS.items() if not activation.rowwise)


# ---------------------------------------------------------------------- subcommands


def _add_train(sub) -> None:
    from backprop.apps.train_command import run

    train = sub.add_parser(
        "train", help="train a classifier or a regression (handwritten digits by default) and report on its test set",
        description="Train a classifier by backpropagation, fully connected or (--model cnn) convolutional: "
                    "a stratified train/validation/test split, ReLU hidden layers, softmax cross-entropy, Adam, early "
                    "stopping on the validation loss. Prints progress per epoch, then the test accuracy, "
                    "a per-class summary and the time per epoch; writes the checkpoint (model.safetensors), "
                    "history.json and training.png (loss/accuracy curves, confusion matrix) to --out. "
                    "A csv: or npz: data set whose target is no class labels trains a regression (MSE, "
                    "R^2 and MAE on the test set, predicted against true in the plot). "
                    "Ctrl-C stops after the current batch, saves what was trained and exits with 130.",
        epilog="examples:\n  python -m backprop train\n  python -m backprop train --dataset moons --hidden 16,16"
               "\n  python -m backprop train --model cnn"
               "\n  python -m backprop train --dataset idx:~/mnist --hidden 256 --device cuda",
        formatter_class=_Formatter)
    data = train.add_argument_group("data")
    data.add_argument("--dataset", default="digits", metavar="NAME",
                      help="digits (scikit-learn's 8x8 handwritten digits, no download), xor, moons, circles "
                           "(2-D toy sets drawn from --seed), idx:DIR (MNIST-format IDX files *train-images*/"
                           "*train-labels*, optionally *t10k-* as the test set; or idx:IMAGES,LABELS), "
                           "npz:FILE (arrays X and y), csv:FILE (a header row, then one sample per line)")
    data.add_argument("--target", default=None, metavar="COLUMN",
                      help="the target column of a csv: data set, by name or index from 0 (default: the last "
                           "column); the other columns are the features")
    data.add_argument("--task", default=None, choices=["classification", "regression"],
                      help="what to learn from a csv: or npz: data set (default: inferred from the target: "
                           "whole numbers with few distinct values or text are classes, else regression)")
    model = train.add_argument_group("network")
    model.add_argument("--model", default="mlp", choices=["mlp", "cnn"],
                       help="mlp: fully connected layers on the pixels as rows; cnn: a convolutional network "
                            "on the images (digits: two 3x3 convolutions of 32 and 64 channels, each with 2x2 "
                            "max pooling, then dense 64; images of 28x28 or more: LeNet-5's shape)")
    model.add_argument("--hidden", type=widths, default=None, metavar="W1,W2,...",
                       help="hidden layer widths of --model mlp, comma-separated; 'none' for no hidden layer "
                            "(default: 512)")
    model.add_argument("--activation", default=None, choices=hidden_activations(), metavar="NAME",
                       help="activation of the hidden layers, mlp only (default: relu): "
                            + ", ".join(hidden_activations()))
    model.add_argument("--dropout", type=probability, default=None, metavar="P",
                       help="dropout probability after each hidden layer, 0 for none (default: 0 for mlp, "
                            "0.3 before the cnn's output layer)")
    model.add_argument("--batch-norm", action="store_true",
                       help="batch normalization after each hidden layer's activation (mlp only)")
    model.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="floating-point type")
    opt = train.add_argument_group("optimization")
    opt.add_argument("--loss", default=None, choices=["cross-entropy", "mse", "huber"],
                     help="the loss: cross-entropy for a classification; mse (default) or huber for a regression")
    opt.add_argument("--optimizer", default="adam", choices=["sgd", "adam", "adamw"], help="optimizer")
    opt.add_argument("--lr", type=positive_float, default=None,
                     help="learning rate (default: 0.001 for adam/adamw, 0.05 for sgd)")
    opt.add_argument("--momentum", type=non_negative_float, default=None,
                     help="SGD momentum (sgd only; default: 0.9)")
    opt.add_argument("--weight-decay", type=non_negative_float, default=None, metavar="WD",
                     help="weight decay (default: 0 for sgd/adam, 0.01 for adamw, decoupled)")
    opt.add_argument("--epochs", type=positive_int, default=150, help="most epochs to train")
    opt.add_argument("--batch-size", type=positive_int, default=32, help="samples per step")
    opt.add_argument("--early-stopping", type=non_negative_int, default=20, metavar="PATIENCE",
                     help="stop after this many epochs without a lower validation loss and keep the best "
                          "weights (0: train every epoch)")
    opt.add_argument("--seed", type=non_negative_int, default=0,
                     help="seed of the split, the toy data, the initial weights, the shuffles and dropout")
    run_group = train.add_argument_group("where it runs")
    run_group.add_argument("--device", default="auto",
                           help="cpu, cuda, cuda:N or auto (a GPU when one is usable, else the CPU)")
    run_group.add_argument("--out", default=None, metavar="DIR",
                           help="folder for model.safetensors, history.json, training.png (default: runs/<timestamp>/)")
    run_group.add_argument("--distributed", action="store_true",
                           help="data-parallel over the ranks of `mpirun -n N` (MPI; NCCL on GPUs)")
    train.set_defaults(run=run)


def _add_explain(sub) -> None:
    from backprop.apps.explain import MAX_FILE_BYTES, MAX_STEPS, run

    explain = sub.add_parser(
        "explain", help="backpropagation step by step on a small network (the worked 3-4-1 example by default)",
        description="A worked example of backpropagation, printed like a textbook: one training example, "
                    "one step of gradient descent. Shows the data and every parameter; the forward pass "
                    "(every z = wx + b and f = act(z), yhat, the loss E); the backward pass (dE/dyhat, each "
                    "activation's derivative, every chain-rule product, every gradient); the updated "
                    "parameters; then yhat over the next iterations. By default the source texts' 3-4-1 "
                    "network, sigmoid on every layer, binary cross-entropy, target 1, random weights and zero "
                    "biases; --weights FILE gives any small network. Every number comes from the library's "
                    "own forward and backward on --device.",
        epilog='--weights FILE is JSON: {"input": [x1, ...], "target": [y1, ...], "loss": "bce" | "mse" | '
               '"half_sse", "lr": 0.5, "layers": [{"W": [[...], ...], "b": [...], "activation": "sigmoid"}, '
               "...]}, any number of layers of any sizes, any activation of the library's table. W[j][k] is the "
               "weight from input k to neuron j (wl_jk in the texts' notation). mse is the mean over the "
               "outputs, half_sse is E = 1/2 sum (y - yhat)^2; lr is optional (--lr overrides it; default 0.5). "
               'The 3-4-1 form {"input": [3 numbers], "target": 1, "W1": [4 rows of 3], "b1": [4], '
               '"W2": [4], "b2": number} is read too. The file must be a regular file of at most '
               f'{MAX_FILE_BYTES:,} bytes. With --json, a number JSON cannot write (an overflow\'s inf, a NaN) '
               'is the string "Infinity", "-Infinity" or "NaN".',
        formatter_class=_Formatter)
    explain.add_argument("--seed", type=non_negative_int, default=0,
                         help="seed of the random input and initial weights of the default example")
    explain.add_argument("--lr", type=positive_float, default=None,
                         help="learning rate epsilon (default: the file's lr, else 0.5)")
    explain.add_argument("--steps", type=_checked(int, lambda v: 0 <= v <= MAX_STEPS, f"an integer from 0 to {MAX_STEPS}"),
                         default=6, help=f"further iterations to show yhat for after the first update (at most {MAX_STEPS})")
    explain.add_argument("--weights", default=None, metavar="FILE",
                         help="JSON with the input, the target, the loss and the layers (see below)")
    explain.add_argument("--json", action="store_true",
                         help="print the numbers as one JSON document instead of the text")
    explain.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    explain.set_defaults(run=run)


def _add_devices(sub) -> None:
    from backprop.apps.devices import list_devices

    devices = sub.add_parser(
        "devices", help="list the devices backprop can use, and why not the GPU",
        description="List the devices backprop can use here (the CPU always; each usable NVIDIA GPU), "
                    "and when no GPU is usable, the reason and the fix.", formatter_class=_Formatter)
    devices.set_defaults(run=list_devices)


def _add_gradcheck(sub) -> None:
    from backprop.apps.gradcheck_command import run

    check = sub.add_parser(
        "gradcheck", help="check backprop's gradients against finite differences on each device",
        description="Build small random networks (every activation, dropout, batch norm, several losses) "
                    "on each available device and compare the library's backpropagated gradients with "
                    "central finite differences in float64: the largest relative error per layer. "
                    "Exit status 1 if any is above --tolerance.", formatter_class=_Formatter)
    check.add_argument("--device", action="append", default=None,
                       help="device to check (repeatable; default: every available device)")
    check.add_argument("--seed", type=non_negative_int, default=0, help="seed of the networks and data")
    check.add_argument("--tolerance", type=positive_float, default=1e-6,
                       help="largest relative error that passes")
    check.set_defaults(run=run)


def _add_bench(sub) -> None:
    from backprop.apps import bench  # stdlib imports only: cheap

    parser = sub.add_parser(
        "bench", help="time a training step against PyTorch, and digits training against sklearn",
        description=bench.__doc__, formatter_class=_Formatter)
    bench.add_arguments(parser)
    parser.set_defaults(run=bench.run)


DATA_FILES = ("DATA is .npz (arrays X, and y for evaluate), .npy (X; the targets from --labels), .csv (a "
              "header row; the model's feature columns, and its target column for evaluate) or an IDX images "
              "file (the labels from --labels).")


def _add_model_and_data(parser) -> None:
    parser.add_argument("model", metavar="MODEL", help="a checkpoint written by train (model.safetensors) or bp.save")
    parser.add_argument("data", metavar="DATA", help="the data file: .npz, .npy, .csv or IDX (see above)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--batch-size", type=positive_int, default=1024, help="examples per forward pass")


def _add_predict(sub) -> None:
    from backprop.apps.predict_command import run_predict

    predict = sub.add_parser(
        "predict", help="run a saved model on a data file and write its predictions",
        description="Run a saved model on the examples of a data file, read, shaped and scaled as train "
                    "read its data (the checkpoint keeps the task, the class and feature names and the "
                    "input scaling). Writes one row per example: the class name of a classifier (each "
                    "class's probability with --proba), the predicted value of a regression in the "
                    "targets' own units. " + DATA_FILES,
        epilog="examples:\n  python -m backprop predict runs/20261130-221539/model.safetensors new.csv"
               "\n  python -m backprop predict model.safetensors images.npy --proba --out probabilities.npy",
        formatter_class=_Formatter)
    _add_model_and_data(predict)
    predict.add_argument("--out", default=None, metavar="FILE",
                         help="FILE.csv or FILE.npy for the predictions (default: CSV to stdout)")
    predict.add_argument("--proba", action="store_true", help="each class's probability instead of the class")
    predict.set_defaults(run=run_predict)


def _add_evaluate(sub) -> None:
    from backprop.apps.predict_command import run_evaluate

    evaluate = sub.add_parser(
        "evaluate", help="measure a saved model on a labelled data file",
        description="Run a saved model on a labelled data file and print its metrics: the accuracy and "
                    "a per-class summary of a classifier, R^2 and the mean absolute error of a "
                    "regression (in the targets' own units). " + DATA_FILES,
        epilog="examples:\n  python -m backprop evaluate runs/20261130-221539/model.safetensors test.csv"
               "\n  python -m backprop evaluate model.safetensors t10k-images-idx3-ubyte.gz "
               "--labels t10k-labels-idx1-ubyte.gz",
        formatter_class=_Formatter)
    _add_model_and_data(evaluate)
    evaluate.add_argument("--labels", default=None, metavar="FILE",
                          help="the targets, for DATA that holds none (.npy, or an IDX labels file)")
    evaluate.add_argument("--target", default=None, metavar="COLUMN",
                          help="the target column of a .csv DATA (default: the column the model was trained on)")
    evaluate.set_defaults(run=run_evaluate)


class _Formatter(argparse.HelpFormatter):
    """Help text wrapped to the terminal, but indented lines (examples) kept as written; each
    flag's default after its help, unless the help already says it or there is none."""

    def _fill_text(self, text, width, indent):
        """Paragraphs and "- " items re-flowed to `width` (the source wraps them at its own width);
        blank lines kept; lines indented by four spaces or more (examples) kept as written."""
        import textwrap

        out, item = [], None  # item: [first-line prefix, continuation prefix, its text]

        def flush():
            if item:
                out.extend(textwrap.wrap(item[2], width, initial_indent=indent + item[0],
                                         subsequent_indent=indent + item[1]))

        for line in text.splitlines():
            continues = item is not None and line.strip() and not line.startswith("    ") and (
                line.startswith("  ") if item[0] else not line.startswith((" ", "- ")))
            if continues:
                item[2] += " " + line.strip()
                continue
            flush()
            item = None
            if line.startswith("- "):
                item = ["- ", "  ", line[2:].strip()]
            elif line.strip() and not line.startswith(" "):
                item = ["", "", line.strip()]
            else:
                out.append(indent + line if line.strip() else "")
        flush()
        return "\n".join(out)

    def _get_help_string(self, action):
        text = action.help or ""
        hidden = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if action.option_strings and "default" not in text and not hidden:
            text += " (default: %(default)s)"
        return text


# ---------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m backprop",
                    description="Train and inspect neural networks trained by backpropagation, on the CPU "
                                "(NumPy) or an NVIDIA GPU (CuPy).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    _add_explain(sub)
    _add_devices(sub)
    _add_gradcheck(sub)
    _add_bench(sub)
    _add_predict(sub)
    _add_evaluate(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "distributed", False):  # one GPU per rank, rank 0 prints, any error stops all ranks
            from backprop.distributed import run_on_ranks
            return run_on_ranks(args.run, args)
        return args.run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:  # the reader went away (`... | head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except TrainingDivergedError as exc:  # the run failed (the learning rate, usually): not a usage error
        _error_line(args, exc)
        return FAILED
    except USER_ERRORS as exc:
        _error_line(args, exc)
        return USAGE_ERROR


def _error_line(args, exc: BaseException) -> None:
    message = " ".join(str(exc).split()) or type(exc).__name__
    print(f"python -m backprop {args.command}: error: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
