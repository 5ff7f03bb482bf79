"""Low-rank factorisation of Linear and Conv2d layers (SVD, Tucker-2, CP) — the ``low_rank`` step."""
from .config import LowRank
from .factor import factorise
from .ranks import energy_rank, vbmf_rank
from .step import low_rank

__all__ = ["LowRank", "energy_rank", "factorise", "low_rank", "vbmf_rank"]
