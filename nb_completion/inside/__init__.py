"""Inside the model: the logit lens, attention weights and several futures from one point, on
the model loaded in this kernel (each costs about one forward pass, none slows generation)."""

from .attention import Attention, attention
from .futures import Futures, futures
from .lens import LogitLens, logit_lens

__all__ = ["logit_lens", "LogitLens", "attention", "Attention", "futures", "Futures"]
