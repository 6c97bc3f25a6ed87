"""gradlab.plot: tidy pandas DataFrame in, matplotlib Axes or Figure out. Never imports torch.

Every function checks its table (a missing column or an empty table is a ValueError that names
the function, the missing column(s) and the required ones), draws with fixed colours per cell
kind (tanh RNN, ReLU RNN, LSTM, GRU; see ``CELL_COLORS``), and returns what it drew on:
functions with ``ax=None`` return the Axes, those with ``fig=None`` the Figure. ``save`` writes
PNG and SVG byte-for-byte deterministically.

=========================  ====================================================================
function                   required columns
=========================  ====================================================================
decay_curves               cell, lag, value (log10 grad norm) [seed, init, quantity]
flow_heatmaps              cell, t, k, value (log10 ‖∂h_t/∂h_k‖) [quantity, seed]
decay_heatmap              <row>, <col>, value [seed, quantity]
gain_phase_diagram         measured and theory: gain, input_std, quantity, value [seed]
singular_value_spectra     init, cell, k, index, value [seed]
bptt_by_lag                cell, param, lag, value [seed, quantity]
training_curves            task, cell, seq_len, clip, iteration, quantity, value [seed]
training_grad_heatmap      iteration, step, value (+ the filter columns) [quantity]
decay_over_training        iteration, step, value (+ the filter columns)
summary_over_training      iteration, quantity, value [module, call, layer, direction]
gate_saturation            cell, init, gate, step, quantity, value [seed]
input_gradient_curves      arch, stage, lag, value (log10 ‖∂L/∂x_{T-1-k}‖) [seed]
length_sweep               task, arch, seq_len, value (final loss ÷ baseline) [seed]
parallel_timing            arch, seq_len, ms_median, sequential_steps [ms_min, ms_max]
structure_panels           metric, profile and credit tables: task, cell, ... (see its doc)
length_effect              accuracy: cell, seq_len, value; gradient: + stage [baselines]
gates_over_training        init, iteration, quantity, value [seed, gate, unit, step]
=========================  ====================================================================
"""

from ._save import save
from ._style import CELL_COLORS, CELL_LABELS, CELL_ORDER
from .bptt import bptt_by_lag
from .decay import decay_curves, decay_heatmap
from .flow import flow_heatmaps
from .gates import gate_saturation, gates_over_training
from .monitor import decay_over_training, summary_over_training
from .phase import gain_phase_diagram
from .spectra import singular_value_spectra
from .structures import length_effect, structure_panels
from .training import training_curves, training_grad_heatmap
from .transformer import input_gradient_curves, length_sweep, parallel_timing

__all__ = [
    "CELL_COLORS",
    "CELL_LABELS",
    "CELL_ORDER",
    "bptt_by_lag",
    "decay_curves",
    "decay_heatmap",
    "decay_over_training",
    "flow_heatmaps",
    "gain_phase_diagram",
    "gate_saturation",
    "input_gradient_curves",
    "length_effect",
    "length_sweep",
    "parallel_timing",
    "gates_over_training",
    "save",
    "singular_value_spectra",
    "structure_panels",
    "summary_over_training",
    "training_curves",
    "training_grad_heatmap",
]
