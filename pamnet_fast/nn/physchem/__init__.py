"""PhysChem (Yang et al., NeurIPS 2021) on pamnet-fast's ops: initializer, PhysNet, ChemNet, readout,
conformation losses and the model."""
from .config import MODES, PhysChemConfig
from .model import PhysChem
from .losses import conn_loss, conn_pairs, distance_rmse, hierarchical_conn_loss, kabsch_rmsd

__all__ = ["PhysChem", "PhysChemConfig", "MODES", "conn_pairs", "conn_loss", "hierarchical_conn_loss",
           "kabsch_rmsd", "distance_rmse"]
