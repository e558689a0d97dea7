"""Hyper-parameters of PhysChem and its presets (the authors' per-dataset configurations)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

from ..config_dict import config_from_dict

MODES = ("physchem", "physchem-rdkit", "physnet", "chemnet", "chemnet-rdkit", "chemnet-real")
"""Training modes. ``physchem``: conformations learned by PhysNet, supervised by ``data.pos`` (the real
geometry on QM9; an RDKit conformer on MoleculeNet sets, which have none). ``physchem-rdkit``: the same,
supervised by ``data.rdkit_pos``. ``physnet``: PhysNet alone (ChemNet off; the readout sees the
initial atom states). ``chemnet``: ChemNet alone, without geometry. ``chemnet-rdkit`` /
``chemnet-real``: ChemNet on the fixed RDKit (``data.rdkit_pos``) or real (``data.pos``) conformation."""


@dataclass
class PhysChemConfig:
    """PhysChem hyper-parameters; names follow the authors' config (``HV_DIM`` -> ``hv_dim`` ...).

    ``num_blocks`` (``N_LAYER``): PhysNet/ChemNet blocks; ``steps`` (``N_ITERATION``): PhysNet steps per
    block; ``hops`` (``N_HOP``): ChemNet layers per block; ``readout_iterations`` (``N_GLOBAL``).
    ``dynamics``: ``"newton"`` (explicit forces) or ``"hamilton"`` (HamNet-style energies, forces by
    autograd; ``dissipation`` damps the momenta). ``pair_forces``: ``"graph"`` (pair list: all pairs of
    a molecule, or those within ``pair_cutoff`` of each other via ``ops.radius_graph``) or ``"dense"``
    (per-molecule [N_max, N_max] blocks, all pairs). ``conf_loss``: ``"conn"`` (Conn-k, k =
    ``conn_k``, the 1.6^i weighting over the intermediate conformations) or ``"kabsch"`` (Kabsch-RMSD
    of the same conformations, same weights). ``lam``: the weight of the conformation loss.
    """
    atom_dim: int = 34
    bond_dim: int = 10
    hv_dim: int = 128
    he_dim: int = 64
    hm_dim: int = 256
    mv_dim: int = 128
    me_dim: int = 64
    mm_dim: int = 256
    gcn_hidden: int = 128
    gcn_out: int = 128
    lstm_layers: int = 2
    lstm_out: int = 128
    num_blocks: int = 2
    steps: int = 4
    hops: int = 1
    readout_iterations: int = 2
    tau: float = 0.25
    force_hidden: int = 32
    num_rbf: int = 16
    rbf_max: float = 8.0
    num_angle: int = 8
    dropout: float = 0.0
    out_dim: int = 1
    mode: str = "physchem"
    dynamics: str = "newton"
    dissipation: float = 0.0
    pair_forces: str = "graph"
    pair_cutoff: Optional[float] = None
    conf_loss: str = "conn"
    conn_k: int = 3
    conn_weight: float = 1.6
    lam: float = 100.0

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"PhysChemConfig: unknown mode {self.mode!r}; valid: {', '.join(MODES)}")
        if self.dynamics not in ("newton", "hamilton"):
            raise ValueError(f"PhysChemConfig: dynamics must be 'newton' or 'hamilton', got {self.dynamics!r}")
        if self.pair_forces not in ("graph", "dense"):
            raise ValueError(f"PhysChemConfig: pair_forces must be 'graph' or 'dense', got {self.pair_forces!r}")
        if self.pair_forces == "dense" and self.pair_cutoff is not None:
            raise ValueError("PhysChemConfig: pair_cutoff needs pair_forces='graph'")
        if self.conf_loss not in ("conn", "kabsch"):
            raise ValueError(f"PhysChemConfig: conf_loss must be 'conn' or 'kabsch', got {self.conf_loss!r}")
        for name in ("num_blocks", "steps", "hops", "readout_iterations", "out_dim", "conn_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"PhysChemConfig: {name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, d: dict) -> "PhysChemConfig":
        return config_from_dict(cls, d)

    # ------------------------------------------------------------------ presets (authors' train/config.py)
    @classmethod
    def qm9(cls, **kw) -> "PhysChemConfig":
        """QM9: 12 targets, real geometries, lambda 100, dropout 0.5."""
        return replace(cls(out_dim=12, dropout=0.5, lam=100.0), **kw)

    @classmethod
    def esol(cls, **kw) -> "PhysChemConfig":
        return replace(cls(hv_dim=160, he_dim=160, hm_dim=160, mv_dim=160, me_dim=160, mm_dim=160,
                           dropout=0.2, lam=0.1), **kw)

    @classmethod
    def freesolv(cls, **kw) -> "PhysChemConfig":
        return replace(cls(hv_dim=120, he_dim=120, hm_dim=120, mv_dim=120, me_dim=120, mm_dim=120,
                           dropout=0.2, lam=0.1), **kw)

    @classmethod
    def lipop(cls, **kw) -> "PhysChemConfig":
        return replace(cls(hv_dim=256, he_dim=256, hm_dim=256, mv_dim=256, me_dim=256, mm_dim=256,
                           steps=1, dropout=0.2, lam=0.1), **kw)

    @classmethod
    def preset(cls, dataset: str, **kw) -> "PhysChemConfig":
        table = {"qm9-physchem": cls.qm9, "qm9": cls.qm9, "esol": cls.esol, "freesolv": cls.freesolv,
                 "lipop": cls.lipop}
        return table.get(dataset, cls)(**kw)
