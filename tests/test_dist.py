"""presrm.dist without processes: shards, model groups (vLLM tensor parallel under accelerate launch), joins.

The collective paths run in tests/test_accelerate.py (HF engine) and tests/test_accelerate_vllm.py (vLLM).
"""

import pytest

from presrm import dist


@pytest.fixture()
def ranks(monkeypatch):
    """Pretend to be one rank of ``world`` processes, with ``group`` ranks per model; restored afterwards."""
    def pretend(rank: int, world: int, group: int = 1) -> None:
        monkeypatch.setenv("WORLD_SIZE", str(world))
        monkeypatch.setenv("RANK", str(rank))
        dist.set_group_size(group)

    yield pretend
    monkeypatch.delenv("WORLD_SIZE")
    dist.set_group_size(1)


def test_one_process_is_a_no_op():
    items = list(range(5))
    assert dist.shard(items) == items and dist.gather(items) == items and dist.broadcast("x") == "x"


def test_shards_cover_every_item_once(ranks):
    items = list(range(7))
    blocks = []
    for r in range(3):
        ranks(r, 3)
        blocks.append(dist.shard(items))
    assert blocks == [[0, 1, 2], [3, 4, 5], [6]] and dist.joined(blocks, group_size=1) == items


def test_a_model_group_shares_one_block(ranks):
    """4 ranks, 2 per model (tensor parallel 2): ranks 0-1 take the first half, 2-3 the second; joined once."""
    items = list(range(5))
    blocks = []
    for r in range(4):
        ranks(r, 4, group=2)
        blocks.append(dist.shard(items))
    assert blocks == [[0, 1, 2], [0, 1, 2], [3, 4], [3, 4]]
    assert dist.joined(blocks) == items


def test_a_group_size_must_divide_the_processes(ranks):
    ranks(0, 4)
    with pytest.raises(ValueError, match="do not divide the 4 processes"):
        dist.set_group_size(3)
