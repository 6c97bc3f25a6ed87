"""gradlab benchmarks: every figure a ratio against its baseline, measured side by side in one run.

    python benchmarks/bench.py [--device cpu|cuda] [--out benchmarks/results.md] [--quick]

Timings are the minimum over interleaved repeats (baseline and candidate alternate, so a noisy
neighbour slows both). Memory on CPU is the peak resident set (VmHWM, reset through
/proc/self/clear_refs once the model and data exist) of a fresh subprocess above its resident set
at that moment; on CUDA, torch.cuda.max_memory_allocated above the allocation at that moment.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gradlab  # noqa: E402
from gradlab import _cells, _linalg, analysis  # noqa: E402
from gradlab._record import DEFAULT_QUANTITIES  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def side_by_side(fns: dict, device, repeats: int) -> dict:
    """Minimum wall time of each function, calls interleaved, after one warm-up call each."""
    for f in fns.values():
        f()
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            best[k] = min(best[k], timed(f, device)[0])
    return best


ROWS: list[dict] = []


def report(name, value, target, unit, met, note=""):
    ROWS.append(dict(name=name, value=value, target=target, unit=unit, met=met, note=note))
    flag = "met" if met else "NOT met"
    print(f"{name:<58} {value:>10.3g} {unit:<6} target {target:<10} {flag}  {note}", flush=True)


# ------------------------------------------------------------------------------------------
# 1. recording cost


RECORD_TARGETS = {"RNN": 1.3, "LSTM": 1.3, "GRU": 2.0}
PACKED_TARGET = 1.5


def bench_recording(device, quick):
    """record's cost against the plain fused forward + backward, side by side, for the defaults
    and quantities=("grad_norm",), input sizes 32 and 256, dense and packed input."""
    B, T, H = (8, 30, 64) if quick else (32, 100, 256)
    sizes = (16, 64) if quick else (32, 256)
    reps = 3 if quick else 7
    for cls in (torch.nn.RNN, torch.nn.LSTM, torch.nn.GRU):
        target = RECORD_TARGETS[cls.__name__]
        for I in sizes:
            torch.manual_seed(0)
            m = cls(I, H, batch_first=True).to(device)
            x = torch.randn(B, T, I, device=device)

            def plain(m=m, x=x):
                out, _ = m(x)
                out[:, -1].pow(2).sum().backward()

            def recorded(quantities, m=m, x=x):
                def run():
                    with gradlab.record(m, quantities=quantities) as rec:
                        out, _ = m(x)
                        out[:, -1].pow(2).sum().backward()
                    return rec
                return run

            t = side_by_side({"plain": plain,
                              "default": recorded(DEFAULT_QUANTITIES),
                              "grad_norm": recorded(("grad_norm",))}, device, reps)
            for q in ("default", "grad_norm"):
                ratio = t[q] / t["plain"]
                report(f"1. record {q}, nn.{cls.__name__} (B={B},T={T},H={H},I={I})", ratio,
                       f"<= {target}x", "x", ratio <= target,
                       f"plain {t['plain'] * 1e3:.1f} ms, recorded {t[q] * 1e3:.1f} ms")
        # variable-length batch: lengths uniform in [T/4, T], packed (enforce_sorted=False)
        torch.manual_seed(0)
        I = sizes[0]
        m = cls(I, H, batch_first=True).to(device)
        x = torch.randn(B, T, I, device=device)
        lengths = torch.randint(T // 4, T + 1, (B,))
        lengths[0] = T
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True,
                                                         enforce_sorted=False)

        def plain_p(m=m, p=packed):
            out, h = m(p)
            (out.data.pow(2).sum() + (h[0] if isinstance(h, tuple) else h).sum()).backward()

        def rec_p(m=m, p=packed):
            with gradlab.record(m) as rec:
                out, h = m(p)
                (out.data.pow(2).sum() + (h[0] if isinstance(h, tuple) else h).sum()).backward()
            return rec

        t = side_by_side({"plain": plain_p, "record": rec_p}, device, reps)
        ratio = t["record"] / t["plain"]
        report(f"1. record default, packed nn.{cls.__name__} (B={B},T<={T},H={H},I={I})", ratio,
               f"<= {PACKED_TARGET}x", "x", ratio <= PACKED_TARGET,
               f"plain {t['plain'] * 1e3:.1f} ms, recorded {t['record'] * 1e3:.1f} ms")


def bench_recording_envs(device, quick):
    """Benchmark 1 twice, each in a fresh process: as users run it (no OpenMP setting) and with
    the Makefile's environment (OMP_WAIT_POLICY=PASSIVE)."""
    for label, env_change in (("as users run it", {"OMP_WAIT_POLICY": None}),
                              ("Makefile env, OMP_WAIT_POLICY=PASSIVE",
                               {"OMP_WAIT_POLICY": "PASSIVE"})):
        env = {k: v for k, v in os.environ.items() if k not in env_change}
        env.update({k: v for k, v in env_change.items() if v is not None})
        cmd = [sys.executable, str(Path(__file__).resolve()), "--device", device.type,
               "--rows-json"] + (["--quick"] if quick else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
        for row in json.loads(out.stdout.strip().splitlines()[-1]):
            row["name"] = f"{row['name']} [{label}]"
            ROWS.append(row)
            print(f"{row['name']:<80} {row['value']:>7.3g} {row['unit']:<3} {row['note']}",
                  flush=True)


# ------------------------------------------------------------------------------------------
# 2. per-step Jacobian spectral norms


def bench_spectral(device, quick):
    B, T, H, I = (4, 10, 32, 16) if quick else (32, 100, 128, 32)
    torch.manual_seed(0)
    m = torch.nn.LSTM(I, H, batch_first=True).to(device)
    p = _cells.params_from_module(m).detach()
    x = torch.randn(B, T, I, device=device)
    with torch.no_grad():
        states = _cells.unroll(p, x)  # (B, T, 2H)
        s_prev = torch.cat([states.new_zeros(B, 1, 2 * H), states[:, :-1]], 1)

    def ours():
        with torch.no_grad():
            cache, _ = _cells.sequence_cache(p, x, states)
            return _linalg.cell_spectral_norms(p, cache)

    def baseline():
        step = lambda s, xx: _cells.step(p, xx, s)  # noqa: E731
        J = torch.vmap(torch.vmap(torch.func.jacrev(step)))(s_prev, x)
        return torch.linalg.svdvals(J)[..., 0]

    t_ours, a = timed(ours, device)
    t_base, b = timed(baseline, device)
    t_ours = min(t_ours, timed(ours, device)[0])
    err = ((a.double() - b.double()).abs() / b.double()).max().item()
    ratio = t_base / t_ours
    report(f"2. LSTM Jacobian spectral norms (B={B},T={T},H={H}) speed-up", ratio, ">= 30x", "x",
           ratio >= 30 and err <= 1e-4,
           f"ours {t_ours:.2f} s, jacrev+vmap+svdvals {t_base:.2f} s, max rel err {err:.1e}")


# ------------------------------------------------------------------------------------------
# 3. T×T flow map


def bench_flow_map(device, quick):
    T, H = (32, 16) if quick else (256, 128)
    for kind, cls, kw in (("rnn_tanh", torch.nn.RNN, {}), ("rnn_relu", torch.nn.RNN,
                          {"nonlinearity": "relu"}), ("lstm", torch.nn.LSTM, {}),
                          ("gru", torch.nn.GRU, {})):
        torch.manual_seed(0)
        m = cls(8, H, batch_first=True, **kw).to(device)
        x = torch.randn(1, T, 8, device=device)
        t, df = timed(lambda m=m, x=x: analysis.flow_map(m, x), device)
        report(f"3. flow map T={T}, H={H}, {kind}", t, "<= 30 s", "s", t <= 30,
               f"{len(df)} rows")
    # exactness on a small case against materialised autograd products (float64)
    torch.manual_seed(1)
    m = torch.nn.LSTM(3, 5, batch_first=True).double().to(device)
    x = torch.randn(1, 12, 3, dtype=torch.float64, device=device)
    df = analysis.flow_map(m, x, norms=("spectral",))
    p = _cells.params_from_module(m).detach()
    states = _cells.unroll(p, x)[0]
    prev = torch.cat([states.new_zeros(1, 10), states[:-1]])
    J = torch.func.vmap(torch.func.jacrev(lambda s, xx: _cells.step(p, xx, s)))(prev, x[0])
    err = 0.0
    for row in df.itertuples():
        P = torch.eye(10, dtype=torch.float64, device=device)
        for j in range(row.k + 1, row.t + 1):
            P = J[j] @ P
        ref = torch.log10(torch.linalg.matrix_norm(P, ord=2)).item()
        err = max(err, abs(ref - row.value))
    report("3. flow map exact vs autograd (LSTM T=12, float64)", err, "<= 1e-8", "log10",
           err <= 1e-8, "max |Δ log10 ‖∂s_t/∂s_k‖₂|")


# ------------------------------------------------------------------------------------------
# 4. Lyapunov spectrum


def numpy_benettin(W, hs):
    """Reference: plain NumPy Benettin loop, QR every step, along the states hs (T, N).

    Finite-time exponents depend on the initial tangent frame and, the system being chaotic, on
    the trajectory's last bits: the reference starts from gradlab's frame (a QR of a float64
    N(0, 1) matrix from torch's generator seeded 0) and follows gradlab's trajectory, so both
    compute the same products of R factors and must agree to rounding.
    """
    N = W.shape[0]
    steps = hs.shape[0]
    gen = torch.Generator().manual_seed(0)
    Q = torch.linalg.qr(torch.randn(N, N, generator=gen, dtype=torch.float64))[0].numpy()
    acc = np.zeros(N)
    for t in range(steps):
        h = hs[t]
        J = (1 - h**2)[:, None] * W
        Q, R = np.linalg.qr(J @ Q)
        acc += np.log(np.abs(np.diag(R)))
    return np.sort(acc / steps)[::-1]


def bench_lyapunov(device, quick):
    N, steps = (60, 200) if quick else (500, 2000)
    g = np.random.default_rng(3)
    W = 1.5 * g.standard_normal((N, N)) / np.sqrt(N)
    m = torch.nn.RNN(1, N, bias=False, batch_first=True).double()
    with torch.no_grad():
        m.weight_hh_l0.copy_(torch.from_numpy(W))
        m.weight_ih_l0.zero_()
    m = m.to(device)
    x = torch.zeros(1, steps, 1, dtype=torch.float64, device=device)
    h_init = np.random.default_rng(0).standard_normal(N) * 0.5  # the initial state
    h0 = torch.from_numpy(h_init).view(1, 1, N).to(device)

    def ours():
        return analysis.lyapunov_spectrum(m, x, k=N, warmup=0, h0=h0)

    t_ours, df = timed(ours, device)
    p = _cells.params_from_module(m).detach()
    hs = _cells.unroll(p, x, h0[0])[0].cpu().numpy()  # the trajectory both follow
    t_np, ref = timed(lambda: numpy_benettin(W, hs), torch.device("cpu"))
    lam = df[df.quantity == "lyapunov_exponent"].sort_values("index").value.to_numpy()
    err = float(np.abs(lam - ref).max())
    ratio = t_np / t_ours
    report(f"4. Lyapunov spectrum N={N}, {steps} steps, all exponents, speed-up", ratio, ">= 2x",
           "x", ratio >= 2 and err <= 1e-6,
           f"ours {t_ours:.1f} s, NumPy QR-every-step {t_np:.1f} s, max |Δλ| {err:.1e}")


# ------------------------------------------------------------------------------------------
# 5. memory

_MEM_CHILD = textwrap.dedent(
    """
    import json, sys, torch
    sys.path.insert(0, {root!r})
    import gradlab
    from gradlab import analysis
    torch.set_num_threads(1)
    dev = torch.device({device!r})
    what, B, T, H = {what!r}, {B}, {T}, {H}

    def status(key):  # kB fields of /proc/self/status
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

    def reset_peak():  # Linux: writing 5 to clear_refs resets VmHWM to the current RSS
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")

    torch.manual_seed(0)
    if what.startswith("rec") or what.startswith("plain"):
        cls = getattr(torch.nn, what.split("_")[1])
        m = cls(H, H, batch_first=True).to(dev)
        x = torch.randn(B, T, H, device=dev)
    else:
        m = torch.nn.RNN(4, H, batch_first=True).double().to(dev)
        x = torch.randn(1, T, 4, dtype=torch.float64, device=dev)
    def run():
        if what.startswith("plain"):
            out, _ = m(x); out[:, -1].pow(2).sum().backward()
        elif what.startswith("rec"):
            route = what.split("_")[0].split("-")[1]
            with gradlab.record(m, route=route) as rec:
                out, _ = m(x); out[:, -1].pow(2).sum().backward()
            rec.frame()
        else:
            analysis.gradient_flow(m, x)

    run()  # warm-up: one-time costs (lazy imports, allocator pools) are not the peak we want
    m.zero_grad(set_to_none=False)
    import gc; gc.collect()
    reset_peak()
    base = status("VmRSS")
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    run()
    peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else status("VmHWM")
    print(json.dumps({{"extra": peak - base}}))
    """
)


def child_peak(what, device, B, T, H):
    code = _MEM_CHILD.format(root=str(ROOT), device=device.type, what=what, B=B, T=T, H=H)
    # a fixed mmap threshold turns off glibc's adaptive one, so every large tensor is mapped on
    # allocation and unmapped on free: the resident set follows the live tensors, not a pool
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])["extra"]


def bench_memory(device, quick):
    B, T, H = (8, 30, 64) if quick else (32, 100, 256)
    for cell in ("LSTM", "RNN", "GRU"):
        plain = min(child_peak(f"plain_{cell}", device, B, T, H) for _ in range(2))
        for route in ("auto", "lean"):
            rec = min(child_peak(f"rec-{route}_{cell}", device, B, T, H) for _ in range(2))
            ratio = rec / max(plain, 1)
            report(f"5. record (route={route!r}) peak memory / plain, nn.{cell} "
                   f"(B={B},T={T},H={H})", ratio, "<= 1.10x (lean)", "x",
                   ratio <= 1.10 or route != "lean",
                   f"plain +{plain / 2**20:.0f} MiB, recorded +{rec / 2**20:.0f} MiB")
    T = 2000 if quick else 100_000
    extra = child_peak("flow", device, 1, T, 128)
    report(f"5. gradient_flow T={T}, B=1, H=128 peak memory", extra / 2**30, "< 1 GB", "GiB",
           extra < 1e9)


# ------------------------------------------------------------------------------------------


def write_table(path: Path, device, quick):
    dev_name = torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() \
        or platform.machine()
    lines = [
        f"# gradlab benchmarks ({device.type}{', quick' if quick else ''})",
        "",
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"- machine: {platform.node()} / {dev_name} / {os.cpu_count()} CPU cores",
        f"- torch {torch.__version__}, numpy {np.__version__}, Python {platform.python_version()},"
        f" torch threads {torch.get_num_threads()}",
        "- command: `make bench` (`python benchmarks/bench.py"
        f"{' --device cuda' if device.type == 'cuda' else ''}`)",
        "",
        "| benchmark | value | unit | target | met | details |",
        "|---|---:|---|---|---|---|",
    ]
    for r in ROWS:
        lines.append(f"| {r['name']} | {r['value']:.3g} | {r['unit']} | {r['target']} | "
                     f"{'yes' if r['met'] else '**no**'} | {r['note']} |")
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    ap.add_argument("--only", default="123456", help="which benchmarks, e.g. 125")
    ap.add_argument("--rows-json", action="store_true",
                    help="(internal) run benchmark 1 here and print its rows as JSON")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (default: torch's own choice)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench: --device cuda but no CUDA device is available", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else ROOT / "benchmarks" / (
        "results.md" if device.type == "cpu" else f"results-{device.type}.md")
    if args.rows_json:
        import contextlib
        import io
        with contextlib.redirect_stdout(io.StringIO()):
            bench_recording(device, args.quick)
        print(json.dumps(ROWS))
        return 0
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_monitor import bench_monitor

    for key, fn in (("1", bench_recording_envs), ("2", bench_spectral), ("3", bench_flow_map),
                    ("4", bench_lyapunov), ("5", bench_memory), ("6", bench_monitor)):
        if key in args.only:
            fn(device, args.quick)
    write_table(out, device, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
