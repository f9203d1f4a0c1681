"""Batch samplers: DDP sharding, exact coverage at test time, temporal order and sequence starts for streaming."""

from __future__ import annotations

import itertools

import pytest

from ftkd.data.samplers import SequentialBatchSampler, ShardedBatchSampler

SCENE_LENGTHS = (5, 3, 4, 1, 2, 6)


def _scene_ranges(lengths=SCENE_LENGTHS) -> list[range]:
    starts = list(itertools.accumulate((0, *lengths)))
    return [range(a, b) for a, b in zip(starts, starts[1:])]


def _scene_of(i: int) -> int:
    return next(s for s, r in enumerate(_scene_ranges()) if i in r)


def test_sharded_test_order_covers_every_sample_once():
    batches = [list(ShardedBatchSampler(21, 4, shuffle=False, rank=r, world_size=3)) for r in range(3)]
    indices = sorted(k.index for rank in batches for batch in rank for k in batch)
    assert indices == list(range(21))


def test_sharded_training_steps_do_not_depend_on_world_size():
    """Global step s holds the same samples on 1 process with batch 6 as on 3 processes with batch 2."""
    single = ShardedBatchSampler(20, 6, shuffle=True, seed=5, rank=0, world_size=1)
    shards = [ShardedBatchSampler(20, 2, shuffle=True, seed=5, rank=r, world_size=3) for r in range(3)]
    for sampler in (single, *shards):
        sampler.set_epoch(2)
    per_rank = [list(s) for s in shards]
    assert len(set(map(len, per_rank))) == 1 == len({len(per_rank[0]), len(single)})
    for step, batch in enumerate(single):
        assert sorted(k.index for k in batch) == sorted(k.index for rank in per_rank for k in rank[step])
    epoch2 = [k.index for b in single for k in b]
    single.set_epoch(3)
    assert [k.index for b in single for k in b] != epoch2
    single.set_epoch(2, start_batch=2)
    assert [k.index for b in single for k in b] == epoch2[12:] and len(single) == 2


def _walk_slots(batches_per_rank, batch_size):
    """Per (rank, slot) the stream of keys it produced."""
    streams = {}
    for rank, batches in enumerate(batches_per_rank):
        for batch in batches:
            for b, key in enumerate(batch):
                streams.setdefault((rank, b), []).append(key)
    return streams


@pytest.mark.parametrize("world_size,batch_size", [(1, 1), (1, 3), (2, 2)])
def test_sequential_test_visits_every_frame_once_in_order(world_size, batch_size):
    samplers = [
        SequentialBatchSampler(_scene_ranges(), batch_size, train=False, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    batches = [list(s) for s in samplers]
    indices = sorted(k.index for rank in batches for batch in rank for k in batch)
    assert indices == list(range(sum(SCENE_LENGTHS)))
    for rank in batches:  # the batch only shrinks, from its end
        sizes = [len(b) for b in rank]
        assert sizes == sorted(sizes, reverse=True) and sizes[0] <= batch_size
    for stream in _walk_slots(batches, batch_size).values():
        for previous, key in zip([None, *stream], stream):
            new_scene = previous is None or _scene_of(previous.index) != _scene_of(key.index)
            assert key.scene_start == new_scene
            if not new_scene:
                assert key.index == previous.index + 1  # temporal order within a scene


def test_sequential_training_slots_walk_their_sequences():
    world_size, batch_size = 2, 2
    samplers = [
        SequentialBatchSampler(_scene_ranges(), batch_size, train=True, seed=1, rank=r, world_size=world_size,
                               sequence_splits=2)
        for r in range(world_size)
    ]
    sequences = {tuple(s) for s in samplers[0].sequences}
    assert (0, 1, 2) in sequences and (3, 4) in sequences and (7,) in sequences  # scenes of 5 and 3 cut in 3 + 2, 2 + 1
    for sampler in samplers:
        sampler.set_epoch(4)
    batches = [list(s) for s in samplers]
    assert len(batches[0]) == len(batches[1]) == -(-sum(SCENE_LENGTHS) // 4)
    for stream in _walk_slots(batches, batch_size).values():
        assert stream[0].scene_start
        run = [stream[0].index]
        for key in stream[1:]:
            if key.scene_start:
                assert tuple(run) in sequences, "a slot must finish its sequence before starting another"
                run = [key.index]
            else:
                assert key.index == run[-1] + 1
                run.append(key.index)
    # the same global slots on one process with the global batch
    single = SequentialBatchSampler(_scene_ranges(), 4, train=True, seed=1, rank=0, world_size=1, sequence_splits=2)
    single.set_epoch(4)
    for step, batch in enumerate(single):
        assert batch == batches[0][step] + batches[1][step]
    resumed = SequentialBatchSampler(_scene_ranges(), 4, train=True, seed=1, rank=0, world_size=1, sequence_splits=2)
    resumed.set_epoch(4, start_batch=3)
    assert list(resumed) == list(single)[3:]
