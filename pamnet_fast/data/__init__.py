"""Datasets for pamnet-fast."""
from .cache import CacheWarning, default_cache_dir
from .qm9 import (ATOMREF_HARTREE, HARTREE_TO_MEV, NUM_MOLECULES, QM9, SPLIT_SIZES, TARGET_UNITS,
                  TARGETS, qm9pack_data_dir, split_indices, target_index)

__all__ = ["QM9", "TARGETS", "TARGET_UNITS", "ATOMREF_HARTREE", "HARTREE_TO_MEV", "NUM_MOLECULES",
           "SPLIT_SIZES", "split_indices", "target_index", "qm9pack_data_dir", "CacheWarning",
           "default_cache_dir"]
