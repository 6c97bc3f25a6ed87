"""Watch gradients vanish while a tanh RNN and an LSTM learn sequential digits.

    python examples/monitor_digits.py [--iterations 500] [--every 20] [--out figures/monitor]

scikit-learn's 8x8 digits read pixel by pixel (T = 64 steps, one pixel per step, 10 classes;
gradlab.tasks' "digits" task). Each model is a stock nn.RNN/nn.LSTM (hidden size 64) with a linear
read-out of the last step, trained with Adam under ``gradlab.Monitor``: every ``--every``-th
iteration is recorded to a Parquet folder (``--runs``), the others run as plain training. Then
``gradlab.report`` draws each run's figures into ``--out/<cell>/``.

``--tiny`` (or GRADLAB_EXAMPLE_TINY=1) runs a few iterations of small models: the test suite's
smoke run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import torch

import gradlab
from gradlab.tasks import make_task
from gradlab.train import SequenceModel

CELLS = ("rnn_tanh", "lstm")


def train_one(cell: str, args: argparse.Namespace) -> dict:
    task = make_task("digits", 64, seed=args.seed)
    torch.manual_seed(args.seed)
    model = SequenceModel(cell, task.input_size, args.hidden, task.output_size)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    run = Path(args.runs) / cell
    shutil.rmtree(run, ignore_errors=True)  # a Monitor folder holds one run
    x_test, y_test = task.full_split("test")
    t0 = time.perf_counter()
    with gradlab.Monitor(model, every=args.every, path=run, tensorboard=args.tensorboard and
                         Path(args.tensorboard) / cell) as mon:  # fmt: skip
        for i in range(args.iterations):
            x, y = task.sample(args.batch)  # (B, 64, 1), (B,)
            loss = task.loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if (i + 1) % max(1, args.iterations // 4) == 0:
                with torch.no_grad():  # evaluation: not counted, not recorded
                    acc = task.accuracy(model(x_test), y_test).item()
                print(f"{cell:>8} iteration {i + 1:4d}  loss {loss.item():.3f}  test acc {acc:.3f}",
                      flush=True)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        acc = task.accuracy(model(x_test), y_test).item()
    out = gradlab.report(run, Path(args.out) / cell, iterations=6, progress=False,
                         formats=("png",) if args.tiny else ("png", "svg"))
    s = mon.summary()
    rate = s[s["quantity"] == "ln_decay_rate"].sort_values("iteration")["value"]
    print(f"{cell:>8}: {args.iterations} iterations in {seconds:.0f} s, test accuracy {acc:.3f}, "
          f"decay rate {rate.iloc[0]:.3f} -> {rate.iloc[-1]:.3f} ln/step; report -> {out}")
    return {"cell": cell, "accuracy": acc, "seconds": seconds}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--every", type=int, default=20)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", default="results/monitor", help="Monitor folders (Parquet parts)")
    ap.add_argument("--out", default="figures/monitor", help="report folders, one per cell")
    ap.add_argument("--tensorboard", default=None, metavar="LOGDIR", help="also write TensorBoard")
    ap.add_argument("--cells", nargs="+", default=list(CELLS), choices=CELLS)
    ap.add_argument("--tiny", action="store_true", default=bool(os.environ.get(
        "GRADLAB_EXAMPLE_TINY")), help="a few iterations of small models (smoke test)")  # fmt: skip
    args = ap.parse_args(argv)
    if args.tiny:
        args.iterations, args.every, args.hidden, args.batch = 6, 2, 8, 8
    return [train_one(cell, args) for cell in args.cells]


if __name__ == "__main__":
    main()
