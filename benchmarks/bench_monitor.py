"""Benchmark of gradlab.Monitor: a training iteration that is not recorded, against plain training.

    python benchmarks/bench_monitor.py [--device cpu|cuda] [--quick]

``bench_monitor(device, quick)`` is meant to be called from ``benchmarks/bench.py``; it uses
bench.py's ``side_by_side`` and ``report`` (those of the running bench.py script when it is the
``__main__`` module, so the row lands in its table).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import gradlab  # noqa: E402


def _helpers():
    main = sys.modules.get("__main__")
    if main is not None and hasattr(main, "side_by_side") and hasattr(main, "report"):
        return main.side_by_side, main.report
    import bench

    return bench.side_by_side, bench.report


class _Net(nn.Module):
    def __init__(self, I, H):
        super().__init__()
        self.rnn = nn.LSTM(I, H, batch_first=True)
        self.head = nn.Linear(H, 1)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])  # (B, 1)


def bench_monitor(device, quick):
    """Monitor(every=huge): iterations after the first cost only the pre-hook. Forward, backward
    and SGD step of an LSTM + linear head; two copies of the model (same weights) alternate, one
    monitored, each timed call running ``inner`` iterations. Two rounds swap which copy is
    monitored and which runs first, and the ratio is the geometric mean of the two, so a
    difference between the copies (memory placement) or between first and second place
    cancels. The pre-hook's own cost is also timed on an empty model, in microseconds."""
    side_by_side, report = _helpers()
    B, T, H, I = (8, 30, 64, 8) if quick else (32, 100, 256, 32)
    repeats, inner = (3, 2) if quick else (10, 3)
    torch.manual_seed(0)
    a = _Net(I, H).to(device)
    b = copy.deepcopy(a)
    opts = {id(m): torch.optim.SGD(m.parameters(), lr=1e-4) for m in (a, b)}
    x = torch.randn(B, T, I, device=device)
    y = torch.randn(B, 1, device=device)

    def run(m):
        def fn():
            for _ in range(inner):
                loss = (m(x) - y).pow(2).mean()
                opts[id(m)].zero_grad()
                loss.backward()
                opts[id(m)].step()
        return fn

    ratios, times = [], []
    for mon_m, plain_m, order in ((a, b, ("plain", "monitor")), (b, a, ("monitor", "plain"))):
        with gradlab.Monitor(mon_m, every=10**9) as mon:
            run(mon_m)()  # iteration 0 is recorded (and harvested at the next call)
            fns = {"plain": run(plain_m), "monitor": run(mon_m)}
            t = side_by_side({k: fns[k] for k in order}, device, repeats)
        assert len(mon.summary()) > 0 and mon.iteration > 1
        ratios.append(t["monitor"] / t["plain"])
        times.append(t)
    ratio = float((ratios[0] * ratios[1]) ** 0.5)
    hook_us = _hook_cost_us()
    plain_ms = min(t["plain"] for t in times) / inner * 1e3
    mon_ms = min(t["monitor"] for t in times) / inner * 1e3
    report(f"6. Monitor, iteration not recorded / plain, nn.LSTM (B={B},T={T},H={H},I={I})",
           ratio, "<= 1.02x", "x", ratio <= 1.02,
           f"fwd+bwd+SGD step: plain {plain_ms:.1f} ms, monitored {mon_ms:.1f} ms; rounds "
           f"{ratios[0]:.3f}x, {ratios[1]:.3f}x (copies and order swapped), geometric mean; "
           f"the pre-hook itself: {hook_us:.1f} us per call")  # fmt: skip
    return ratio


def _hook_cost_us(n: int = 20000) -> float:
    """Extra time per call of a model under Monitor (pre-hook only), on a model whose forward
    does nothing: the absolute cost of a non-recorded iteration."""
    import time

    class Empty(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.RNN(1, 1)

        def forward(self, x):
            return x

    m, x = Empty(), torch.zeros(1)
    best = {}
    for _ in range(5):
        for key in ("plain", "monitor"):
            ctx = gradlab.Monitor(m, every=10**9) if key == "monitor" else None
            if ctx is not None:
                ctx.__enter__()
                m(x)  # iteration 0
            t0 = time.perf_counter()
            for _ in range(n):
                m(x)
            best[key] = min(best.get(key, float("inf")), time.perf_counter() - t0)
            if ctx is not None:
                ctx.__exit__(None, None, None)
    return (best["monitor"] - best["plain"]) / n * 1e6


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    bench_monitor(torch.device(args.device), args.quick)
