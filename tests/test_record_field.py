"""gradlab.record in real training: exploding gradients, GradScaler, torch.compile, autocast.
The contract: the recorder never changes what training does (outputs, .grad, control flow)."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import gradlab


def chaotic_rnn(seed=0, H=64, gain=3.0):
    """A float32 tanh RNN with W_hh ~ N(0, gain²/H): chaotic (gain > 1), so its backward over
    T = 1000 steps grows as e^{λT} and overflows float32 (checked in the test)."""
    torch.manual_seed(seed)
    m = nn.RNN(8, H, batch_first=True)
    with torch.no_grad():
        m.weight_hh_l0.normal_(0, gain / H**0.5)
    return m


def grads(m):
    return [p.grad.clone() for p in m.parameters()]


@pytest.mark.parametrize("route", ["auto", "recursion"])
def test_exploding_gradient_is_recorded_not_raised(route):
    m = chaotic_rnn()
    x = torch.randn(4, 1000, 8)
    out, _ = m(x)
    out[:, -1].sum().backward()
    g0 = grads(m)
    assert not all(bool(torch.isfinite(g).all()) for g in g0)  # the backward did overflow
    m.zero_grad()
    with pytest.warns(RuntimeWarning, match="non-finite grad_norm") as w:
        with gradlab.record(m, route=route) as rec:
            out, _ = m(x)
            out[:, -1].sum().backward()
    assert len([r for r in w if "non-finite" in str(r.message)]) == 1  # once per block
    for a, b in zip(grads(m), g0, strict=True):
        assert torch.equal(a, b) or torch.allclose(a, b, equal_nan=True, rtol=0, atol=0)
    df = rec.frame()
    g = df[(df.quantity == "grad_norm") & (df.batch_index == -1)].set_index("step").value
    assert np.isfinite(g[999]) and g[999] > 0
    bad = ~np.isfinite(g.to_numpy())
    assert bad[0] and bad.sum() < 1000  # blown up at the early steps, finite at the late ones
    finite = g[np.isfinite(g)]
    assert finite.max() > 1e30  # the blow-up itself is visible before it overflows
    nf = rec.nonfinite()
    assert list(nf.columns) == ["module", "call", "layer", "direction", "quantity",
                                "first_step", "nonfinite_steps", "steps"]
    first = nf.iloc[0]
    assert first.module == "RNN" and first.quantity == "grad_norm"
    # the first non-finite step met by the backward pass is the latest non-finite one
    assert first.first_step == int(np.flatnonzero(bad).max())


def test_on_nonfinite_raise_names_the_first_step():
    m = chaotic_rnn()
    x = torch.randn(4, 1000, 8)
    with pytest.raises(FloatingPointError, match=r"first at module 'RNN'.*layer 0, direction 0, "
                                                 r"step \d+"):
        with gradlab.record(m, on_nonfinite="raise"):
            out, _ = m(x)
            out[:, -1].sum().backward()
    assert "forward" not in m.__dict__


def test_grad_scaler_skips_the_same_steps_and_unscaled_values_on_request():
    """A GradScaler step with inf gradients is skipped and the scale halved, as without gradlab;
    grad_scale=scaler records the gradient of the unscaled loss (powers of two: exact)."""
    def run(record, **kw):
        m = chaotic_rnn()  # its gradient overflows at T = 1000
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
        frames, scales = [], []
        for T in (1000, 20):
            x = torch.randn(4, T, 8, generator=torch.Generator().manual_seed(T))
            opt.zero_grad()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                with gradlab.record(m, grad_scale=scaler if kw else None) if record else \
                        _nothing() as rec:
                    out, _ = m(x)
                    scaler.scale(out[:, -1].pow(2).sum()).backward()
            scaler.step(opt)
            scaler.update()
            scales.append(scaler.get_scale())
            frames.append(None if rec is None else rec.frame())
        return [p.detach().clone() for p in m.parameters()], scales, frames

    p0, s0, _ = run(False)
    p1, s1, f1 = run(True)
    p2, s2, f2 = run(True, unscale=True)
    assert s0 == s1 == s2 and s0[0] == 2.0**15  # the overflowing step was skipped
    for a, b, c in zip(p0, p1, p2, strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)
    assert not np.isfinite(f1[0].value).all()
    np.testing.assert_array_equal(f2[1].value.to_numpy(), f1[1].value.to_numpy() / 2.0**15)


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(3, 8, num_layers=2, batch_first=True)
        self.gru = nn.GRU(8, 8, batch_first=True)
        self.head = nn.Linear(8, 1)

    def forward(self, x):
        o, _ = self.rnn(x)
        o, _ = self.gru(o)
        return self.head(o[:, -1])


def eager_rows(model, x):
    with gradlab.record(model) as rec:
        model(x).sum().backward()
    return rec.frame()


@pytest.mark.parametrize("how", ["module", "submodule", "function", "in_place"])
def test_compiled_models_give_eager_rows(how):
    torch.manual_seed(0)
    model = Classifier()
    x = torch.randn(4, 10, 3)
    want = eager_rows(model, x)
    if how == "module":
        target = runner = torch.compile(model, backend="eager")
    elif how == "submodule":
        model.rnn = torch.compile(model.rnn, backend="eager")
        target = runner = model
    elif how == "function":
        target = model
        runner = torch.compile(lambda x: model(x), backend="eager")
    else:
        model.compile(backend="eager")
        target = runner = model
    runner(x).sum().backward()  # compiled before recording
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with gradlab.record(target) as rec:
            runner(x).sum().backward()
    got = rec.frame()
    assert got.drop(columns="value").equals(want.drop(columns="value"))
    np.testing.assert_allclose(got.value, want.value, rtol=1e-5)
    y = runner(x)  # compiled again afterwards, no gradlab left behind
    assert "forward" not in model.rnn.__dict__ or how == "submodule"
    assert y.shape == (4, 1)


def test_a_backward_outside_the_block_is_said_not_silent():
    m = nn.GRU(3, 4, batch_first=True)
    with pytest.warns(RuntimeWarning, match="no gradient reached them inside the block"):
        with gradlab.record(m) as rec:
            out, _ = m(torch.randn(2, 5, 3))
    out.sum().backward()
    assert rec.frame().empty


@pytest.mark.parametrize("cls", [nn.RNN, nn.GRU])
def test_autocast_bfloat16_cpu(cls):
    """Under CPU autocast the layer runs as autocast makes it run; outputs and gradients stay
    those of the unrecorded autocast run, and the recorded norms are those of its backward:
    within bfloat16 rounding (2⁻⁸ per operation, ~0.1 over these 10 steps) of float32."""
    torch.manual_seed(0)
    m = cls(3, 16, batch_first=True)
    x = torch.randn(4, 10, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out0, _ = m(x)
    out0.float().pow(2).sum().backward()
    g0 = grads(m)
    m.zero_grad()
    with gradlab.record(m) as rec:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out1, _ = m(x)
        out1.float().pow(2).sum().backward()
    assert torch.equal(out1, out0)
    for a, b in zip(grads(m), g0, strict=True):
        assert torch.equal(a, b)
    with gradlab.record(m) as ref:
        out, _ = m(x)
        out.pow(2).sum().backward()
    a = rec.frame().query("quantity == 'grad_norm'").value.to_numpy()
    b = ref.frame().query("quantity == 'grad_norm'").value.to_numpy()
    np.testing.assert_allclose(a, b, rtol=0.1)


def test_autocast_lstm_fails_as_without_gradlab():
    """oneDNN's LSTM has no bfloat16 kernel on CPUs without bf16 support: PyTorch itself fails;
    gradlab must fail the same way, not differently."""
    m = nn.LSTM(3, 8, batch_first=True)
    x = torch.randn(2, 5, 3)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            m(x)[0].float().sum().backward()
    except RuntimeError as e:
        plain_error = type(e)
    else:
        plain_error = None
    if plain_error is None:
        with gradlab.record(m) as rec:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                m(x)[0].float().sum().backward()
        assert not rec.frame().empty
    else:
        with pytest.raises(plain_error):
            with gradlab.record(m):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    m(x)[0].float().sum().backward()
