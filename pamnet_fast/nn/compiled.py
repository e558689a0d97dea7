r"""``torch.compile`` of the PAMNet models: graphs built outside, the forward compiled whole.

Graph building sizes edge lists from the data (a host read per list), so it stays outside the
compiled region; the forward given the graphs (:meth:`~pamnet_fast.nn.PAMNet.forward_tensors`) has no
host synchronization and no data-dependent Python branch, so it compiles as ONE graph
(``fullgraph=True``), forward and backward, and with ``dynamic=True`` a batch with other numbers of
atoms, edges or triplets reuses it instead of recompiling. ``mode="reduce-overhead"`` (CUDA graphs)
needs the same shapes every call (pad batches to a fixed size); :func:`capture_forward` records the
eager inference forward in a CUDA graph without compiling::

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


def _tensors(graphs) -> list:
    """The tensors of a :class:`Graphs` (nested tuples included), in a fixed order."""
    out = []
    for item in graphs:
        if isinstance(item, Tensor):
            out.append(item)
        elif isinstance(item, tuple):
            out.extend(_tensors(item))
    return out


class CapturedForward:
    """A PAMNet inference forward recorded once in a CUDA graph, replayed for batches of the same
    shapes (see :func:`capture_forward`)."""

    def __init__(self, model: nn.Module, graph, inputs: list, num_graphs: int, output: Tensor):
        self.model, self.graph, self.inputs, self.num_graphs, self.output = (model, graph, inputs,
                                                                             num_graphs, output)

    def __call__(self, data, graphs: Optional[Graphs] = None) -> Tensor:
        """``model(data, graphs)`` by copying the inputs into the recorded buffers and replaying
        (``graphs`` built here when not given). Returns the recorded output buffer: the next call
        overwrites it (``.clone()`` it to keep it)."""
        if graphs is None:
            graphs = self.model.build_graphs(data)
        new = [data.pos, self.model.node_input(data)] + _tensors(graphs)
        if len(new) != len(self.inputs) or graphs.num_graphs != self.num_graphs or any(
                a.shape != b.shape or a.dtype != b.dtype for a, b in zip(new, self.inputs)):
            raise ValueError("CapturedForward: this batch's shapes (atoms, edges, triplets or graphs) "
                             "differ from the captured batch's; capture it separately "
                             "(capture_forward) or use compile_model")
        for dst, src in zip(self.inputs, new):
            if dst is not src:
                dst.copy_(src)
        self.graph.replay()
        return self.output


def capture_forward(model: nn.Module, data, graphs: Optional[Graphs] = None,
                    warmup: int = 2) -> CapturedForward:
    """Record ``model.forward_tensors`` (inference, ``torch.no_grad``) for ``data`` in a CUDA graph:
    one launch replays all of its kernels, for batches with the same numbers of atoms, edges,
    triplets and graphs (e.g. a padded, fixed-size batch). Possible because the forward given the
    graphs never reads the device (the fused ops run with ``check_values=False``). ``warmup`` eager
    calls on a side stream first (Triton compilation, cached constants)."""
    if not data.pos.is_cuda:
        raise ValueError("capture_forward: CUDA graphs need CUDA tensors (data.pos is on "
                         f"{data.pos.device})")
    if graphs is None:
        graphs = model.build_graphs(data)
    pos, node_input = data.pos.clone(), model.node_input(data).clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.no_grad(), torch.cuda.stream(stream):
        for _ in range(warmup):
            model.forward_tensors(pos, node_input, graphs)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        output = model.forward_tensors(pos, node_input, graphs)
    return CapturedForward(model, graph, [pos, node_input] + _tensors(graphs), graphs.num_graphs,
                           output)
