"""Contrastive search for ``model.generate``, in the layout of a Hub ``custom_generate`` repository.

    from hf_contrastive.generation import custom_generate_path

    model.generate(**inputs, custom_generate=custom_generate_path(), trust_remote_code=True,
                   penalty_alpha=0.6, top_k=5, max_new_tokens=128)

``generate`` copies this file into its modules cache and calls ``generate(model, ...)``; the decoding loop itself
lives in the installed ``hf_contrastive`` (``hf_contrastive.generation.contrastive_search``).
"""

from transformers import GenerationMixin

from hf_contrastive.generation.contrastive_search import contrastive_search_decoding


def generate(model, *args, **kwargs):
    """``model.generate`` with contrastive search as its decoding loop (``penalty_alpha``, ``top_k`` as usual)."""
    return GenerationMixin.generate(model, *args, custom_generate=contrastive_search_decoding, **kwargs)
