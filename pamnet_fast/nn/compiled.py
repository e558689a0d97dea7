r"""``torch.compile`` of the PAMNet models: graphs built outside, the forward compiled whole.

Graph building sizes edge lists from the data (a host read per list), so it stays outside the
compiled region; the forward given the graphs (:meth:`~pamnet_fast.nn.PAMNet.forward_tensors`) has no
host synchronization and no data-dependent Python branch, so it compiles as ONE graph
(``fullgraph=True``), forward and backward, and with ``dynamic=True`` a batch with other numbers of
atoms, edges or triplets reuses it instead of recompiling. ``mode="reduce-overhead"`` (CUDA graphs)
needs the same shapes every call (pad batches to a fixed size)::

    compiled = compile_model(model)
    for batch in loader:
        graphs = model.build_graphs(batch)
        out = compiled(batch, graphs)        # = model(batch), compiled
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.fx.experimental._config  # noqa: F401  (use_duck_shape)
from torch import Tensor, nn

from .graphs import Graphs


class CompiledModel:
    """``(data, graphs) -> model(data, graphs)`` through ``torch.compile`` of ``model.forward_tensors``.
    ``model`` and ``compiled`` (the compiled function) are attributes; parameters are shared with
    ``model`` (train ``model``'s parameters, save ``model``'s state_dict)."""

    def __init__(self, model: nn.Module, compiled):
        self.model = model
        self.compiled = compiled

    def train(self, mode: bool = True) -> "CompiledModel":
        self.model.train(mode)
        return self

    def eval(self) -> "CompiledModel":
        return self.train(False)

    def __call__(self, data, graphs: Optional[Graphs] = None) -> Tensor:
        if graphs is None:
            graphs = self.model.build_graphs(data)
        # no "duck sizing": two sizes equal by chance in one batch must not become a guard
        with torch.fx.experimental._config.patch(use_duck_shape=False):
            return self.compiled(data.pos, self.model.node_input(data), graphs)


def compile_model(model: nn.Module, *, fullgraph: bool = True, dynamic: Optional[bool] = True,
                  mode: Optional[str] = None, **kwargs) -> CompiledModel:
    """Compile a PAMNet / PAMNet-s forward (:func:`torch.compile` of ``model.forward_tensors`` with
    ``fullgraph``, ``dynamic``, ``mode`` and ``**kwargs`` passed on). Returns a callable
    ``compiled(data, graphs=None) -> [num_graphs, out_dim]`` equal to ``model(data, graphs)``; build
    ``graphs = model.build_graphs(data)`` outside it. Not with a memory budget (the streamed path
    builds its global plex block by block, on the host's schedule)."""
    if not hasattr(model, "forward_tensors"):
        raise TypeError(f"compile_model: {type(model).__name__} has no forward_tensors(pos, node_input, "
                        f"graphs); only the PAMNet models can be compiled this way")
    if getattr(model, "max_memory", None) is not None:
        raise ValueError("compile_model: the streamed forward (max_memory set) cannot be compiled; "
                         "set model.max_memory = None")
    compiled = torch.compile(model.forward_tensors, fullgraph=fullgraph, dynamic=dynamic, mode=mode,
                             **kwargs)
    return CompiledModel(model, compiled)
