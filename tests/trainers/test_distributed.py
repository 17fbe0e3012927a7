"""Exact multi-process training of InfoNCE: plain (chunked forward), cached, FSDP2 and FSDP2 + cache.

With hard negatives, the false-negative mask and a learned temperature (whose gradient lives outside DDP).
"""

import pytest

from .ddp_worker import INFO_NCE
from .distributed_check import assert_distributed_matches_single


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_global_batch(tmp_path, tiny_tokenizer):
    assert_distributed_matches_single(tmp_path, tiny_tokenizer, INFO_NCE)
