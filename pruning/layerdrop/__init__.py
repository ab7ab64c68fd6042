"""Layer dropping: measure how redundant each decoder layer is, pick layers to drop, remove them.

`redundancy` measures (hidden-state cosines between block inputs/outputs, SLEB's NLL order),
`selection` turns those numbers into a `DropPlan` (INTERLACE, ShortGPT, angular distance, SLEB and
the ablations, by name), and `surgery` removes the planned layers from the model in place so that
it still generates with a KV cache and round-trips through save_pretrained/from_pretrained.
"""

from pruning.layerdrop.redundancy import LayerRedundancy, SlebOrder, calibration_nll, layer_redundancy, sleb_order
from pruning.layerdrop.selection import LAYER_SELECTORS, DropPlan, edge_layers, layer_selector, n_layers_to_drop, select_layers
from pruning.layerdrop.surgery import drop_layers, finetune_indices, kept_index, protected_layers, skipping_layers

__all__ = [
    "LAYER_SELECTORS",
    "DropPlan",
    "LayerRedundancy",
    "SlebOrder",
    "calibration_nll",
    "drop_layers",
    "edge_layers",
    "finetune_indices",
    "kept_index",
    "layer_redundancy",
    "layer_selector",
    "n_layers_to_drop",
    "protected_layers",
    "select_layers",
    "skipping_layers",
    "sleb_order",
]
