"""Text generation: contrastive search decoding (SimCTG / "Contrastive Search Is What You Need")."""

from .contrastive_search import (
    ContrastiveSearchOutput,
    contrastive_scores,
    contrastive_search,
    contrastive_search_decoding,
    custom_generate_path,
    degeneration_penalty,
)

__all__ = [
    "ContrastiveSearchOutput",
    "contrastive_scores",
    "contrastive_search",
    "contrastive_search_decoding",
    "custom_generate_path",
    "degeneration_penalty",
]
