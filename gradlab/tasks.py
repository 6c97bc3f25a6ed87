"""Long-dependency tasks with deterministic generators and their no-memory baselines.

Every task answers ``sample(batch_size, generator)`` with ``x`` of shape (B, T, I) and a
target ``y``, and knows its ``loss(pred, y)`` (``pred`` = the model's output), the loss of the
best predictor that has no memory of the input (``baseline``) and the metric's name.

Batches are drawn on CPU from a CPU ``torch.Generator`` (so a seed gives the same data on any
device) and moved to the task's device once per batch.

Tasks:
    adding   Hochreiter & Schmidhuber (1997), in the form of Le, Jaitly & Hinton (2015) and
             Arjovsky, Shah & Bengio (2016). ``seq_len`` = T.
    copy     copy-memory, Arjovsky, Shah & Bengio (2016). ``seq_len`` = the delay T; sequences
             have T + 2n steps for n symbols to copy (``length``, default 10).
    digits   scikit-learn's 8x8 ``load_digits`` read pixel by pixel (seq_len 64, I = 1) or row
             by row (seq_len 8, I = 8).

Real data, one task per structure of the lecture (``structure``; data from ``gradlab.data``):
    ucr       many-to-one: classify a UCR/UEA series (``dataset``, ``shorten``); packed batches
              for the variable-length JapaneseVowels.
    chars     synchronized many-to-many: next-character prediction on Python's help text, a
              loss at every step.
    reverse   encoder-decoder many-to-many: read a text span, write it reversed (x is the
              tuple (src, tgt_in)).
    generate  one-to-many: a UCR/UEA series from its class given at step 0.
"""

from __future__ import annotations

import functools
import math
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "ADDING_BASELINE_MSE",
    "AddingTask",
    "CharsTask",
    "CopyTask",
    "DigitsTask",
    "GenerateTask",
    "ReverseTask",
    "UCRTask",
    "Task",
    "available_tasks",
    "copy_baseline",
    "make_task",
]

ADDING_BASELINE_MSE = 1.0 / 6.0
"""MSE of the constant prediction 1: y = u1 + u2 with u ~ U[0, 1] has mean 1, variance 2/12."""

COPY_SYMBOLS = 8  # symbols 1..8; 0 is the blank, 9 the delimiter
COPY_LENGTH = 10  # symbols to remember


def copy_baseline(T: int, length: int = COPY_LENGTH) -> float:
    """Cross-entropy per step of the best no-memory predictor on copy-memory with delay T.

    It predicts the T + n blanks exactly (their place is fixed) and spreads the last n steps
    uniformly over the 8 symbols: n ln 8 / (T + 2n), n = ``length`` symbols to copy (10 in
    Arjovsky, Shah & Bengio 2016).

    Examples:
        >>> from gradlab.tasks import copy_baseline
        >>> round(copy_baseline(50, length=3), 4)  # 3 ln 8 / 56
        0.1114
    """
    _check_seq_len("copy", T, minimum=1)
    return length * math.log(COPY_SYMBOLS) / (T + 2 * length)


def _check_seq_len(name: str, seq_len: Any, minimum: int) -> None:
    if isinstance(seq_len, bool) or not isinstance(seq_len, int | np.integer) or seq_len < minimum:
        raise ValueError(f"task {name!r} needs an integer seq_len >= {minimum}, got {seq_len!r}")


def _to(v: Any, device: torch.device) -> Any:
    """A tensor, PackedSequence or tuple of tensors on ``device``."""
    if isinstance(v, tuple) and not isinstance(v, torch.nn.utils.rnn.PackedSequence):
        return tuple(_to(u, device) for u in v)
    return v.to(device, non_blocking=True)


class Task:
    """Common interface of the tasks.

    Attributes:
        name: task name as in ``available_tasks()``.
        seq_len: the length parameter passed to ``make_task``.
        length: number of time steps T of ``x`` (differs from ``seq_len`` for copy).
        input_size, output_size: I and the model's output width.
        readout: "last" (one prediction per sequence) or "all" (one per step).
        structure: how the sequence meets the model (the lecture's four RNN structures):
            "many_to_one", "many_to_many" (synchronized: a target at every step),
            "encoder_decoder" (``x`` is the tuple (src, tgt_in) for
            :class:`gradlab.train.EncoderDecoder`) or "one_to_many".
        baseline: loss of the best predictor without memory.
        metric: name of ``loss``: "mse" or "cross_entropy".
        device: where batches are put.
        generator: the task's own CPU generator (seeded by ``seed``), used when ``sample`` gets
            none.
    """

    name: ClassVar[str]
    metric: ClassVar[str]
    readout: ClassVar[str]
    structure: ClassVar[str]

    def __init__(self, seq_len: int, *, seed: int, device: torch.device | str = "cpu"):
        self.seq_len = int(seq_len)
        self.seed = int(seed)
        self.device = torch.device(device)
        self.generator = torch.Generator(device="cpu").manual_seed(self.seed)

    # subclasses set these
    length: int
    input_size: int
    output_size: int
    baseline: float

    def sample(
        self, batch_size: int, generator: torch.Generator | None = None, *, split: str = "train"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw a batch: ``x`` (B, T, I) float32 and ``y`` on the task's device.

        ``generator`` is a CPU ``torch.Generator`` (default: the task's own). ``split`` matters
        only for data sets ("train" or "test"); synthetic tasks draw fresh sequences.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        g = self.generator if generator is None else generator
        if g.device.type != "cpu":
            raise ValueError("sample needs a CPU torch.Generator; batches are drawn on CPU")
        x, y = self._draw(batch_size, g, split)
        return _to(x, self.device), _to(y, self.device)

    def _draw(self, B: int, g: torch.Generator, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def loss(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean loss of the model output ``pred`` against ``y`` (a 0-d tensor)."""
        raise NotImplementedError

    def accuracy(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        """Fraction correct (0-d tensor), or None for regression tasks."""
        return None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(seq_len={self.seq_len}, seed={self.seed}, device={self.device})"
        )


class AddingTask(Task):
    """Adding problem (Hochreiter & Schmidhuber 1997; Le et al. 2015; Arjovsky et al. 2016).

    x[b, t] = (u_t, m_t): u_t ~ U[0, 1]; the marker m has exactly two 1s, one at a position
    uniform in [0, T//2) and one uniform in [T//2, T). y[b] = sum_t u_t m_t, shape (B, 1).
    The constant prediction 1 has MSE Var(u1 + u2) = 1/6 (``ADDING_BASELINE_MSE``).
    """

    name = "adding"
    metric = "mse"
    readout = "last"
    structure = "many_to_one"

    def __init__(self, seq_len: int, *, seed: int, device: torch.device | str = "cpu"):
        _check_seq_len("adding", seq_len, minimum=2)
        super().__init__(seq_len, seed=seed, device=device)
        self.length = self.seq_len
        self.input_size, self.output_size = 2, 1
        self.baseline = ADDING_BASELINE_MSE

    def _draw(self, B: int, g: torch.Generator, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        T, half = self.length, self.length // 2
        u = torch.rand(B, T, generator=g)  # (B, T)
        first = torch.randint(0, half, (B,), generator=g)  # (B,)
        second = torch.randint(half, T, (B,), generator=g)  # (B,)
        m = torch.zeros(B, T)
        rows = torch.arange(B)
        m[rows, first] = 1.0
        m[rows, second] = 1.0
        x = torch.stack([u, m], dim=-1)  # (B, T, 2)
        y = (u * m).sum(dim=1, keepdim=True)  # (B, 1)
        return x, y

    def loss(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(pred.reshape(y.shape), y)


class CopyTask(Task):
    """Copy-memory (Arjovsky, Shah & Bengio 2016), delay T = ``seq_len``, length T + 2n.

    Input symbols (one-hot over 10 classes): n = ``length`` symbols from {1..8} (n = 10 in the
    paper), T - 1 blanks (0), the delimiter 9, n blanks. Target (B, T + 2n) class indices:
    blanks (0) for T + n steps, then the n symbols. ``pred`` is (B, T + 2n, 9) logits over
    {0..8}. Baseline: ``copy_baseline(T, n)``.
    """

    name = "copy"
    metric = "cross_entropy"
    readout = "all"
    structure = "many_to_many"

    def __init__(
        self,
        seq_len: int,
        *,
        seed: int,
        device: torch.device | str = "cpu",
        length: int = COPY_LENGTH,
    ):
        _check_seq_len("copy", seq_len, minimum=1)
        if isinstance(length, bool) or not isinstance(length, int | np.integer) or length < 1:
            raise ValueError(f"task 'copy' needs an integer length >= 1 (symbols), got {length!r}")
        super().__init__(seq_len, seed=seed, device=device)
        self.copy_length = int(length)
        self.length = self.seq_len + 2 * self.copy_length
        self.input_size = COPY_SYMBOLS + 2  # blank, 8 symbols, delimiter
        self.output_size = COPY_SYMBOLS + 1  # blank, 8 symbols
        self.baseline = copy_baseline(self.seq_len, self.copy_length)

    def _draw(self, B: int, g: torch.Generator, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        T, L, n = self.seq_len, self.length, self.copy_length
        symbols = torch.randint(1, COPY_SYMBOLS + 1, (B, n), generator=g)  # (B, n)
        seq = torch.zeros(B, L, dtype=torch.long)  # (B, T+2n)
        seq[:, :n] = symbols
        seq[:, n + T - 1] = COPY_SYMBOLS + 1  # delimiter 9
        y = torch.zeros(B, L, dtype=torch.long)  # (B, T+2n)
        y[:, -n:] = symbols
        x = F.one_hot(seq, self.input_size).float()  # (B, T+2n, 10)
        return x, y

    def loss(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(pred.reshape(-1, pred.shape[-1]), y.reshape(-1))

    def accuracy(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Fraction of the n recalled symbols predicted right (the part that needs memory)."""
        n = self.copy_length
        return (pred[:, -n:].argmax(-1) == y[:, -n:]).float().mean()


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    d = load_digits()
    images = (d.images / 16.0).astype(np.float32)  # (1797, 8, 8) in [0, 1]
    return images, d.target.astype(np.int64)


class DigitsTask(Task):
    """Sequential digits: scikit-learn's 8x8 digits as sequences, 10 classes.

    ``seq_len`` 64: pixel by pixel (I = 1, row-major); ``seq_len`` 8: row by row (I = 8).
    Pixels divided by 16 into [0, 1]. A seeded permutation puts ``test_fraction`` of the 1797
    images in "test". y (B,) class indices; ``pred`` (B, 10) logits. Chance: cross-entropy
    ln 10 (``baseline``), accuracy 0.1 (``chance_accuracy``).
    """

    name = "digits"
    metric = "cross_entropy"
    readout = "last"
    structure = "many_to_one"
    chance_accuracy = 0.1

    def __init__(
        self,
        seq_len: int,
        *,
        seed: int,
        device: torch.device | str = "cpu",
        test_fraction: float = 0.25,
    ):
        if seq_len not in (64, 8) or isinstance(seq_len, bool):
            raise ValueError(
                f"task 'digits' reads 8x8 images: seq_len 64 (pixel by pixel) or 8 (row by row), "
                f"got {seq_len!r}"
            )
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
        super().__init__(seq_len, seed=seed, device=device)
        self.length = self.seq_len
        self.input_size = 64 // self.seq_len
        self.output_size = 10
        self.baseline = math.log(10.0)
        images, labels = _digits()
        x = torch.from_numpy(images).reshape(-1, self.length, self.input_size)  # (N, T, I)
        y = torch.from_numpy(labels)  # (N,)
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(self.seed))
        n_test = int(round(test_fraction * len(y)))
        self.test_fraction = test_fraction
        self._split = {"test": perm[:n_test], "train": perm[n_test:]}
        self._x, self._y = x, y  # CPU; a batch is moved to the device in ``sample``

    def split_size(self, split: str) -> int:
        """Number of images in ``split``."""
        return len(self._split[split])

    def full_split(self, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
        """The whole split, in a fixed order, on the task's device."""
        idx = self._split[split]
        return self._x[idx].to(self.device), self._y[idx].to(self.device)

    def _draw(self, B: int, g: torch.Generator, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        pool = self._split[split]
        idx = pool[torch.randint(0, len(pool), (B,), generator=g)]  # with replacement
        return self._x[idx], self._y[idx]

    def loss(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(pred, y)

    def accuracy(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (pred.argmax(-1) == y).float().mean()


def _entropy(counts: np.ndarray) -> float:
    """Plug-in entropy -sum p ln p (nats) of a count vector."""
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def _conditional_entropy(codes: np.ndarray, V: int, context: int) -> float:
    """Plug-in H(c_i | c_{i+1}, ..., c_{i+context}) in nats: the right context predicts c_i."""
    n = len(codes) - context
    key = np.zeros(n, dtype=np.int64)
    for j in range(1, context + 1):
        key = key * V + codes[j : j + n]
    joint = np.unique(key * V + codes[:n], return_counts=True)[1]
    ctx = np.unique(key, return_counts=True)[1]
    return _entropy(joint.astype(np.float64)) - _entropy(ctx.astype(np.float64))


def _ucr_arrays(task: Task, dataset: str, shorten: str) -> dict[str, tuple[list, np.ndarray]]:
    from gradlab import data

    if dataset not in data.UCR_DATASETS:
        raise ValueError(f"task {task.name!r}: unknown dataset {dataset!r}; available: "
                         f"{', '.join(data.UCR_DATASETS)}")  # fmt: skip
    if shorten not in data.SHORTEN:
        raise ValueError(f"task {task.name!r}: shorten must be one of {', '.join(data.SHORTEN)}, "
                         f"got {shorten!r}")  # fmt: skip
    data._check_seq_len(dataset, task.seq_len, f"task {task.name!r}")
    return {s: data.prepared_split(dataset, s, task.seq_len, shorten) for s in ("train", "test")}


class UCRTask(Task):
    """Many-to-one: classify a UCR/UEA series (``gradlab.data``) from the last hidden state.

    ``dataset`` one of ``gradlab.data.UCR_DATASETS`` (default "GunPoint"); ``seq_len`` = T, the
    length the series are brought to (1..native length; the native length gives the full
    series) by ``shorten``: "subsample" (T evenly spaced points) or "crop" (the first T). Each
    channel is standardised with the training split's mean and standard deviation
    (``gradlab.data.prepared_split``). x (B, T, C) float32, y (B,) class indices, ``pred``
    (B, K) logits, cross-entropy. The splits are aeon's fixed train/test splits;
    ``full_split`` gives a whole split (``train`` evaluates on the whole test split).

    Variable-length sets (JapaneseVowels, 7..29 steps): ``seq_len`` is the longest length kept
    (29 = native) and x is a ``torch.nn.utils.rnn.PackedSequence`` (``enforce_sorted=False``)
    of each sample's own steps; ``packed`` is True.

    ``baseline``: the cross-entropy of predicting the training class prior p on training data,
    H(p) = -sum_k p_k ln p_k (nats). ``chance_accuracy``: test accuracy of always answering the
    training split's majority class.
    """

    name = "ucr"
    metric = "cross_entropy"
    readout = "last"
    structure = "many_to_one"
    eval_full_split = True

    def __init__(
        self,
        seq_len: int,
        *,
        seed: int,
        device: torch.device | str = "cpu",
        dataset: str = "GunPoint",
        shorten: str = "subsample",
    ):
        super().__init__(seq_len, seed=seed, device=device)
        arrays = _ucr_arrays(self, dataset, shorten)
        self.dataset, self.shorten = dataset, shorten
        xtr, ytr = arrays["train"]
        self.length = self.seq_len
        self.input_size = int(xtr[0].shape[1])
        self.classes = _classes(dataset)
        self.output_size = len(self.classes)
        self.packed = len({len(s) for xs, _ in arrays.values() for s in xs}) > 1
        counts = np.bincount(ytr, minlength=self.output_size).astype(np.float64)
        self.baseline = _entropy(counts)
        yte = arrays["test"][1]
        self.chance_accuracy = float((yte == counts.argmax()).mean())
        self._data = {}
        for split, (xs, y) in arrays.items():
            xt = (
                [torch.from_numpy(s) for s in xs] if self.packed else torch.from_numpy(np.stack(xs))
            )
            self._data[split] = (xt, torch.from_numpy(np.array(y, dtype=np.int64)))

    def split_size(self, split: str) -> int:
        """Number of series in ``split``."""
        return len(self._data[split][1])

    def _gather(self, split: str, idx: torch.Tensor) -> tuple[Any, torch.Tensor]:
        xs, y = self._data[split]
        if self.packed:
            seqs = [xs[i] for i in idx.tolist()]
            x = torch.nn.utils.rnn.pack_sequence(seqs, enforce_sorted=False)
            return x, y[idx]
        return xs[idx], y[idx]  # (B, T, C), (B,)

    def full_split(self, split: str = "test") -> tuple[Any, torch.Tensor]:
        """The whole split, in aeon's order, on the task's device."""
        x, y = self._gather(split, torch.arange(self.split_size(split)))
        return _to(x, self.device), _to(y, self.device)

    def _draw(self, B: int, g: torch.Generator, split: str) -> tuple[Any, torch.Tensor]:
        n = self.split_size(split)
        return self._gather(split, torch.randint(0, n, (B,), generator=g))  # with replacement

    def loss(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(pred, y)

    def accuracy(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (pred.argmax(-1) == y).float().mean()


def _classes(dataset: str) -> tuple[str, ...]:
    from gradlab import data

    return data.load_ucr(dataset, "train").classes


class _TextTask(Task):
    """Shared: the codes of ``gradlab.data``'s text splits and its vocabulary (V symbols)."""

    metric = "cross_entropy"
    readout = "all"

    def __init__(self, seq_len: int, *, seed: int, device: torch.device | str = "cpu"):
        from gradlab import data

        _check_seq_len(self.name, seq_len, minimum=1)
        limit = len(data.text_codes("test")) - 1
        if seq_len > limit:
            raise ValueError(f"task {self.name!r}: seq_len {seq_len} is longer than the test "
                             f"text allows; pass seq_len <= {limit}")  # fmt: skip
        super().__init__(seq_len, seed=seed, device=device)
        self.vocabulary = data.text_vocabulary()
        self.V = len(self.vocabulary)
        self._codes = {s: torch.from_numpy(data.text_codes(s).copy()) for s in ("train", "test")}
        self.unigram_entropy = _entropy(
            np.bincount(data.text_codes("train"), minlength=self.V).astype(np.float64)
        )

    def _windows(self, B: int, g: torch.Generator, split: str, n: int) -> torch.Tensor:
        """(B, n) codes of windows at uniform random offsets of the split."""
        codes = self._codes[split]
        start = torch.randint(0, len(codes) - n + 1, (B,), generator=g)  # (B,)
        return codes[start[:, None] + torch.arange(n)]  # (B, n)

    def loss(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(pred.reshape(-1, pred.shape[-1]), y.reshape(-1))

    def accuracy(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (pred.argmax(-1) == y).float().mean()


class CharsTask(_TextTask):
    """Synchronized many-to-many: a character-level language model, a loss at every step.

    Text and vocabulary from ``gradlab.data`` (Python's pydoc help topics; V = 95 symbols:
    the printable ASCII characters present and one "other"); windows of T + 1 characters
    c_0..c_T at uniform random offsets of the split. x (B, T, V) one-hot of c_0..c_{T-1},
    y (B, T) = c_1..c_T, ``pred`` (B, T, V) logits; cross-entropy per step, mean over B and T,
    in nats (bits per character = loss / ln 2). ``baseline``: the unigram entropy of the
    training text, -sum_c p(c) ln p(c) (a predictor with no memory of the previous characters;
    3.25 nats, ``baseline_bits`` 4.69 bits per character);
    accuracy: next-character accuracy.
    """

    name = "chars"
    structure = "many_to_many"

    def __init__(self, seq_len: int, *, seed: int, device: torch.device | str = "cpu"):
        super().__init__(seq_len, seed=seed, device=device)
        self.length = self.seq_len
        self.input_size = self.output_size = self.V
        self.baseline = self.unigram_entropy
        self.baseline_bits = self.baseline / math.log(2.0)  # bits per character

    def _draw(self, B: int, g: torch.Generator, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        w = self._windows(B, g, split, self.seq_len + 1)  # (B, T+1)
        return F.one_hot(w[:, :-1], self.V).float(), w[:, 1:]  # (B, T, V), (B, T)


class ReverseTask(_TextTask):
    """Encoder-decoder many-to-many: read a text span, write it reversed.

    ``seq_len`` = n, the span length. src (B, n, V) one-hot of the span s_0..s_{n-1}; the target
    y (B, n) is the reversed span r_t = s_{n-1-t}; the decoder input tgt_in (B, n, V + 1) is
    teacher forcing: a start symbol (index V) at t = 0, then r_{t-1} at t >= 1. ``sample``
    returns x = (src, tgt_in) for :class:`gradlab.train.EncoderDecoder` (``input_size`` = V,
    ``decoder_input_size`` = V + 1, ``output_size`` = V). Cross-entropy per step (nats),
    accuracy per character.

    ``baseline`` (no memory of src): such a decoder still sees the previous reversed character
    r_{t-1} = s_{n-t}, i.e. the character *after* the one to predict, so the best it does with
    that alone is the reversed bigram model, H(c_i | c_{i+1}) of the training text
    (``conditional_entropy``); at t = 0 it sees only the start symbol and pays the unigram
    entropy H(c). Per step, on average: baseline = (H(c) + (n - 1) H(c_i | c_{i+1})) / n.
    A recurrent decoder also remembers r_0..r_{t-2}, a longer right context, and could go below
    it without reading src; ``conditional_entropy_2`` = H(c_i | c_{i+1}, c_{i+2}) (plug-in
    estimate on the training text, optimistic) says how far that goes. Only memory of src
    takes the loss towards 0 and the accuracy towards 1.
    """

    name = "reverse"
    structure = "encoder_decoder"

    def __init__(self, seq_len: int, *, seed: int, device: torch.device | str = "cpu"):
        from gradlab import data

        super().__init__(seq_len, seed=seed, device=device)
        n = self.seq_len
        self.length = n
        self.input_size = self.output_size = self.V
        self.decoder_input_size = self.V + 1
        codes = data.text_codes("train")
        self.conditional_entropy = _conditional_entropy(codes, self.V, 1)
        self.conditional_entropy_2 = _conditional_entropy(codes, self.V, 2)
        self.baseline = (self.unigram_entropy + (n - 1) * self.conditional_entropy) / n

    def _draw(self, B: int, g: torch.Generator, split: str) -> tuple[Any, torch.Tensor]:
        s = self._windows(B, g, split, self.seq_len)  # (B, n)
        r = s.flip(1)  # (B, n) reversed span
        prev = torch.cat([torch.full((B, 1), self.V), r[:, :-1]], dim=1)  # (B, n) start, r_{t-1}
        src = F.one_hot(s, self.V).float()  # (B, n, V)
        tgt_in = F.one_hot(prev, self.V + 1).float()  # (B, n, V + 1)
        return (src, tgt_in), r


class GenerateTask(Task):
    """One-to-many: generate a UCR/UEA series from its class.

    ``dataset`` (default "GunPoint", an equal-length set) and ``shorten`` as in
    :class:`UCRTask`, ``seq_len`` = T. x (B, T, K): the one-hot class at step 0, zeros after;
    y (B, T, C) the standardised, shortened series; ``pred`` (B, T, C); MSE per step (mean over
    B, T and C). ``baseline``: test MSE of the training split's per-step mean series (what a
    model that forgets the class does best); ``floor``: test MSE of the training split's
    per-class mean series (the best a model that keeps the class does, up to train/test
    differences). ``full_split`` as in UCRTask.

    How much the class is worth (baseline / floor at the native length, standardised units):
    GunPoint 0.222 / 0.215 (little: its two classes share one shape), ArrowHead 0.145 / 0.126,
    OSULeaf 0.897 / 0.876, ACSF1 0.218 / 0.184, BasicMotions 0.864 / 0.879 (the floor is above
    the baseline: 10 training series per class give noisy class means). ArrowHead and ACSF1
    show the one-to-many structure best.
    """

    name = "generate"
    metric = "mse"
    readout = "all"
    structure = "one_to_many"
    eval_full_split = True

    def __init__(
        self,
        seq_len: int,
        *,
        seed: int,
        device: torch.device | str = "cpu",
        dataset: str = "GunPoint",
        shorten: str = "subsample",
    ):
        super().__init__(seq_len, seed=seed, device=device)
        arrays = _ucr_arrays(self, dataset, shorten)
        if len({len(s) for xs, _ in arrays.values() for s in xs}) > 1:
            raise ValueError(f"task 'generate': {dataset!r} has series of varying length; use an "
                             "equal-length set (GunPoint, ArrowHead, OSULeaf, ACSF1, "
                             "BasicMotions)")  # fmt: skip
        self.dataset, self.shorten = dataset, shorten
        self.classes = _classes(dataset)
        K = len(self.classes)
        self.length = self.seq_len
        self.input_size, self.output_size = K, int(arrays["train"][0][0].shape[1])
        self._data = {}
        for split, (xs, y) in arrays.items():
            self._data[split] = (torch.from_numpy(np.stack(xs)),
                                 torch.from_numpy(np.array(y, dtype=np.int64)))  # fmt: skip
        ytr_series, ctr = (v.double() if v.is_floating_point() else v for v in self._data["train"])
        yte_series, cte = (v.double() if v.is_floating_point() else v for v in self._data["test"])
        mean = ytr_series.mean(0)  # (T, C)
        self.baseline = float(((yte_series - mean) ** 2).mean())
        class_mean = torch.stack(
            [ytr_series[ctr == k].mean(0) if (ctr == k).any() else mean for k in range(K)]
        )  # (K, T, C)
        self.floor = float(((yte_series - class_mean[cte]) ** 2).mean())

    def split_size(self, split: str) -> int:
        """Number of series in ``split`` ("train" or "test")."""
        return len(self._data[split][1])

    def _gather(self, split: str, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        series, c = self._data[split]
        x = torch.zeros(len(idx), self.length, self.input_size)  # (B, T, K)
        x[:, 0] = F.one_hot(c[idx], self.input_size).float()
        return x, series[idx]  # (B, T, K), (B, T, C)

    def full_split(self, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
        """The whole split, in aeon's order, on the task's device."""
        x, y = self._gather(split, torch.arange(self.split_size(split)))
        return x.to(self.device), y.to(self.device)

    def _draw(self, B: int, g: torch.Generator, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self._gather(split, torch.randint(0, self.split_size(split), (B,), generator=g))

    def loss(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(pred, y)


_TASKS: dict[str, type[Task]] = {
    "adding": AddingTask,
    "copy": CopyTask,
    "digits": DigitsTask,
    "ucr": UCRTask,
    "chars": CharsTask,
    "reverse": ReverseTask,
    "generate": GenerateTask,
}


def available_tasks() -> list[str]:
    """Names accepted by ``make_task`` (and by ``gradlab.train.train`` as ``task``), sorted.

    Each task states its input, target and no-memory baseline in its class docstring.

    Examples:
        >>> from gradlab.tasks import available_tasks
        >>> {"adding", "copy", "digits"} <= set(available_tasks())
        True
    """
    return sorted(_TASKS)


def make_task(
    name: str, seq_len: int, *, seed: int, device: torch.device | str = "cpu", **kw: Any
) -> Task:
    """Build task ``name`` with length parameter ``seq_len``; same seed, same batches.

    ``kw`` goes to the task (digits: ``test_fraction``; ucr, generate: ``dataset``,
    ``shorten``). Raises ValueError for an unknown
    name (listing the known ones) or a bad ``seq_len``.

    Examples:
        >>> from gradlab.tasks import make_task
        >>> task = make_task("adding", 50, seed=0)
        >>> x, y = task.sample(8)
        >>> tuple(x.shape), tuple(y.shape), task.readout
        ((8, 50, 2), (8, 1), 'last')
    """
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; available: {', '.join(available_tasks())}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    try:
        return _TASKS[name](seq_len, seed=int(seed), device=device, **kw)
    except TypeError as e:  # unknown keyword
        raise ValueError(f"task {name!r}: {e}") from None
