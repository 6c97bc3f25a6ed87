"""gradlab: show, measure and explain vanishing and exploding gradients in recurrent networks.

The public surface: :func:`record` (hooks for any model), the instrumented models in
:mod:`gradlab.models`, the analysis functions, :mod:`gradlab.theory` and :mod:`gradlab.plot`.
"""

from . import models
from ._record import Recording, record
from .models import Unrolled

__version__ = "0.1.0"
__all__ = ["record", "Recording", "models", "Unrolled"]
