"""A tiny model with the PAMNet interface (used by tests and the hidden ``--model tiny``)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class TinyConfig:
    hidden: int = 16
    out_dim: int = 1
    max_z: int = 10


class TinyModel(nn.Module):
    """Per-atom embedding + a distance-to-centroid feature, summed per graph, then an MLP."""

    def __init__(self, config: TinyConfig = None):
        super().__init__()
        self.config = config if config is not None else TinyConfig()
        c = self.config
        self.emb = nn.Embedding(c.max_z, c.hidden)
        self.rad = nn.Linear(1, c.hidden)
        self.mlp = nn.Sequential(nn.Linear(c.hidden, c.hidden), nn.SiLU(), nn.Linear(c.hidden, c.out_dim))

    def forward(self, data):
        z, pos, batch = data.z, data.pos, data.batch
        if batch is None:
            batch = torch.zeros_like(z)
        num_graphs = int(data.num_graphs) if hasattr(data, "num_graphs") else int(batch.max()) + 1
        counts = torch.zeros(num_graphs, dtype=pos.dtype, device=pos.device).index_add_(
            0, batch, torch.ones_like(pos[:, 0]))
        center = torch.zeros(num_graphs, 3, dtype=pos.dtype, device=pos.device).index_add_(0, batch, pos)
        center = center / counts.clamp(min=1)[:, None]
        r = (pos - center[batch]).norm(dim=-1, keepdim=True)
        h = self.emb(z) * torch.tanh(self.rad(r))
        g = torch.zeros(num_graphs, h.shape[1], dtype=h.dtype, device=h.device).index_add_(0, batch, h)
        return self.mlp(g)


def synthetic_dataset(n: int = 256, seed: int = 0):
    """Random small 'molecules' whose target is a smooth function of z and geometry (tests)."""
    from torch_geometric.data import Data
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        k = int(torch.randint(3, 10, (1,), generator=g))
        z = torch.randint(1, 10, (k,), generator=g)
        pos = torch.randn(k, 3, generator=g)
        y = float(z.sum()) + float((pos - pos.mean(0)).norm(dim=1).sum())
        out.append(Data(z=z, pos=pos, y=torch.tensor([[y, -y]]), idx=torch.tensor(i)))
    return out
