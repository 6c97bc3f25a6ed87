"""Each initialization scheme against its defining property, with derived tolerances.

Variance checks: for n iid draws w ~ N(0, s^2) with known mean 0, n * mean(w^2) / s^2 ~ chi^2_n,
so mean(w^2) / s^2 lies in [chi2.ppf(a/2, n)/n, chi2.ppf(1 - a/2, n)/n] with probability 1 - a
(a = 1e-6 below; seeds are fixed, so a failure is a bug, not bad luck).
"""

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from gradlab.init import INITS, apply_init, available_inits

ALPHA = 1e-6
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensors gain nothing from intra-op threads, and on a shared machine their
    spin-waits cost more than they save; restore the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def chi2_band(n: int, alpha: float = ALPHA) -> tuple[float, float]:
    """Band for mean(w^2)/s^2 of n iid N(0, s^2) draws, two-sided level alpha."""
    return stats.chi2.ppf(alpha / 2, n) / n, stats.chi2.ppf(1 - alpha / 2, n) / n


def assert_variance(w: torch.Tensor, var: float) -> None:
    w = w.detach().double().flatten()
    lo, hi = chi2_band(w.numel())
    ratio = float((w**2).mean()) / var
    assert lo <= ratio <= hi, f"mean(w^2)/var = {ratio:.4f} outside [{lo:.4f}, {hi:.4f}]"


def gate_blocks(w: torch.Tensor, G: int) -> list[torch.Tensor]:
    return list(w.detach().double().chunk(G, dim=0))


def make(cell: str, I: int = 3, H: int = 8, **kw) -> nn.Module:
    return {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell](I, H, **kw)


G_OF = {"rnn": 1, "gru": 3, "lstm": 4}
SHAPES = [dict(), dict(num_layers=2, bidirectional=True)]


def recurrent(m: nn.Module, prefix: str = "weight_hh") -> list[tuple[str, torch.Tensor]]:
    return [(n, p) for n, p in m.named_parameters() if n.startswith(prefix)]


# ----------------------------------------------------------------------------- registry, errors


def test_registry_lists_every_scheme_with_a_source():
    names = set(available_inits())
    assert names == {
        "default", "xavier_uniform", "xavier_normal", "kaiming", "orthogonal",
        "irnn", "gaussian", "forget_bias", "chrono",
    }  # fmt: skip
    for name in names - {"default"}:
        assert any(str(y) in INITS[name].doc for y in range(1990, 2030)), name


def test_unknown_scheme_lists_the_known_ones():
    with pytest.raises(ValueError, match="RNN, 'nope'.*unknown init.*orthogonal"):
        apply_init(nn.RNN(2, 3), "nope")


def test_unknown_parameter_names_scheme_and_allowed():
    with pytest.raises(ValueError, match=r"'orthogonal'.*\['gian'\].*allowed parameters: gain"):
        apply_init(nn.RNN(2, 3), "orthogonal", gian=2.0)
    with pytest.raises(ValueError, match="'default'.*allowed parameters: none"):
        apply_init(nn.RNN(2, 3), "default", gain=1.0)


@pytest.mark.parametrize(
    "name, params, match",
    [
        ("chrono", {}, "needs parameter.*t_max"),
        ("chrono", {"t_max": 1.5}, "t_max must be"),
        ("gaussian", {"gain": -1.0}, "gain must be"),
        ("gaussian", {"bias_split": "hh"}, "bias_split"),
        ("orthogonal", {"gain": float("nan")}, "gain must be"),
    ],
)
def test_invalid_parameter_values(name, params, match):
    with pytest.raises(ValueError, match=match):
        apply_init(nn.LSTM(2, 3), name, **params)


def test_module_without_recurrent_parameters_is_named():
    with pytest.raises(ValueError, match="Linear holds no recurrent parameters.*weight_hh_l"):
        apply_init(nn.Linear(2, 3), "default")


def test_chrono_rejects_plain_rnn_with_fix():
    with pytest.raises(ValueError, match=r"RNN, 'chrono'.*rnn.*use 'irnn'"):
        apply_init(nn.RNN(2, 3), "chrono", t_max=10)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_irnn_rejects_gated_cells(cell):
    with pytest.raises(ValueError, match="'irnn'.*rnn cells"):
        apply_init(make(cell), "irnn")


def test_forget_bias_needs_lstm_and_biases():
    with pytest.raises(ValueError, match="'forget_bias'.*lstm"):
        apply_init(nn.GRU(2, 3), "forget_bias")
    with pytest.raises(ValueError, match="bias=True"):
        apply_init(nn.LSTM(2, 3, bias=False), "forget_bias")


def test_non_cpu_generator_or_bad_seed_rejected():
    with pytest.raises(TypeError, match="seed"):
        apply_init(nn.RNN(2, 3), "default", generator="0")


# ----------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize("name", sorted(set(INITS) - {"irnn", "forget_bias", "chrono"}))
def test_in_place_keeps_parameters_and_leaves_other_modules(name):
    model = nn.ModuleDict({"rnn": nn.GRU(3, 5, num_layers=2), "head": nn.Linear(5, 2)})
    before = {n: p for n, p in model.named_parameters()}
    head = model["head"].weight.detach().clone()
    assert apply_init(model, name, generator=1) is model
    for n, p in model.named_parameters():
        assert p is before[n] and p.requires_grad
    assert torch.equal(model["head"].weight, head)


@pytest.mark.parametrize("name", sorted(INITS))
def test_same_seed_same_weights(name):
    cell = "rnn" if name == "irnn" else "lstm"
    params = {"t_max": 20} if name == "chrono" else {}
    a, b, c = (make(cell, num_layers=2, bidirectional=True) for _ in range(3))
    apply_init(a, name, generator=7, **params)
    apply_init(b, name, generator=torch.Generator().manual_seed(7), **params)
    apply_init(c, name, generator=8, **params)
    for (n, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb), n
    if name != "irnn":  # irnn's W_hh and biases are not random
        assert any(
            not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(), strict=True)
        )


def test_generator_none_follows_torch_manual_seed():
    a, b = nn.LSTM(2, 4), nn.LSTM(2, 4)
    torch.manual_seed(3)
    apply_init(a, "orthogonal")
    torch.manual_seed(3)
    apply_init(b, "orthogonal")
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_cells_and_bias_free_modules():
    cell = nn.LSTMCell(3, 6)
    apply_init(cell, "orthogonal", generator=0)
    for blk in gate_blocks(cell.weight_hh, 4):
        torch.testing.assert_close(
            blk.T @ blk, torch.eye(6, dtype=torch.float64), atol=1e-5, rtol=0
        )
    m = nn.GRU(3, 6, bias=False)
    apply_init(m, "gaussian", generator=0)  # no biases to set, sigma_b = 0
    with pytest.raises(ValueError, match="bias=True"):
        apply_init(m, "gaussian", generator=0, sigma_b=0.5)


# ----------------------------------------------------------------------------- defining properties


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_default_is_uniform_in_pytorch_bound(cell):
    H = 64
    m = make(cell, I=5, H=H)
    apply_init(m, "default", generator=0)
    bound = 1 / math.sqrt(H)
    flat = torch.cat([p.detach().double().flatten() for p in m.parameters()])
    assert flat.abs().max() <= bound * (1 + 1e-6)
    # KS test against U(-bound, bound)
    assert stats.kstest(flat.numpy(), "uniform", args=(-bound, 2 * bound)).pvalue > ALPHA


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("gain", [1.0, 0.5])
def test_xavier_uniform_bounds_per_gate_block(cell, gain):
    I, H, G = 24, 40, G_OF[cell]
    m = make(cell, I=I, H=H, num_layers=2)
    apply_init(m, "xavier_uniform", generator=0, gain=gain)
    for n, p in m.named_parameters():
        if n.startswith("bias"):
            assert torch.count_nonzero(p) == 0
            continue
        fan_in = p.shape[1]
        a = gain * math.sqrt(6 / (fan_in + H))  # per block: fan_out = H, not G*H
        for blk in gate_blocks(p, G):
            assert blk.abs().max() <= a * (1 + 1e-6), n
            # the max of n uniforms on [-a, a] exceeds a(1 - 20/n) with prob 1 - e^{-20}
            assert blk.abs().max() >= a * (1 - 20 / blk.numel()), n


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_xavier_normal_and_kaiming_variances(cell):
    I, H, G = 30, 64, G_OF[cell]
    m = make(cell, I=I, H=H)
    apply_init(m, "xavier_normal", generator=0, gain=2.0)
    for blk in gate_blocks(m.weight_ih_l0, G):
        assert_variance(blk, 4.0 * 2 / (I + H))
    for blk in gate_blocks(m.weight_hh_l0, G):
        assert_variance(blk, 4.0 * 2 / (H + H))
    apply_init(m, "kaiming", generator=0)
    assert_variance(m.weight_ih_l0, 2.0 / I)
    assert_variance(m.weight_hh_l0, 2.0 / H)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_orthogonal_recurrent_blocks(cell, shape, dtype, atol):
    H, G, gain = 16, G_OF[cell], 1.7
    m = make(cell, I=5, H=H, dtype=dtype, **shape)
    apply_init(m, "orthogonal", generator=0, gain=gain)
    eye = torch.eye(H, dtype=torch.float64)
    for _, p in recurrent(m):
        for blk in gate_blocks(p, G):
            # float32 rounding of gain*Q: each entry off by <= 2^-24 relative, so W^T W is off
            # by <= ~H * 2^-23 * gain^2 ~ 6e-6 at H=16; atol 1e-5 covers it.
            torch.testing.assert_close(blk.T @ blk, gain**2 * eye, atol=atol * gain**2, rtol=0)
    for n, p in m.named_parameters():
        if n.startswith("weight_ih"):
            for blk in gate_blocks(p, G):
                assert blk.abs().max() <= math.sqrt(6 / (p.shape[1] + H)) * (1 + 1e-6)
        if n.startswith("bias"):
            assert torch.count_nonzero(p) == 0


def test_orthogonal_with_projection_is_semi_orthogonal():
    H, P = 12, 5
    m = nn.LSTM(3, H, proj_size=P)
    apply_init(m, "orthogonal", generator=0)
    for blk in gate_blocks(m.weight_hh_l0, 4):  # (H, P): orthonormal columns
        torch.testing.assert_close(
            blk.T @ blk, torch.eye(P, dtype=torch.float64), atol=1e-5, rtol=0
        )
    w = m.weight_hr_l0.detach().double()  # (P, H): orthonormal rows
    torch.testing.assert_close(w @ w.T, torch.eye(P, dtype=torch.float64), atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("nonlinearity", ["relu", "tanh"])
def test_irnn_identity(shape, nonlinearity):
    H = 32
    m = nn.RNN(50, H, nonlinearity=nonlinearity, **shape)
    apply_init(m, "irnn", generator=0, scale=0.9)
    for n, p in m.named_parameters():
        if n.startswith("weight_hh"):
            assert torch.equal(p, 0.9 * torch.eye(H)), n
        elif n.startswith("bias"):
            assert torch.count_nonzero(p) == 0, n
    assert_variance(m.weight_ih_l0, 1e-3**2)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("gain", [0.5, 1.0, 2.0])
def test_gaussian_recurrent_variance_per_gate_block(cell, gain):
    H, I, G = 96, 20, G_OF[cell]
    m = make(cell, I=I, H=H)
    apply_init(m, "gaussian", generator=0, gain=gain)
    for blk in gate_blocks(m.weight_hh_l0, G):
        assert_variance(blk, gain**2 / H)  # i.e. Var(W) * H = sigma_w^2
    assert_variance(m.weight_ih_l0, 1.0 / I)  # default input_std = 1/sqrt(I)
    assert torch.count_nonzero(m.bias_ih_l0) == torch.count_nonzero(m.bias_hh_l0) == 0
    apply_init(m, "gaussian", generator=0, gain=gain, input_std=0.3)
    assert_variance(m.weight_ih_l0, 0.09)


@pytest.mark.parametrize("split", ["ih", "even"])
def test_gaussian_total_bias_variance(split):
    H, sigma_b = 512, 0.7
    m = nn.LSTM(4, H)  # 4H = 2048 bias entries
    apply_init(m, "gaussian", generator=0, sigma_b=sigma_b, bias_split=split)
    total = m.bias_ih_l0 + m.bias_hh_l0
    assert_variance(total, sigma_b**2)
    if split == "ih":
        assert torch.count_nonzero(m.bias_hh_l0) == 0
    else:
        assert_variance(m.bias_hh_l0, sigma_b**2 / 2)


def test_gaussian_spectral_radius_follows_circular_law():
    """Circular law: eigenvalues of W_ij ~ N(0, s^2/N) fill the disc of radius s.

    Tolerance: at the edge, rho/s ~ 1 + sqrt(g/(4N)) + Gumbel/sqrt(4 N g), g = ln(N/2pi) - 2 ln ln N
    (Rider 2003, complex Ginibre; the real case has the same edge scale). At N = 300 the offset
    is +0.018 and the Gumbel scale 0.047, so |rho/s - 1| <= 0.25 fails with prob. about
    e^-4.9 < 1% above and exp(-e^5.7) below. (One gain suffices: W = s Z for the same seed.)
    """
    N, sigma_w = 300, 1.3
    m = nn.RNN(1, N)
    apply_init(m, "gaussian", generator=0, gain=sigma_w)
    rho = np.abs(np.linalg.eigvals(m.weight_hh_l0.detach().double().numpy())).max()
    assert abs(rho / sigma_w - 1) <= 0.25


@pytest.mark.parametrize("b", [1.0, 2.5, -1.0])
@pytest.mark.parametrize("shape", SHAPES)
def test_forget_bias_total(b, shape):
    H = 10
    m = nn.LSTM(3, H, **shape)
    apply_init(m, "forget_bias", generator=0, b=b)
    for n, p in m.named_parameters():
        if n.startswith("bias_ih"):
            total = p + m.get_parameter(n.replace("bias_ih", "bias_hh"))
            assert torch.equal(total[H : 2 * H], torch.full((H,), b)), n
            # other gates keep the default init: each vector within 1/sqrt(H), the total 2/sqrt(H)
            rest = torch.cat([total[:H], total[2 * H :]])
            assert rest.abs().max() <= 2 / math.sqrt(H) * (1 + 1e-6)


@pytest.mark.parametrize("t_max", [10.0, 784.0])
def test_chrono_lstm(t_max):
    H = 500
    m = nn.LSTM(2, H, num_layers=2)
    apply_init(m, "chrono", generator=0, t_max=t_max)
    samples = []
    for k in range(2):
        b_ih, b_hh = m.get_parameter(f"bias_ih_l{k}"), m.get_parameter(f"bias_hh_l{k}")
        total = (b_ih + b_hh).detach().double()
        b_i, b_f = total[:H], total[H : 2 * H]
        assert torch.equal(b_i, -b_f)  # exactly: b_hh is 0 in both chunks
        assert b_f.min() >= 0 and b_f.max() <= math.log(t_max - 1) + 1e-6
        samples.append(b_f.exp())
    # exp(b_f) ~ U[1, T_max - 1]: KS test on 1000 values (float32 rounding ~1e-7 relative)
    x = torch.cat(samples).numpy()
    assert stats.kstest(x, "uniform", args=(1.0, t_max - 2.0)).pvalue > 1e-3


def test_chrono_gru_sets_update_gate_positive():
    H, t_max = 1000, 50.0
    m = nn.GRU(2, H)
    apply_init(m, "chrono", generator=0, t_max=t_max)
    total = (m.bias_ih_l0 + m.bias_hh_l0).detach().double()
    b_z = total[H : 2 * H]
    assert torch.equal(m.bias_hh_l0[H : 2 * H], torch.zeros(H))
    assert b_z.min() >= 0 and b_z.max() <= math.log(t_max - 1) + 1e-6
    assert stats.kstest(b_z.exp().numpy(), "uniform", args=(1.0, t_max - 2.0)).pvalue > 1e-3
    # retention z = sigmoid(b_z): time constant 1/(1 - z) = 1 + e^{b_z} in [2, T_max]
    tau = 1 / (1 - torch.sigmoid(b_z))
    assert tau.min() >= 2 - 1e-6 and tau.max() <= t_max + 1e-3


# ----------------------------------------------------------------------------- devices


@CUDA
@pytest.mark.cuda
@pytest.mark.parametrize("name", ["orthogonal", "gaussian", "chrono"])
def test_cuda_same_seed_same_weights_as_cpu(name):
    params = {"t_max": 30} if name == "chrono" else {}
    cpu, gpu = nn.LSTM(3, 16, num_layers=2), nn.LSTM(3, 16, num_layers=2, device="cuda")
    apply_init(cpu, name, generator=5, **params)
    apply_init(gpu, name, generator=5, **params)
    for p, q in zip(cpu.parameters(), gpu.parameters(), strict=True):
        assert q.device.type == "cuda"
        assert torch.equal(p, q.cpu())


@CUDA
@pytest.mark.cuda
def test_cuda_generator_is_rejected():
    with pytest.raises(ValueError, match="CPU torch.Generator"):
        apply_init(nn.RNN(2, 3), "default", generator=torch.Generator(device="cuda"))


def test_numpy_reference_orthogonal_is_haar_like():
    """Sign-fixed QR gives Haar matrices: E[Q_11] = 0 and E[Q_11^2] = 1/H (Mezzadri 2007)."""
    H, n = 8, 400
    m = nn.RNN(1, H, num_layers=n)  # n independent layers, one draw each
    apply_init(m, "orthogonal", generator=0)
    vals = np.array([m.get_parameter(f"weight_hh_l{k}")[0, 0].item() for k in range(n)])
    # Q_11^2 ~ Beta(1/2, (H-1)/2): mean 1/H, sd sqrt(2(H-1)/(H^2(H+2))); mean of n within 5 se
    sd = math.sqrt(2 * (H - 1) / (H**2 * (H + 2)))
    assert abs((vals**2).mean() - 1 / H) <= 5 * sd / math.sqrt(n)
    assert abs(vals.mean()) <= 5 / math.sqrt(H * n)
