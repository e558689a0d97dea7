r"""Plain, unfused PyTorch twin of PAMNet / PAMNet-s, for testing the fused models.

It reads the parameters of a :class:`~pamnet_fast.nn.PAMNet` / :class:`~pamnet_fast.nn.PAMNetS` but
computes everything the obvious way, close to the authors' code: brute-force O(N^2) neighbor search,
triplets from dense edge-pair masks, the message MLP on the explicit ``[x_i || x_j || e_ij]`` concat,
``index_select`` / ``index_add_`` aggregation, per-edge bases gathered to triplets in
``reference_compat`` mode (as the authors do) and the reference twins of the basis ops otherwise. No
fused op is called, so agreement with the fused model (values and gradients) checks the fused path.
"""
from __future__ import annotations

import functools
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..ops import reference as ref_ops
from .basis import compat_envelope, compat_sbf_constants


# --- graphs ---------------------------------------------------------------------------------

def _pairs(pos: Tensor, batch: Tensor) -> Tuple[Tensor, Tensor]:
    """Dense distance matrix ``D[i, j]`` (target i, source j) and same-graph mask."""
    d = ref_ops.pair_distance(pos[:, None, :], pos[None, :, :])
    same = batch[:, None] == batch[None, :]
    return d, same


def _radius(pos, batch, r):
    d, same = _pairs(pos, batch)
    mask = same & (d <= torch.tensor(r, dtype=pos.dtype))
    mask.fill_diagonal_(False)
    i, j = mask.nonzero(as_tuple=True)
    return torch.stack([j, i])


def _knn_rows(pos, batch, k, r=None, loop=False):
    """For each row node i, its k nearest (ties: smaller index) same-graph nodes, within r."""
    d, same = _pairs(pos, batch)
    d = d.detach().clone()
    bad = ~same
    if r is not None:
        bad |= d > torch.tensor(r, dtype=pos.dtype)
    if not loop:
        bad.fill_diagonal_(True)
    d[bad] = math.inf
    order = torch.sort(d, dim=1, stable=True).indices[:, :k]
    rows = torch.arange(pos.size(0)).unsqueeze(1).expand_as(order)
    keep = torch.isfinite(d.gather(1, order))
    return rows[keep], order[keep]


def reference_graphs(cfg, pos: Tensor, batch: Tensor, bonds: Optional[Tensor]):
    """``(edge_index_g, edge_index_l)`` [2, E] (row 0 source, row 1 target), in no particular order."""
    if cfg.global_graph == "knn" and cfg.reference_compat:
        q, nb = _knn_rows(pos, batch, cfg.knn_k, loop=True)  # authors: knn(pos, pos, k)
        e = torch.stack([q, nb])
        e = e[:, e[0] != e[1]]
        d = ref_ops.pair_distance(pos[e[1]], pos[e[0]])
        eg = e[:, d <= cfg.cutoff_g].flip(0)  # global, flow='target_to_source': neighbour -> query
        el = e[:, d <= cfg.cutoff_l] if cfg.local_graph == "radius" else None  # local: query -> neighbour
    elif cfg.global_graph == "knn":
        i, j = _knn_rows(pos, batch, cfg.knn_k, r=cfg.cutoff_g)
        eg, el = torch.stack([j, i]), None
    else:
        eg, el = _radius(pos, batch, cfg.cutoff_g), None
    if cfg.local_graph == "bonds":
        el = bonds.long()
        el = el[:, el[0] != el[1]]
    elif el is None:
        el = _radius(pos, batch, cfg.cutoff_l)
    return eg, el


def reference_triplets(edge_index: Tensor, include_self_pairs: bool):
    """Authors'-style triplets from dense edge-pair masks: (kj, ji) two-hop, (j2i, ji) one-hop."""
    src, dst = edge_index
    two = (dst[:, None] == src[None, :]) & (src[:, None] != dst[None, :])  # [f = k->j, e = j->i]
    kj, ji = two.nonzero(as_tuple=True)
    one = dst[:, None] == dst[None, :]
    if not include_self_pairs:
        one.fill_diagonal_(False)
    j2i, ji1 = one.nonzero(as_tuple=True)
    return kj, ji, j2i, ji1


def _angle(u: Tensor, v: Tensor) -> Tensor:
    return torch.atan2(torch.linalg.cross(u, v).norm(dim=-1), (u * v).sum(dim=-1))


def reference_angles(pos, edge_index, kj, ji, j2i, ji1, compat: bool):
    src, dst = edge_index
    i, j, k = dst[ji], src[ji], src[kj]
    i1, j1, j2 = dst[ji1], src[ji1], src[j2i]
    if compat:  # the authors' vectors: the supplementary angles
        two = _angle(pos[j] - pos[i], pos[k] - pos[j])
        one = _angle(pos[i1] - pos[j1], pos[j2] - pos[i1])
    else:
        two = _angle(pos[i] - pos[j], pos[k] - pos[j])
        one = _angle(pos[j1] - pos[i1], pos[j2] - pos[i1])
    return two, one


# --- bases ----------------------------------------------------------------------------------

def reference_rbf(basis, dist: Tensor) -> Tensor:
    if basis.reference_compat:
        x = (dist / basis.cutoff).unsqueeze(-1)
        return compat_envelope(x, basis.p) * torch.sin(basis.freq * x)
    return ref_ops.bessel_basis(dist, basis.freq, basis.cutoff, basis.p)


def reference_sbf(basis, dist_e: Tensor, angle: Tensor, idx: Tensor) -> Tensor:
    """Spherical basis of triplets whose sending edge is ``idx`` (edge distances ``dist_e``)."""
    L, N = basis.num_spherical, basis.num_radial
    if basis.reference_compat:  # authors: radial part per edge, gathered, times Y_l^0(angle)
        zeros, norm, pref = compat_sbf_constants(L, N)
        x = (dist_e / basis.cutoff).unsqueeze(-1)
        rad = torch.stack([norm[l].to(x.dtype) * ref_ops.spherical_jn(l, zeros[l].to(x.dtype) * x)
                           for l in range(L)], dim=1)  # [E, L, N]
        rad = compat_envelope(x, basis.p).unsqueeze(-1) * rad
        cbf = torch.stack([float(pref[l]) * ref_ops.legendre(l, torch.cos(angle)) for l in range(L)], 1)
        return (rad[idx] * cbf.unsqueeze(-1)).reshape(-1, L * N)
    zeros = _zeros(L, N)
    return ref_ops.spherical_basis(dist_e[idx], angle, zeros, basis.cutoff, basis.p)


@functools.lru_cache(maxsize=None)
def _zeros(num_spherical: int, num_radial: int) -> Tensor:
    return ref_ops.spherical_bessel_zeros(num_spherical, num_radial)


# --- layers ---------------------------------------------------------------------------------

def _update_and_output(layer, h, res_x):
    x = layer.res1(layer.mlp_x2(h)) + res_x
    x = layer.res2(x)
    x = layer.res3(x)
    z = layer.mlp_out(x)
    return x, layer.W_out(z), z.matmul(layer.W), z


def reference_global(layer, x, e, edge_index):
    src, dst = edge_index
    res_x = x
    h = layer.mlp_x1(x)
    m = layer.mlp_m(torch.cat([h[dst], h[src], e], dim=-1)) * layer.W_edge_attr(e)
    h = h + torch.zeros_like(h).index_add_(0, dst, m)
    return _update_and_output(layer, h, res_x)


def reference_local(layer, x, rbf, sbf, idx, idx_scatter, edge_index, mlp_nb):
    src, dst = edge_index
    res_x = x
    h = layer.mlp_x1(x)
    m = torch.cat([h[dst], h[src], rbf], dim=-1)
    m_ji = layer.mlp_m_ji(m)
    m_nb = mlp_nb(m) * layer.lin_rbf(rbf)
    m_other = m_nb[idx] * layer.mlp_sbf(sbf)
    m_other = torch.zeros_like(m_ji).index_add_(0, idx_scatter, m_other)
    m = layer.lin_rbf_out(rbf) * (m_ji + m_other)
    h = h + torch.zeros_like(h).index_add_(0, dst, m)
    return _update_and_output(layer, h, res_x)


# --- model ----------------------------------------------------------------------------------

def reference_encode(model, data):
    """Returns a dict with node outputs, alpha, per-layer z, edge embeddings, graphs, batch."""
    from .graphs import batch_of
    from .pamnet import PAMNetS
    cfg = model.config
    pos = data.pos
    x = model.embed(data)
    batch, num_graphs = batch_of(data, x.size(0), x.device)
    eg, el = reference_graphs(cfg, pos, batch, getattr(data, "edge_index", None))
    dist_g = ref_ops.pair_distance(pos[eg[1]], pos[eg[0]])
    dist_l = ref_ops.pair_distance(pos[el[1]], pos[el[0]])
    rbf_g = model.mlp_rbf_g(reference_rbf(model.rbf_g, dist_g))
    if not cfg.local_plex:  # the global plex alone: every fusion weight is 1
        node_out, zs = 0, {"g": [], "l": []}
        for glob in model.global_layer:
            x, o, _, z = reference_global(glob, x, rbf_g, eg)
            node_out, _ = node_out + o, zs["g"].append(z)
        return dict(node_out=node_out, alpha=[], z=zs, rbf_g=rbf_g, rbf_l=None, eg=eg, el=el,
                    pos=pos, batch=batch, num_graphs=num_graphs)
    kj, ji, j2i, ji1 = reference_triplets(el, cfg.reference_compat)
    two, one = reference_angles(pos, el, kj, ji, j2i, ji1, cfg.reference_compat)
    rbf_l = model.mlp_rbf_l(reference_rbf(model.rbf_l, dist_l))
    small = isinstance(model, PAMNetS)
    if small:
        sbf = model.mlp_sbf(reference_sbf(model.sbf, dist_l, one, j2i))
        idx, idx_scatter = j2i, ji1
    else:
        sbf2 = model.mlp_sbf2(reference_sbf(model.sbf, dist_l, two, kj))
        sbf1 = model.mlp_sbf1(reference_sbf(model.sbf, dist_l, one, j2i))
        sbf = torch.cat([sbf2, sbf1])
        idx, idx_scatter = torch.cat([kj, j2i]), torch.cat([ji, ji1])
    outs, atts, zs = {"g": [], "l": []}, {"g": [], "l": []}, {"g": [], "l": []}
    for glob, loc in zip(model.global_layer, model.local_layer):
        x, o, a, z = reference_global(glob, x, rbf_g, eg)
        outs["g"].append(o), atts["g"].append(a), zs["g"].append(z)
        mlp_nb = loc.mlp_m_jj if small else loc.mlp_m_kj
        x, o, a, z = reference_local(loc, x, rbf_l, sbf, idx, idx_scatter, el, mlp_nb)
        outs["l"].append(o), atts["l"].append(a), zs["l"].append(z)
    node_out = 0
    alphas = []
    for t in range(len(outs["g"])):
        score = F.leaky_relu(torch.cat([atts["g"][t], atts["l"][t]], dim=-1), 0.2)
        w = torch.softmax(score, dim=-1)
        alphas.append(w)
        node_out = node_out + outs["g"][t] * w[:, :1] + outs["l"][t] * w[:, 1:]
    return dict(node_out=node_out, alpha=alphas, z=zs, rbf_g=rbf_g, rbf_l=rbf_l, eg=eg, el=el,
                pos=pos, batch=batch, num_graphs=num_graphs)


def _pool(x, batch, num_graphs, mean=False):
    out = x.new_zeros(num_graphs, x.size(-1)).index_add_(0, batch, x)
    if mean:
        out = out / torch.bincount(batch, minlength=num_graphs).clamp(min=1).to(x.dtype).unsqueeze(-1)
    return out


def reference_dipole(model, data, state=None) -> Tensor:
    """Dipole vectors ``[num_graphs, 3]`` of the model's :class:`~.heads.DipoleHead`, computed plainly."""
    s = state if state is not None else reference_encode(model, data)
    head = model.dipole_head
    pos, batch, G = s["pos"], s["batch"], s["num_graphs"]
    mu_nodes = torch.zeros_like(pos)
    q = 0
    for p, lin, phi, edges, rbf in (("g", head.lin_g, head.phi_g, s["eg"], s["rbf_g"]),
                                    ("l", head.lin_l, head.phi_l, s["el"], s["rbf_l"])):
        col = 0 if p == "g" else 1
        weight = sum(lin(z) * a[:, col:col + 1] for z, a in zip(s["z"][p], s["alpha"]))  # [N, c]
        src, dst = edges
        nu = torch.zeros_like(pos).index_add_(0, dst, phi(rbf) * (pos[dst] - pos[src]))
        mu_nodes = mu_nodes + weight[:, :1] * nu
        if head.charges:
            q = q + weight[:, 1:]
    if head.charges:
        q = q - _pool(q, batch, G, mean=True)[batch]
        mu_nodes = mu_nodes + q * (pos - _pool(pos, batch, G, mean=True)[batch])
    return _pool(mu_nodes, batch, G)


def reference_forward(model, data) -> Tensor:
    """What ``model(data)`` computes, unfused: ``[num_graphs, out_dim]``."""
    s = reference_encode(model, data)
    if model.dipole_head is not None:
        return reference_dipole(model, data, s).norm(dim=-1, keepdim=True)
    return _pool(s["node_out"], s["batch"], s["num_graphs"], mean=model.config.readout == "mean")
