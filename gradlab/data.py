"""Real sequence data that ships with installed packages: nothing is downloaded at run time.

UCR/UEA time-series classification sets (Dau et al. 2019, "The UCR time series archive";
Bagnall et al. 2018, "The UEA multivariate time series classification archive") that are
bundled inside aeon's wheel (``aeon/datasets/data``), read with aeon's own loader
(``aeon.datasets.load_classification``, which reads the bundled copy and never goes to the
network for these names):

    name            channels C  length T        classes K  train  test
    GunPoint        1           150             2          50     150
    ArrowHead       1           251             3          36     175
    OSULeaf         1           427             6          200    242
    ACSF1           1           1460            10         100    100
    BasicMotions    6           100             4          40     40
    JapaneseVowels  12          7..29 (varies)  9          270    370

:func:`load_ucr` returns a :class:`UCRSplit`. Representation (one for every set): ``x`` is a
tuple of N float32 arrays of shape (T_i, C), time first as in gradlab's batches (aeon gives
(C, T_i)); ``lengths`` (N,) int64 holds T_i; ``y`` (N,) int64 class indices 0..K-1 with
``classes[k]`` aeon's string label of class k (labels sorted numerically when they are all
integers, else as strings; train and test share one mapping). ``UCRSplit.stack()`` gives the
(N, T, C) array of an equal-length set.

English text shipped with Python: the help topics of ``pydoc_data.topics.topics`` (the values
joined in sorted-key order, about 465k characters), :func:`load_text`. Its character
vocabulary (:func:`text_vocabulary`) is the printable ASCII characters (``string.printable``)
that occur in the text, sorted, then one "other" symbol (:data:`OTHER`, index V - 1) for every
other character. :func:`text_codes` gives the fixed split: the first 90 % of the characters
are "train", the last 10 % "test".

Baselines for the UCR sets, :func:`ucr_baselines`: majority class and aeon's 1-nearest
neighbour (``KNeighborsTimeSeriesClassifier``) with Euclidean distance and with dynamic time
warping (Sakoe & Chiba 1978), on the same split and shortening as :class:`gradlab.tasks.UCRTask`.

aeon is an optional dependency (``pip install gradlab[data]``); it is imported only when a UCR
function runs.
"""

from __future__ import annotations

import functools
import os
import string
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "OTHER",
    "UCR_DATASETS",
    "UCRSplit",
    "load_text",
    "load_ucr",
    "text_codes",
    "text_vocabulary",
    "ucr_baselines",
]

UCR_DATASETS = ("ACSF1", "ArrowHead", "BasicMotions", "GunPoint", "JapaneseVowels", "OSULeaf")
"""The UCR/UEA sets bundled in aeon's wheel that :func:`load_ucr` reads."""

OTHER = "\x00"
"""The vocabulary's last symbol: stands for every character outside the printable ASCII ones."""

TRAIN_FRACTION = 0.9  # text: first 90 % train, last 10 % test
SHORTEN = ("subsample", "crop")
DTW_FULL_MAX_LEN = 500
"""``ucr_baselines(dtw_window="auto")`` runs unconstrained DTW up to this length, a band above."""
DTW_AUTO_WINDOW = 0.1
"""The Sakoe-Chiba band (fraction of T) of ``dtw_window="auto"`` above ``DTW_FULL_MAX_LEN``."""


def _aeon():
    try:
        import aeon  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "gradlab.data needs aeon for the UCR/UEA sets; install it with "
            "`pip install gradlab[data]`"
        ) from e
    import aeon

    return aeon


@dataclass(frozen=True, eq=False)
class UCRSplit:
    """One split of a UCR/UEA set (module docstring for the representation).

    Attributes:
        name, split: the set and "train" or "test".
        x: N read-only float32 arrays (T_i, C).
        y: (N,) int64 class indices 0..K-1.
        lengths: (N,) int64, T_i.
        classes: aeon's label of each class index.
    """

    name: str
    split: str
    x: tuple[np.ndarray, ...]
    y: np.ndarray
    lengths: np.ndarray
    classes: tuple[str, ...]

    @property
    def n_channels(self) -> int:
        """C, the number of channels of every series."""
        return int(self.x[0].shape[1])

    @property
    def n_classes(self) -> int:
        """K, the number of classes (``len(classes)``)."""
        return len(self.classes)

    @property
    def equal_length(self) -> bool:
        """True when every series has the same length T (then ``stack`` works)."""
        return bool((self.lengths == self.lengths[0]).all())

    def stack(self) -> np.ndarray:
        """(N, T, C) float32 array of an equal-length set; ValueError for a varying one."""
        if not self.equal_length:
            raise ValueError(
                f"UCRSplit {self.name!r}: lengths vary ({self.lengths.min()}..{self.lengths.max()}"
                "), so the series cannot be stacked; use .x (one (T_i, C) array each)"
            )
        return np.stack(self.x)


def _check_ucr(name: str, split: str | None = "train") -> None:
    if name not in UCR_DATASETS:
        raise ValueError(
            f"unknown UCR/UEA set {name!r}; the ones shipped with aeon that gradlab loads: "
            f"{', '.join(UCR_DATASETS)}"
        )
    if split is not None and split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


@functools.lru_cache(maxsize=32)
def _raw(name: str) -> dict[str, tuple[list[np.ndarray], np.ndarray]]:
    """aeon's (X, y) of both splits, from the copy bundled in aeon's wheel."""
    aeon = _aeon()
    bundled = os.path.join(os.path.dirname(aeon.__file__), "datasets", "data", name)
    if not os.path.isdir(bundled):  # never let aeon fall back to a download
        raise FileNotFoundError(
            f"UCR/UEA set {name!r} is not bundled with this aeon ({aeon.__version__}) at "
            f"{bundled}; install an aeon release that ships it (`pip install gradlab[data]`)"
        )
    from aeon.datasets import load_classification

    out = {}
    for split in ("train", "test"):
        X, y = load_classification(name, split=split)
        out[split] = (list(X), np.asarray(y))
    return out


def _class_order(labels: np.ndarray) -> tuple[str, ...]:
    u = sorted({str(v) for v in labels})
    try:
        return tuple(sorted(u, key=int))
    except ValueError:
        return tuple(u)


@functools.lru_cache(maxsize=32)
def load_ucr(name: str, split: str = "train") -> UCRSplit:
    """Split ``split`` ("train" or "test") of the UCR/UEA set ``name`` (cached).

    Raises ValueError for a name outside :data:`UCR_DATASETS` and ImportError (naming
    ``pip install gradlab[data]``) without aeon.
    """
    _check_ucr(name, split)
    raw = _raw(name)
    classes = _class_order(np.concatenate([raw["train"][1], raw["test"][1]]))
    index = {c: k for k, c in enumerate(classes)}
    X, labels = raw[split]
    x = []
    for a in X:
        s = np.ascontiguousarray(np.asarray(a, dtype=np.float32).T)  # (C, T_i) -> (T_i, C)
        s.flags.writeable = False
        x.append(s)
    y = np.array([index[str(v)] for v in labels], dtype=np.int64)
    lengths = np.array([len(s) for s in x], dtype=np.int64)
    y.flags.writeable = False
    lengths.flags.writeable = False
    return UCRSplit(name, split, tuple(x), y, lengths, classes)


_NATIVE_LENGTHS = {"ACSF1": 1460, "ArrowHead": 251, "BasicMotions": 100, "GunPoint": 150,
                   "JapaneseVowels": 29, "OSULeaf": 427}  # fmt: skip
# the module table's T, checked against the files by tests/test_data.py: an experiment's grid
# checks its lengths without importing aeon


def native_length(name: str) -> int:
    """The longest series of set ``name`` over both splits (the full length)."""
    if name in _NATIVE_LENGTHS:
        return _NATIVE_LENGTHS[name]
    return int(max(load_ucr(name, s).lengths.max() for s in ("train", "test")))


def _shorten(x: np.ndarray, seq_len: int, how: str = "subsample") -> np.ndarray:
    """Bring one series x (T_i, C) to at most ``seq_len`` steps.

    "subsample": the ``seq_len`` points at rows round(linspace(0, T_i - 1, seq_len)) (evenly
    spaced, first and last kept); "crop": the first ``seq_len`` points. A series no longer than
    ``seq_len`` is returned unchanged.
    """
    if how not in SHORTEN:
        raise ValueError(f"shorten must be one of {', '.join(SHORTEN)}, got {how!r}")
    T = len(x)
    if T <= seq_len:
        return x
    if how == "crop":
        return x[:seq_len]
    idx = np.round(np.linspace(0, T - 1, seq_len)).astype(np.int64)
    return x[idx]


def _check_seq_len(name: str, seq_len: object, owner: str) -> int:
    """``seq_len`` as an int in 1..native length, or a ValueError naming ``owner`` and the fix."""
    T = native_length(name)
    ok = not isinstance(seq_len, bool) and isinstance(seq_len, int | np.integer)
    if not ok or not 1 <= seq_len <= T:
        raise ValueError(
            f"{owner}: seq_len must be an integer in 1..{T} for {name!r} (its series have at most "
            f"{T} steps; {T} gives the full series), got {seq_len!r}"
        )
    return int(seq_len)


# ---------------------------------------------------------------------------------------- text


@functools.lru_cache(maxsize=1)
def load_text() -> str:
    """Python's help topics (``pydoc_data.topics.topics``) joined in sorted-key order."""
    from pydoc_data.topics import topics

    return "".join(topics[k] for k in sorted(topics))


@functools.lru_cache(maxsize=1)
def text_vocabulary() -> str:
    """The printable ASCII characters occurring in :func:`load_text`, sorted, then :data:`OTHER`.

    Character ``vocab[i]`` has code i; every character not in it gets code V - 1.
    """
    present = set(load_text()) & set(string.printable)
    return "".join(sorted(present)) + OTHER


@functools.lru_cache(maxsize=2)
def text_codes(split: str = "train") -> np.ndarray:
    """Codes (int64, read-only) of the text's first 90 % ("train") or last 10 % ("test")."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    text, vocab = load_text(), text_vocabulary()
    lut = np.full(0x110000 if max(map(ord, text)) >= 0x10000 else 0x10000, len(vocab) - 1,
                  dtype=np.int64)  # fmt: skip
    for i, c in enumerate(vocab[:-1]):
        lut[ord(c)] = i
    cut = int(TRAIN_FRACTION * len(text))
    part = text[:cut] if split == "train" else text[cut:]
    codes = lut[np.frombuffer(part.encode("utf-32-le"), dtype=np.uint32)]
    codes.flags.writeable = False
    return codes


# ----------------------------------------------------------------------------------- baselines


def prepared_split(
    name: str, split: str, seq_len: int | None = None, how: str = "subsample"
) -> tuple[list[np.ndarray], np.ndarray]:
    """The series of a split shortened to ``seq_len`` (None: native) and standardised.

    Each channel c is standardised with the mean and standard deviation of the *training*
    split's shortened series over all samples and steps: x' = (x - mu_c) / sd_c (the same for
    both splits, so the test split leaks nothing into the scaling). Returns (list of (T_i, C)
    float32, y).
    """
    _check_ucr(name, split)
    seq_len = native_length(name) if seq_len is None else _check_seq_len(name, seq_len, name)
    train = [_shorten(s, seq_len, how) for s in load_ucr(name, "train").x]
    allrows = np.concatenate(train).astype(np.float64)  # (sum T_i, C)
    mu, sd = allrows.mean(0), allrows.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    d = load_ucr(name, split)
    xs = train if split == "train" else [_shorten(s, seq_len, how) for s in d.x]
    return [((s - mu) / sd).astype(np.float32) for s in xs], np.asarray(d.y)


def ucr_baselines(
    name: str,
    seq_len: int | None = None,
    shorten: str = "subsample",
    *,
    dtw_window: float | None | str = "auto",
) -> pd.DataFrame:
    """Test accuracy of the majority class and of 1-NN (Euclidean, DTW) on set ``name``.

    Same train/test split, shortening and standardisation as :class:`gradlab.tasks.UCRTask`
    (:func:`prepared_split`). 1-NN is aeon's ``KNeighborsTimeSeriesClassifier(n_neighbors=1,
    distance=...)``. DTW costs O(T^2) per pair; ``dtw_window`` is the Sakoe-Chiba band as a
    fraction of T (aeon's ``distance_params={"window": w}``), None: unconstrained, "auto":
    :data:`DTW_AUTO_WINDOW` (0.1) when T > :data:`DTW_FULL_MAX_LEN` (500), else unconstrained.
    Measured on ACSF1 at its full 1460 steps (100 x 100 pairs, a shared 2-core machine):
    unconstrained DTW 1-NN took 313 s (accuracy 0.64), the 0.1 band 44 s (0.63), Euclidean 9 s
    (0.54, mostly numba compilation), hence "auto". Variable-length sets (JapaneseVowels): Euclidean 1-NN compares the series
    zero-padded at the end to the longest length (aeon's Euclidean distance needs equal
    lengths), DTW compares them at their own lengths.

    Returns:
        DataFrame with one row per baseline: dataset, seq_len, shorten, baseline
        ("majority", "1nn_euclidean", "1nn_dtw"), window (DTW band fraction, NaN: none or not
        DTW), accuracy, seconds (fit + predict wall time; 0 for majority).

    Examples:
        >>> from gradlab.data import ucr_baselines
        >>> b = ucr_baselines("GunPoint", 30)  # GunPoint brought to 30 steps
        >>> b["baseline"].tolist()
        ['majority', '1nn_euclidean', '1nn_dtw']
    """
    _check_ucr(name)
    _aeon()
    from aeon.classification.distance_based import KNeighborsTimeSeriesClassifier

    T = native_length(name) if seq_len is None else _check_seq_len(name, seq_len, "ucr_baselines")
    xtr, ytr = prepared_split(name, "train", T, shorten)
    xte, yte = prepared_split(name, "test", T, shorten)
    if dtw_window == "auto":
        dtw_window = DTW_AUTO_WINDOW if T > DTW_FULL_MAX_LEN else None
    counts = np.bincount(ytr, minlength=load_ucr(name).n_classes)
    rows = [("majority", np.nan, float((yte == counts.argmax()).mean()), 0.0)]
    for dist, window in (("euclidean", None), ("dtw", dtw_window)):
        if dist == "euclidean" or len({len(s) for s in xtr + xte}) == 1:
            a, b = _pad(xtr, T), _pad(xte, T)  # (N, C, T) for aeon
        else:
            a, b = [s.T for s in xtr], [s.T for s in xte]  # unequal: list of (C, T_i)
        params = None if window is None else {"window": window}
        t0 = time.perf_counter()
        clf = KNeighborsTimeSeriesClassifier(n_neighbors=1, distance=dist, distance_params=params)
        with warnings.catch_warnings():  # aeon's own Euclidean kernel casts an index type
            warnings.filterwarnings("ignore", message=".*unsafe cast from uint64 to int64")
            acc = float((clf.fit(a, ytr).predict(b) == yte).mean())
        rows.append((f"1nn_{dist}", np.nan if window is None else window, acc,
                     time.perf_counter() - t0))  # fmt: skip
    out = pd.DataFrame(rows, columns=["baseline", "window", "accuracy", "seconds"])
    out.insert(0, "shorten", shorten)
    out.insert(0, "seq_len", T)
    out.insert(0, "dataset", name)
    return out


def _pad(xs: list[np.ndarray], T: int) -> np.ndarray:
    """(N, C, T) float64 array, each (T_i, C) series zero-padded at the end to T."""
    out = np.zeros((len(xs), xs[0].shape[1], T))
    for i, s in enumerate(xs):
        out[i, :, : len(s)] = s.T
    return out
