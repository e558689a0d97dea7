"""PAMNet models on the fused ops: layers, bases, fusion, heads and the authors'-checkpoint loader;
SchNet and DimeNet++ baselines (PyG's models on our ops)."""
from .basis import BesselBasis, SphericalBasis
from .dense import MLP, Linear, LinearSiLU
from .global_mp import GlobalMessagePassing, Res
from .local_mp import LocalMessagePassing, LocalMessagePassingS
from .fusion import AttentionFusion, graph_mean, graph_sum, readout, signed_sum
from .graphs import Graphs, build_graphs, pair_rows, sort_edges
from .pamnet import PAMNet, PAMNetConfig, PAMNetS, PAMNetState
from .compiled import CapturedForward, CompiledModel, capture_forward, compile_model
from .heads import DipoleHead, ProteinLigandHead, complex_batch, expand_complexes
from .baselines import DimeNetPlusPlusBaseline, DimeNetPlusPlusConfig, SchNetBaseline, SchNetConfig
from .compat import (load_reference_checkpoint, load_reference_state_dict, reference_key_map,
                     to_reference_state_dict)

__all__ = [
    "BesselBasis", "SphericalBasis", "MLP", "Linear", "LinearSiLU", "Res", "GlobalMessagePassing", "LocalMessagePassing",
    "LocalMessagePassingS", "AttentionFusion", "graph_sum", "graph_mean", "readout", "signed_sum",
    "PAMNetConfig", "PAMNet", "PAMNetS", "PAMNetState", "Graphs", "build_graphs", "sort_edges", "pair_rows",
    "DipoleHead", "ProteinLigandHead", "complex_batch", "expand_complexes", "load_reference_checkpoint",
    "load_reference_state_dict", "reference_key_map", "to_reference_state_dict",
    "compile_model", "CompiledModel", "capture_forward", "CapturedForward",
    "SchNetConfig", "SchNetBaseline", "DimeNetPlusPlusConfig", "DimeNetPlusPlusBaseline",
]
