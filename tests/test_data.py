"""gradlab.data: the loaders against aeon's own output, the text split, the baselines table."""

import string

import numpy as np
import pytest
import torch

pytest.importorskip("aeon")

from gradlab import data  # noqa: E402


@pytest.mark.parametrize("name", data.UCR_DATASETS)
@pytest.mark.parametrize("split", ["train", "test"])
def test_load_ucr_matches_aeon(name, split):
    from aeon.datasets import load_classification

    X, labels = load_classification(name, split=split)
    d = data.load_ucr(name, split)
    assert len(d.x) == len(X) == len(d.y) == len(d.lengths)
    for a, ours in zip(X, d.x, strict=True):  # aeon (C, T_i) -> ours (T_i, C) float32, same values
        assert ours.shape == a.shape[::-1] and ours.dtype == np.float32
        np.testing.assert_array_equal(ours, np.asarray(a, dtype=np.float32).T)
    assert d.lengths.tolist() == [a.shape[1] for a in X]
    assert [d.classes[k] for k in d.y] == [str(v) for v in labels]  # labels round-trip
    assert d.y.dtype == np.int64 and set(d.y.tolist()) <= set(range(d.n_classes))
    assert d.x[0].flags.writeable is False  # a cached object cannot be edited by a user


@pytest.mark.parametrize("name", data.UCR_DATASETS)
def test_native_length_is_the_longest_series_in_the_files(name):
    longest = max(int(data.load_ucr(name, s).lengths.max()) for s in ("train", "test"))
    assert data.native_length(name) == longest


def test_japanese_vowels_lengths_and_classes():
    d = data.load_ucr("JapaneseVowels", "train")
    assert not d.equal_length and d.lengths.min() >= 7 and data.native_length(d.name) == 29
    assert d.n_channels == 12 and d.classes == tuple(str(k) for k in range(1, 10))
    with pytest.raises(ValueError, match="JapaneseVowels.*cannot be stacked"):
        d.stack()
    assert data.load_ucr("GunPoint", "test").stack().shape == (150, 150, 1)


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(ValueError, match="unknown UCR/UEA set 'Gunpoint'.*GunPoint, JapaneseV"):
        data.load_ucr("Gunpoint")
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        data.load_ucr("GunPoint", "valid")


def test_missing_aeon_names_the_extra(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_aeon(name, *a, **k):
        if name == "aeon" or name.startswith("aeon."):
            raise ImportError("No module named 'aeon'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_aeon)
    with pytest.raises(ImportError, match=r"pip install gradlab\[data\]"):
        data._aeon()


def test_text_split_and_vocabulary():
    text, vocab = data.load_text(), data.text_vocabulary()
    assert len(text) > 400_000
    assert vocab[-1] == data.OTHER and set(vocab[:-1]) <= set(string.printable)
    assert list(vocab[:-1]) == sorted(set(text) & set(string.printable))
    train, test = data.text_codes("train"), data.text_codes("test")
    assert len(train) == int(0.9 * len(text)) and len(train) + len(test) == len(text)
    # decode: the printable characters come back, the rest is "other"
    decoded = "".join(vocab[c] for c in test[:2000])
    expect = "".join(c if c in vocab[:-1] else data.OTHER for c in text[len(train) :][:2000])
    assert decoded == expect


def test_shorten():
    x = np.arange(10, dtype=np.float32)[:, None]  # (T=10, C=1)
    assert data._shorten(x, 4, "crop")[:, 0].tolist() == [0, 1, 2, 3]
    assert data._shorten(x, 4, "subsample")[:, 0].tolist() == [0, 3, 6, 9]
    assert data._shorten(x, 12, "subsample") is x
    with pytest.raises(ValueError, match="shorten must be one of subsample, crop"):
        data._shorten(x, 4, "pool")


def test_prepared_split_standardises_with_training_statistics():
    xtr, _ = data.prepared_split("BasicMotions", "train", 50)
    a = np.stack(xtr).reshape(-1, 6).astype(np.float64)  # (N * T, C)
    np.testing.assert_allclose(a.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(a.std(0), 1, atol=1e-4)
    with pytest.raises(ValueError, match="seq_len must be an integer in 1..100 for 'BasicMotions'"):
        data.prepared_split("BasicMotions", "train", 101)


def _numpy_1nn(xtr, ytr, xte):
    d = ((xte[:, None] - xtr[None]) ** 2).sum(axis=(2, 3))  # (N_test, N_train)
    return ytr[d.argmin(1)]


def test_baselines_table():
    name, T = "GunPoint", 30
    df = data.ucr_baselines(name, T)
    assert df["baseline"].tolist() == ["majority", "1nn_euclidean", "1nn_dtw"]
    assert (df["dataset"] == name).all() and (df["seq_len"] == T).all()
    acc = df.set_index("baseline")["accuracy"]
    ytr, yte = data.load_ucr(name, "train").y, data.load_ucr(name, "test").y
    assert acc["majority"] == np.mean(yte == np.bincount(ytr).argmax())
    xtr = np.stack(data.prepared_split(name, "train", T)[0]).astype(np.float64)
    xte = np.stack(data.prepared_split(name, "test", T)[0]).astype(np.float64)
    assert acc["1nn_euclidean"] == np.mean(_numpy_1nn(xtr, ytr, xte) == yte)
    assert acc["1nn_dtw"] > acc["majority"]  # DTW 1-NN is a strong baseline on GunPoint
    assert df["window"].isna().all()  # T <= 500: unconstrained DTW


def test_text_tensors_are_not_shared_with_the_cache():
    codes = data.text_codes("test")
    with pytest.raises(ValueError):
        codes[0] = 1  # read-only
    assert torch.from_numpy(codes.copy()).dtype == torch.int64


def test_bundled_sets_load_without_the_network(monkeypatch):
    """aeon reads the copy in its wheel: a loader that opened a socket would fail here."""
    import socket

    def refuse(*a, **k):
        raise OSError("network used")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    raw = data._raw.__wrapped__("ArrowHead")  # bypass the cache: really read
    assert len(raw["train"][0]) == 36 and len(raw["test"][0]) == 175
