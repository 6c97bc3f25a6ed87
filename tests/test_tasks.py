"""Tasks: shapes, determinism, the rules that define each task, and the no-memory baselines."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradlab.tasks import (
    ADDING_BASELINE_MSE,
    DigitsTask,
    available_tasks,
    copy_baseline,
    make_task,
)

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensors gain nothing from intra-op threads, and on a shared machine their
    spin-waits cost more than they save; restore the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- interface, errors


def test_available_tasks():
    assert available_tasks() == ["adding", "chars", "copy", "digits", "generate", "reverse", "ucr"]


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(
        ValueError, match="unknown task 'add'.*adding, chars, copy, digits, generate"
    ):
        make_task("add", 10, seed=0)


@pytest.mark.parametrize(
    "name, seq_len",
    [("adding", 1), ("adding", 0), ("adding", 2.5), ("adding", True), ("copy", 0),
     ("copy", -3), ("digits", 10), ("digits", 63)],
)  # fmt: skip
def test_bad_seq_len(name, seq_len):
    with pytest.raises(ValueError, match=f"'{name}'.*seq_len"):
        make_task(name, seq_len, seed=0)


def test_bad_arguments():
    task = make_task("adding", 5, seed=0)
    with pytest.raises(ValueError, match="batch_size"):
        task.sample(0)
    with pytest.raises(ValueError, match="split"):
        task.sample(2, split="valid")
    with pytest.raises(ValueError, match="'adding'"):
        make_task("adding", 5, seed=0, test_fraction=0.5)
    with pytest.raises(ValueError, match="seed"):
        make_task("adding", 5, seed=1.5)
    with pytest.raises(ValueError, match="test_fraction"):
        make_task("digits", 8, seed=0, test_fraction=1.0)


@pytest.mark.parametrize(
    "name, seq_len, x_shape, y_shape, y_dtype, out, readout",
    [
        ("adding", 30, (7, 30, 2), (7, 1), torch.float32, 1, "last"),
        ("copy", 30, (7, 50, 10), (7, 50), torch.int64, 9, "all"),
        ("digits", 64, (7, 64, 1), (7,), torch.int64, 10, "last"),
        ("digits", 8, (7, 8, 8), (7,), torch.int64, 10, "last"),
    ],
)
def test_shapes_and_interface(name, seq_len, x_shape, y_shape, y_dtype, out, readout):
    task = make_task(name, seq_len, seed=0)
    x, y = task.sample(7, gen(0))
    assert x.shape == x_shape and x.dtype == torch.float32
    assert y.shape == y_shape and y.dtype == y_dtype
    assert (task.length, task.input_size, task.output_size) == (x_shape[1], x_shape[2], out)
    assert task.readout == readout
    assert task.metric in ("mse", "cross_entropy") and isinstance(task.baseline, float)
    pred = torch.zeros(x_shape[:2] + (out,)) if readout == "all" else torch.zeros(7, out)
    assert task.loss(pred, y).shape == ()


@pytest.mark.parametrize("name, seq_len", [("adding", 20), ("copy", 5), ("digits", 64)])
def test_same_seed_same_batches(name, seq_len):
    a, b, c = (make_task(name, seq_len, seed=s) for s in (3, 3, 4))
    for _ in range(3):  # the task's own generator
        (xa, ya), (xb, yb), (xc, _) = a.sample(16), b.sample(16), c.sample(16)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert not torch.equal(xa, xc)
    # an explicit generator decides alone
    xa, ya = a.sample(16, gen(9))
    xc, yc = c.sample(16, gen(9))
    if name != "digits":  # digits: the split depends on the task's seed
        assert torch.equal(xa, xc) and torch.equal(ya, yc)


# ----------------------------------------------------------------------------- adding


@settings(max_examples=30, deadline=None)
@given(T=st.integers(2, 60), seed=st.integers(0, 2**31 - 1))
def test_adding_marker_rule_and_target(T, seed):
    task = make_task("adding", T, seed=seed)
    x, y = task.sample(64)
    u, m = x[..., 0], x[..., 1]  # (B, T)
    assert ((u >= 0) & (u < 1)).all()
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    half = T // 2
    assert (m[:, :half].sum(1) == 1).all() and (m[:, half:].sum(1) == 1).all()
    torch.testing.assert_close(y[:, 0], (u * m).sum(1), rtol=0, atol=1e-6)


def test_adding_markers_cover_each_half():
    T = 11
    x, _ = make_task("adding", T, seed=0).sample(2000)
    hits = x[..., 1].sum(0)  # (T,) how often each position is marked
    assert (hits > 0).all()
    # each half: one marker per sequence, uniform over its positions
    assert hits[: T // 2].sum() == 2000 and hits[T // 2 :].sum() == 2000


def test_constant_one_predictor_has_mse_one_sixth():
    """Predicting 1: E[(u1 + u2 - 1)^2] = 1/6. (u1 + u2 - 1) is triangular on [-1, 1], so
    E[(.)^4] = 1/15 and Var[(.)^2] = 1/15 - 1/36 = 7/180; the mean of N squares has standard
    error sqrt(7/(180 N)); we allow 5 of them."""
    N = 200_000
    task = make_task("adding", 20, seed=0)
    _, y = task.sample(N)
    mse = task.loss(torch.ones(N, 1), y).item()
    assert ADDING_BASELINE_MSE == pytest.approx(1 / 6)
    assert abs(mse - 1 / 6) <= 5 * math.sqrt(7 / (180 * N))


# ----------------------------------------------------------------------------- copy


@pytest.mark.parametrize("T", [1, 2, 25])
def test_copy_sequence_layout(T):
    task = make_task("copy", T, seed=1)
    x, y = task.sample(50)
    L = T + 20
    assert torch.equal(x.sum(-1), torch.ones(50, L))  # one-hot
    s = x.argmax(-1)  # (B, L) input symbols
    assert ((s[:, :10] >= 1) & (s[:, :10] <= 8)).all()
    assert (s[:, 10 : T + 9] == 0).all()  # T - 1 blanks
    assert (s[:, T + 9] == 9).all()  # delimiter
    assert (s[:, T + 10 :] == 0).all()  # 10 blanks while recalling
    assert (y[:, : T + 10] == 0).all()
    assert torch.equal(y[:, -10:], s[:, :10])


@pytest.mark.parametrize("T", [1, 10, 100])
def test_copy_no_memory_predictor_reaches_the_baseline(T):
    """The best predictor without memory knows the layout but not the symbols: it predicts the
    T + 10 blanks with probability 1 and, the symbols being iid uniform on 8 values, the uniform
    distribution on {1..8} for the last 10 steps (cross-entropy ln 8 each, the minimum for an
    unknown uniform symbol). Mean over T + 20 steps: 10 ln 8 / (T + 20)."""
    task = make_task("copy", T, seed=0)
    _, y = task.sample(64)
    L = T + 20
    logits = torch.full((64, L, 9), -math.inf, dtype=torch.float64)
    logits[:, : T + 10, 0] = 0.0  # blank for sure
    logits[:, T + 10 :, 1:] = 0.0  # uniform over the 8 symbols
    ce = task.loss(logits, y).item()
    assert ce == pytest.approx(10 * math.log(8) / L, rel=1e-12)
    assert task.baseline == copy_baseline(T) == pytest.approx(10 * math.log(8) / L, rel=1e-15)
    assert task.accuracy(logits, y).item() <= 1.0
    # a predictor that knows the answer: loss 0, accuracy 1
    perfect = torch.nn.functional.one_hot(y, 9).double() * 100.0
    assert task.loss(perfect, y).item() < 1e-40
    assert task.accuracy(perfect, y).item() == 1.0


@pytest.mark.parametrize("n", [1, 3])
def test_copy_with_fewer_symbols(n):
    """length=n: n symbols, delimiter at step n + T - 1, sequence T + 2n, baseline n ln 8/(T+2n)."""
    T = 7
    task = make_task("copy", T, seed=0, length=n)
    x, y = task.sample(16)
    L = T + 2 * n
    assert task.length == L and x.shape == (16, L, 10) and y.shape == (16, L)
    symbols = x[:, :n].argmax(-1)
    assert symbols.min() >= 1 and symbols.max() <= 8
    assert (x[:, n + T - 1].argmax(-1) == 9).all()
    assert (x[:, n : n + T - 1, 0] == 1).all() and (x[:, n + T :, 0] == 1).all()
    assert torch.equal(y[:, -n:], symbols) and (y[:, :-n] == 0).all()
    assert task.baseline == copy_baseline(T, n) == pytest.approx(n * math.log(8) / L)
    with pytest.raises(ValueError, match="length >= 1"):
        make_task("copy", T, seed=0, length=0)


# ----------------------------------------------------------------------------- digits


def test_digits_normalization_and_split():
    task = make_task("digits", 64, seed=0)
    assert isinstance(task, DigitsTask)
    x_all = task._x
    assert x_all.min() == 0.0 and x_all.max() == 1.0  # pixels 0..16 divided by 16
    n_train, n_test = task.split_size("train"), task.split_size("test")
    assert n_train + n_test == 1797 and n_test == round(0.25 * 1797)
    tr, te = set(task._split["train"].tolist()), set(task._split["test"].tolist())
    assert not tr & te
    again, other = make_task("digits", 8, seed=0), make_task("digits", 64, seed=1)
    assert torch.equal(again._split["test"], task._split["test"])  # split depends on seed only
    assert not torch.equal(other._split["test"], task._split["test"])
    xt, yt = task.full_split("test")
    assert xt.shape == (n_test, 64, 1) and set(yt.unique().tolist()) == set(range(10))


def test_digits_row_and_pixel_read_the_same_images():
    pix, row = make_task("digits", 64, seed=2), make_task("digits", 8, seed=2)
    for split in ("train", "test"):
        (xp, yp), (xr, yr) = (
            pix.sample(32, gen(5), split=split),
            row.sample(32, gen(5), split=split),
        )
        assert torch.equal(yp, yr)
        assert torch.equal(xp.reshape(32, 64), xr.reshape(32, 64))  # row-major pixels
    # test batches come from the test split only
    _, y_test = pix.full_split("test")
    x, _ = pix.sample(100, gen(1), split="test")
    flat_test = pix.full_split("test")[0].reshape(len(y_test), 64)
    assert all((flat_test == xi.reshape(1, 64)).all(1).any() for xi in x)


def test_digits_chance_baseline():
    task = make_task("digits", 8, seed=0)
    _, y = task.sample(500)
    uniform = torch.zeros(500, 10)
    assert task.loss(uniform, y).item() == pytest.approx(math.log(10), rel=1e-6)
    assert task.baseline == pytest.approx(math.log(10))
    assert task.chance_accuracy == 0.1


# ----------------------------------------------------------------------------- devices


@CUDA
@pytest.mark.cuda
@pytest.mark.parametrize("name, seq_len", [("adding", 20), ("copy", 5), ("digits", 64)])
def test_cuda_batches_equal_cpu_batches(name, seq_len):
    cpu, gpu = make_task(name, seq_len, seed=0), make_task(name, seq_len, seed=0, device="cuda")
    (xc, yc), (xg, yg) = cpu.sample(16, gen(1)), gpu.sample(16, gen(1))
    assert xg.device.type == yg.device.type == "cuda"
    assert torch.equal(xc, xg.cpu()) and torch.equal(yc, yg.cpu())
    with pytest.raises(ValueError, match="CPU torch.Generator"):
        gpu.sample(4, torch.Generator(device="cuda"))
