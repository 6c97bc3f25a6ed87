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
    "CopyTask",
    "DigitsTask",
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


class Task:
    """Common interface of the tasks.

    Attributes:
        name: task name as in ``available_tasks()``.
        seq_len: the length parameter passed to ``make_task``.
        length: number of time steps T of ``x`` (differs from ``seq_len`` for copy).
        input_size, output_size: I and the model's output width.
        readout: "last" (one prediction per sequence) or "all" (one per step).
        baseline: loss of the best predictor without memory.
        metric: name of ``loss``: "mse" or "cross_entropy".
        device: where batches are put.
        generator: the task's own CPU generator (seeded by ``seed``), used when ``sample`` gets
            none.
    """

    name: ClassVar[str]
    metric: ClassVar[str]
    readout: ClassVar[str]

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
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

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


_TASKS: dict[str, type[Task]] = {"adding": AddingTask, "copy": CopyTask, "digits": DigitsTask}


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

    ``kw`` goes to the task (digits: ``test_fraction``). Raises ValueError for an unknown
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
