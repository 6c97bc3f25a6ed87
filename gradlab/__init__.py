"""gradlab: show, measure and explain vanishing and exploding gradients in recurrent networks.

The public surface: :func:`record` (hooks for any model), :class:`Monitor` (``record`` at every
n-th iteration of a training loop, with TensorBoard output) and :func:`report` (its figures), the instrumented models in
:mod:`gradlab.models` (and :class:`Unrolled` for a user's own cell), the analysis functions
(:func:`gradient_flow`, :func:`flow_map`, :func:`jacobian_spectrum`, :func:`lyapunov_spectrum`,
:func:`bptt_by_lag`, :func:`input_gradients`, :func:`credit_map`), :mod:`gradlab.theory`, :mod:`gradlab.init`, :mod:`gradlab.tasks`,
:mod:`gradlab.train`, :mod:`gradlab.plot` (imported on demand; it never imports torch) and the
``gradlab`` command line.
"""

from . import models, theory
from ._credit import credit_map
from ._input_grad import input_gradients
from ._monitor import Monitor
from ._record import Recording, record
from ._report import report
from .analysis import bptt_by_lag, flow_map, gradient_flow, jacobian_spectrum, lyapunov_spectrum
from .models import Unrolled

__version__ = "0.1.0"
__all__ = [
    "record",
    "Recording",
    "Monitor",
    "report",
    "models",
    "Unrolled",
    "gradient_flow",
    "flow_map",
    "jacobian_spectrum",
    "lyapunov_spectrum",
    "bptt_by_lag",
    "input_gradients",
    "credit_map",
    "theory",
]
