"""The parallelism limit: forward + backward wall time against T, fused RNNs vs a Transformer.

    python benchmarks/bench_parallel.py [--device cpu|cuda] [--threads N] [--quick]

writes ``benchmarks/parallel-<device>.csv`` (tidy: one row per architecture and T) and
``benchmarks/parallel-<device>.md`` (the table). The gallery figure ``parallel`` reads the CSV.

Models (float32, batch_first, B sequences of T steps, I = 32 inputs): fused ``nn.RNN`` (tanh),
``nn.LSTM`` and ``nn.GRU`` with H = 64, one layer, and ``gradlab.models.Transformer`` with
d_model = 64, 4 heads, 2 layers, feed-forward width 256, causal (PyTorch's scaled-dot-product
attention with ``is_causal``, no T×T weight matrix kept). Loss: sum of the top output; one
timing = one forward + backward. The four models are timed in turn for every repeat
(interleaved), so a noisy neighbour slows all of them; the table gives the median and the
min–max of the repeats after one warm-up call each.

Sequential steps: the number of operations that must run one after the other, whatever the
hardware: T for a one-layer RNN (h_t needs h_{t-1}), num_layers for the Transformer (every
position of a layer is computed at once). Work: O(T·H²) for an RNN, O(T·d² + T²·d) for
attention, so on a CPU with few cores the Transformer's quadratic work wins only where the RNN's
per-step overhead dominates.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gradlab.models import Transformer  # noqa: E402

I, H, D_MODEL, NHEAD, LAYERS = 32, 64, 64, 4, 2
LENGTHS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
ARCHS = ("rnn_tanh", "lstm", "gru", "transformer")


def build(arch: str, device) -> nn.Module:
    if arch == "transformer":
        return Transformer(I, D_MODEL, NHEAD, LAYERS, device=device)
    cls = {"lstm": nn.LSTM, "gru": nn.GRU}.get(arch, nn.RNN)
    return cls(I, H, batch_first=True, device=device)


def sequential_steps(arch: str, T: int) -> int:
    return LAYERS if arch == "transformer" else T


def step_fn(model: nn.Module, x: torch.Tensor):
    def run():
        out = model(x)
        out = out[0] if isinstance(out, tuple) else out
        out.sum().backward()
        model.zero_grad(set_to_none=True)

    return run


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(device, batch: int, repeats: int, lengths) -> list[dict]:
    torch.manual_seed(0)
    models = {a: build(a, device) for a in ARCHS}
    rows = []
    for T in lengths:
        x = torch.randn(batch, T, I, device=device)
        fns = {a: step_fn(m, x) for a, m in models.items()}
        for f in fns.values():  # warm-up
            f()
        times = {a: [] for a in ARCHS}
        for _ in range(repeats):
            for a, f in fns.items():
                sync(device)
                t0 = time.perf_counter()
                f()
                sync(device)
                times[a].append(time.perf_counter() - t0)
        for a in ARCHS:
            ts = times[a]
            rows.append({
                "device": device.type, "arch": a, "seq_len": T, "batch_size": batch,
                "sequential_steps": sequential_steps(a, T),
                "params": sum(p.numel() for p in models[a].parameters()),
                "ms_median": 1e3 * statistics.median(ts), "ms_min": 1e3 * min(ts),
                "ms_max": 1e3 * max(ts), "repeats": repeats,
            })  # fmt: skip
        print(f"T={T:5d} " + "  ".join(
            f"{a} {1e3 * statistics.median(times[a]):8.2f} ms" for a in ARCHS), flush=True)  # fmt: skip
    return rows


def write(rows: list[dict], device, threads: int, batch: int, out: Path, cmd: str) -> None:
    csv_path = out / f"parallel-{device.type}.csv"
    with csv_path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
    names = {"rnn_tanh": "nn.RNN (tanh)", "lstm": "nn.LSTM", "gru": "nn.GRU",
             "transformer": "Transformer"}  # fmt: skip
    by = {(r["arch"], r["seq_len"]): r for r in rows}
    lengths = sorted({r["seq_len"] for r in rows})
    params = {a: by[(a, lengths[0])]["params"] for a in ARCHS}
    lines = [
        f"# The parallelism limit: forward + backward time vs T ({device.type})",
        "",
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: vm / {platform.machine()} / {os.cpu_count()} CPU cores (shared), "
        f"{threads} torch thread(s); load average (1/5/15 min) when the table was written: "
        + " / ".join(f"{v:.2f}" for v in os.getloadavg()) + " (this run adds about 1)",
        f"- torch {torch.__version__}, Python {platform.python_version()}",
        f"- command: `{cmd}`",
        f"- B = {batch}, I = {I}, float32; RNNs: H = {H}, one layer (fused PyTorch kernels); "
        f"Transformer: d_model = {D_MODEL}, {NHEAD} heads, {LAYERS} layers, causal. "
        "Parameters: " + ", ".join(f"{names[a]} {params[a]:,}" for a in ARCHS) + ".",
        "- one timing = forward + backward of the sum of the output; median (min–max) over "
        f"{rows[0]['repeats']} repeats, the four models interleaved within every repeat.",
        "",
        "| T | " + " | ".join(f"{names[a]} ms" for a in ARCHS)
        + " | sequential steps RNN / Transformer | Transformer ÷ LSTM |",
        "|---:|" + "---:|" * len(ARCHS) + "---:|---:|",
    ]
    for T in lengths:
        cells = [f"{by[(a, T)]['ms_median']:.2f} ({by[(a, T)]['ms_min']:.2f}–"
                 f"{by[(a, T)]['ms_max']:.2f})" for a in ARCHS]  # fmt: skip
        ratio = by[("transformer", T)]["ms_median"] / by[("lstm", T)]["ms_median"]
        lines.append(f"| {T} | " + " | ".join(cells)
                     + f" | {T} / {LAYERS} | {ratio:.2f} |")  # fmt: skip
    lines += [
        "",
        "Notes:",
        "- Sequential steps are a property of the computation, not of the machine: an RNN "
        "must finish h_{t-1} before h_t, so T dependent steps per layer in the forward and "
        "again in the backward pass; a Transformer layer computes all T positions in one step.",
        "- On a CPU with few threads the hardware has little parallelism to offer, so wall time "
        "follows the amount of work: O(T·H²) for an RNN, O(T·d² + T²·d) for causal attention.",
        "- On a shared machine single repeats scatter when other jobs run (see min–max); the "
        "medians are what the figure draws. The load average is in the header.",
        "- The models have equal width (H = d_model = 64), not equal parameter counts: this "
        "table is about time per sequence length; the equal-budget comparison of what each "
        "learns is `experiments/long_dependency.toml`.",
        "- A CUDA run was not possible in the session that made this table (no GPU lent); "
        "`python benchmarks/bench_parallel.py --device cuda` writes `parallel-cuda.md` and "
        "`.csv` beside this file.",
        "",
    ]
    (out / f"parallel-{device.type}.md").write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {csv_path} and {csv_path.with_suffix('.md')}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads on CPU (default 1)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="T ≤ 256, 2 repeats, no files")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    lengths = [T for T in LENGTHS if T <= 256] if args.quick else LENGTHS
    rows = measure(device, args.batch, 2 if args.quick else args.repeats, lengths)
    if not args.quick:
        cmd = "python benchmarks/bench_parallel.py" + (
            f" --device {args.device}" if args.device != "cpu" else "")  # fmt: skip
        write(rows, device, args.threads, args.batch, args.out, cmd)


if __name__ == "__main__":
    main()
