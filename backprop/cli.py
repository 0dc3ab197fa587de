"""The command line: python -m backprop train | devices."""

from __future__ import annotations

import argparse
import sys
import time


def _train(args) -> int:
    import backprop as bp
    from backprop.data import load_digits_split

    X_train, y_train, X_val, y_val, X_test, y_test = load_digits_split(seed=args.seed)
    hidden = [int(h) for h in args.hidden.split(",") if h]
    widths = [X_train.shape[1], *hidden, 10]
    layers = [bp.Dense(a, b, activation="relu") for a, b in zip(widths[:-2], widths[1:-1])]
    layers.append(bp.Dense(widths[-2], widths[-1]))
    net = bp.Sequential(*layers, device=args.device, seed=args.seed)
    opt = bp.Adam(net.parameters(), lr=args.lr)
    start = time.perf_counter()
    history = bp.fit(net, X_train, y_train, loss=bp.CrossEntropyLoss(), optimizer=opt, epochs=args.epochs,
                     batch_size=args.batch_size, validation_data=(X_val, y_val),
                     early_stopping=args.early_stopping, seed=args.seed,
                     distributed=args.distributed)
    seconds = time.perf_counter() - start
    result = bp.evaluate(net, X_test, y_test, loss=bp.CrossEntropyLoss())
    print(f"trained {history.epochs} epochs on {net.device} in {seconds:.1f} s")
    print(f"test accuracy {result['accuracy']:.4f}  test loss {result['loss']:.4f}")
    return 0


def _devices(args) -> int:
    from backprop.backends import available_devices, cuda_status

    for device in available_devices():
        print(device)
    count, reason = cuda_status()
    if not count:
        print(f"no GPU: {reason}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m backprop", description="Train and inspect neural networks.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a network on handwritten digits")
    train.add_argument("--device", default="auto")
    train.add_argument("--hidden", default="128")
    train.add_argument("--epochs", type=int, default=60)
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--early-stopping", type=int, default=10)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--distributed", action="store_true",
                       help="data-parallel over the ranks of `mpirun -n N` (MPI; NCCL on GPUs)")
    train.set_defaults(run=_train)
    devices = sub.add_parser("devices", help="list the devices backprop can use")
    devices.set_defaults(run=_devices)
    from backprop import bench as bench_runner  # stdlib imports only: cheap

    bench = sub.add_parser("bench", help="time a training step against PyTorch and sklearn (needs [bench])")
    bench_runner.add_arguments(bench)
    bench.set_defaults(run=bench_runner.run)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "distributed", False):  # one GPU per rank, rank 0 prints, any error stops all ranks
        from backprop.distributed import run_on_ranks
        return run_on_ranks(args.run, args)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
