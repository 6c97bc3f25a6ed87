"""The four RNN structures on real data (ucr, chars, reverse, generate) through gradlab.train.

Quick scale: a tiny network, a few hundred updates at most. Each task must beat its no-memory
baseline on its own training batches by a margin far above the batch noise (given per test).
"""

import numpy as np
import pytest
import torch

pytest.importorskip("aeon")

from gradlab.tasks import make_task  # noqa: E402
from gradlab.train import EncoderDecoder, SequenceModel, train  # noqa: E402

RECURRENT = ("rnn_tanh", "rnn_relu", "lstm", "gru")
CASES = {  # name: (seq_len, task_params)
    "ucr": (20, {"dataset": "GunPoint"}),
    "ucr_packed": (12, {"dataset": "JapaneseVowels"}),
    "chars": (8, {}),
    "reverse": (3, {}),
    "generate": (20, {"dataset": "ArrowHead"}),
}


def rows(df, q):
    return df[df["quantity"] == q]


def final_train_loss(df, last=20):
    return rows(df, "loss")["value"].iloc[-last:].mean()


def run(cell, case, **kw):
    seq_len, params = CASES[case]
    name = "ucr" if case.startswith("ucr") else case
    args = dict(hidden_size=8, steps=2, batch_size=8, lr=1e-2, seed=0)
    args.update(kw)
    return train(cell, name, seq_len=seq_len, task_params=params, **args)


def test_structures_are_declared():
    got = {n: make_task(n, CASES[n][0], seed=0, **CASES[n][1]).structure
           for n in ("ucr", "chars", "reverse", "generate")}  # fmt: skip
    assert got == {"ucr": "many_to_one", "chars": "many_to_many",
                   "reverse": "encoder_decoder", "generate": "one_to_many"}  # fmt: skip
    assert make_task("adding", 10, seed=0).structure == "many_to_one"
    assert make_task("copy", 10, seed=0).structure == "many_to_many"


def test_shapes():
    x, y = make_task("ucr", 20, seed=0, dataset="BasicMotions").sample(5)
    assert x.shape == (5, 20, 6) and y.shape == (5,) and y.dtype == torch.int64
    t = make_task("chars", 8, seed=0)
    x, y = t.sample(5)
    assert x.shape == (5, 8, t.V) and y.shape == (5, 8)
    assert torch.equal(x[:, 1:].argmax(-1), y[:, :-1])  # y is x shifted by one
    t = make_task("reverse", 6, seed=0)
    (src, tgt_in), y = t.sample(5)
    assert src.shape == (5, 6, t.V) and tgt_in.shape == (5, 6, t.V + 1) and y.shape == (5, 6)
    assert torch.equal(y, src.argmax(-1).flip(1))  # the reversed span
    assert (tgt_in[:, 0].argmax(-1) == t.V).all()  # start symbol, then y shifted by one
    assert torch.equal(tgt_in[:, 1:].argmax(-1), y[:, :-1])
    t = make_task("generate", 20, seed=0, dataset="BasicMotions")
    x, y = t.sample(5)
    assert x.shape == (5, 20, 4) and y.shape == (5, 20, 6)
    assert (x[:, 0].sum(-1) == 1).all() and (x[:, 1:] == 0).all()


def test_packed_batch_round_trips():
    """JapaneseVowels: a PackedSequence of each sample's own (shortened) steps."""
    from gradlab import data

    t = make_task("ucr", 29, seed=0, dataset="JapaneseVowels")
    assert t.packed and t.input_size == 12 and t.output_size == 9
    x, y = t.full_split("train")
    padded, lengths = torch.nn.utils.rnn.pad_packed_sequence(x, batch_first=True)
    d = data.load_ucr("JapaneseVowels", "train")
    assert lengths.tolist() == d.lengths.tolist() and y.tolist() == d.y.tolist()
    xs, _ = data.prepared_split("JapaneseVowels", "train", 29)
    for i in (0, 7, 269):
        np.testing.assert_array_equal(padded[i, : lengths[i]].numpy(), xs[i])
    # shorter seq_len: lengths capped at seq_len
    x, _ = make_task("ucr", 10, seed=0, dataset="JapaneseVowels").full_split("test")
    _, lengths = torch.nn.utils.rnn.pad_packed_sequence(x, batch_first=True)
    assert (
        lengths.tolist() == np.minimum(data.load_ucr("JapaneseVowels", "test").lengths, 10).tolist()
    )


def test_packed_readout_is_each_samples_last_step():
    """SequenceModel on a PackedSequence = the dense model run on each sample alone."""
    torch.manual_seed(0)
    m = SequenceModel("lstm", 3, 5, 2, num_layers=2).double()
    seqs = [torch.randn(n, 3, dtype=torch.float64) for n in (4, 7, 2)]
    packed = torch.nn.utils.rnn.pack_sequence(seqs, enforce_sorted=False)
    got = m(packed)  # (3, 2)
    want = torch.cat([m(s[None]) for s in seqs])
    torch.testing.assert_close(got, want)


def test_packed_readout_all_is_per_true_step():
    torch.manual_seed(0)
    m = SequenceModel("gru", 3, 5, 2, readout="all").double()
    seqs = [torch.randn(n, 3, dtype=torch.float64) for n in (4, 7, 2)]
    got = m(torch.nn.utils.rnn.pack_sequence(seqs, enforce_sorted=False))
    padded, lengths = torch.nn.utils.rnn.pad_packed_sequence(got, batch_first=True)
    for i, s in enumerate(seqs):
        torch.testing.assert_close(padded[i, : lengths[i]], m(s[None])[0])


def test_baselines_are_the_stated_quantities():
    t = make_task("ucr", 150, seed=0, dataset="GunPoint")
    p = np.bincount(t._data["train"][1].numpy()) / t.split_size("train")
    assert t.baseline == pytest.approx(-(p * np.log(p)).sum())
    c = make_task("chars", 8, seed=0)
    r = make_task("reverse", 5, seed=0)
    assert c.baseline == pytest.approx(r.unigram_entropy)
    # H(c_i | c_{i+1}) <= H(c) and the mixture of the two per step
    assert r.conditional_entropy_2 < r.conditional_entropy < r.unigram_entropy
    assert r.baseline == pytest.approx((r.unigram_entropy + 4 * r.conditional_entropy) / 5)
    g = make_task("generate", 50, seed=0, dataset="ArrowHead")
    assert g.floor < g.baseline


@pytest.mark.parametrize("cell", RECURRENT)
@pytest.mark.parametrize("case", list(CASES))
def test_every_recurrent_cell_runs_every_structure(cell, case):
    df = run(cell, case, steps=2, track_every=1)
    assert np.isfinite(rows(df, "loss")["value"]).all()
    assert len(rows(df, "grad_norm")) > 0


@pytest.mark.parametrize("case", ["ucr", "chars", "generate"])
def test_transformer_runs_dense_structures(case):
    df = run("transformer", case, steps=2)
    assert np.isfinite(rows(df, "eval_loss")["value"]).all()


@pytest.mark.parametrize(("case", "what"), [("reverse", "encoder-decoder"),
                                             ("ucr_packed", "packed")])  # fmt: skip
def test_transformer_refuses_encoder_decoder_and_packed(case, what):
    with pytest.raises(ValueError, match=f"cell='transformer' cannot run task .*{what}.*use a "
                                         "recurrent cell"):  # fmt: skip
        run("transformer", case)


def test_errors_name_object_problem_fix():
    with pytest.raises(ValueError, match="task 'ucr': unknown dataset 'Gunpoint'; available: .*"
                                         "GunPoint"):  # fmt: skip
        make_task("ucr", 10, seed=0, dataset="Gunpoint")
    with pytest.raises(ValueError, match=r"task 'ucr': seq_len must be an integer in 1..150 for "
                                         r"'GunPoint'.*150 gives the full series"):  # fmt: skip
        make_task("ucr", 151, seed=0)
    with pytest.raises(ValueError, match="task 'generate': 'JapaneseVowels' has series of varying"):
        make_task("generate", 20, seed=0, dataset="JapaneseVowels")
    with pytest.raises(ValueError, match="task 'chars': seq_len .* pass seq_len <="):
        make_task("chars", 10**7, seed=0)
    with pytest.raises(ValueError, match="task 'generate': shorten must be one of"):
        make_task("generate", 20, seed=0, shorten="mean")
    with pytest.raises(ValueError, match="track_gates .* task 'reverse' .* track_gates=False"):
        run("lstm", "reverse", track_every=1, track_gates=True)


@pytest.mark.parametrize("case", ["reverse", "ucr_packed"])
def test_same_seed_same_table(case):
    a = run("gru", case, steps=3, track_every=2)
    torch.manual_seed(123)  # the global RNG plays no part
    torch.rand(3)
    b = run("gru", case, steps=3, track_every=2)
    assert a.equals(b)


def test_encoder_decoder_steps_on_one_time_axis():
    """Encoder steps 0..n-1, decoder steps n..2n-1; the model is an EncoderDecoder."""
    n = CASES["reverse"][0]
    df, model = run("lstm", "reverse", steps=1, track_every=1, return_model=True)
    assert isinstance(model, EncoderDecoder)
    g = rows(df, "grad_norm")
    assert sorted(g["step"].unique()) == list(range(2 * n))
    assert len(rows(df, "grad_norm_c")) == 2 * n  # LSTM cell state, both modules


def test_packed_tracking_rows_per_true_step():
    df = run("gru", "ucr_packed", steps=1, track_every=1, batch_size=16)
    steps = rows(df, "grad_norm")["step"]
    assert steps.min() == 0 and steps.max() <= CASES["ucr_packed"][0] - 1
    assert steps.is_unique  # one row per true step, layer 0, forward


def test_ucr_evaluates_on_the_whole_test_split():
    """UCR test splits are fixed (150 for GunPoint): eval_loss is the loss on all of it."""
    df, model = run("gru", "ucr", steps=1, return_model=True)
    t = make_task("ucr", 20, seed=0, dataset="GunPoint")
    x, y = t.full_split("test")
    with torch.no_grad():
        want = float(t.loss(model(x), y))
    assert rows(df, "eval_loss")["value"].iloc[-1] == pytest.approx(want, rel=1e-6)


# ---- learning at quick scale: below the no-memory baseline on the task's own training data


def test_ucr_learns():
    """GunPoint (T = 20): the training prior (24 : 26) costs 0.69 nats on every sample, so batch
    noise of the prior's loss is below 0.01 nats: a mean training loss < 0.8 x baseline over the
    last 20 batches needs the series read; test accuracy above the majority share."""
    df = run("gru", "ucr", hidden_size=16, steps=150, batch_size=32, lr=2e-2)
    base = rows(df, "baseline")["value"].iloc[-1]
    assert final_train_loss(df) < 0.8 * base
    assert rows(df, "accuracy")["value"].iloc[-1] > make_task("ucr", 20, seed=0).chance_accuracy


def test_chars_learns():
    """Unigram entropy 3.25 nats; a batch of 32 x 8 characters has loss noise about
    sd(-ln p(c)) / sqrt(256) ~ 0.1 nats under the unigram model, 0.02 over 20 batches: ask
    for 0.5 nats below it."""
    df = run("gru", "chars", hidden_size=32, steps=150, batch_size=32, lr=2e-2)
    base = rows(df, "baseline")["value"].iloc[-1]
    assert final_train_loss(df) < base - 0.5


def test_reverse_learns_from_src():
    """n = 3: without src the decoder sees at most the 2 reversed characters before, so its best
    loss is at least the mixture of H(c), H(c_i|c_{i+1}), H(c_i|c_{i+1},c_{i+2}) (each a
    plug-in estimate, optimistic); ask for below the smallest of them, H(c_i|c_{i+1},c_{i+2})
    ~ 1.7 nats: only the encoder's state can carry that."""
    df = run("gru", "reverse", hidden_size=32, steps=200, batch_size=32, lr=2e-2)
    t = make_task("reverse", 3, seed=0)
    assert final_train_loss(df) < t.conditional_entropy_2


def test_generate_learns_the_class():
    """ArrowHead (T = 20), training split: the per-step mean series (no class) has MSE m0, the
    per-class mean series (the best from the class alone) m1 < m0; ask for a mean training loss
    over the last 20 batches below (m0 + m1) / 2, i.e. more than half the class's worth."""
    df = run("gru", "generate", hidden_size=32, steps=200, batch_size=32, lr=2e-2)
    t = make_task("generate", 20, seed=0, dataset="ArrowHead")
    y, c = t._data["train"]
    y = y.double()  # (N, T, C)
    m0 = float(((y - y.mean(0)) ** 2).mean())
    means = torch.stack([y[c == k].mean(0) for k in range(t.input_size)])  # (K, T, C)
    m1 = float(((y - means[c]) ** 2).mean())
    assert m1 < 0.75 * m0
    assert final_train_loss(df) < (m0 + m1) / 2


def test_ucr_packed_learns():
    """JapaneseVowels (packed, up to 12 steps): 30 training series per class, so the prior costs
    ln 9 = 2.20 nats on every sample (no batch noise); ask for below half of it."""
    df = run("rnn_tanh", "ucr_packed", hidden_size=16, steps=60, batch_size=16, lr=2e-2)
    assert rows(df, "baseline")["value"].iloc[-1] == pytest.approx(np.log(9))
    assert final_train_loss(df) < 0.5 * np.log(9)
