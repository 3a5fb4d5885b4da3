import torch
from torch.utils.data import Dataset

from functions.data_loading import EpochSampler, SeededItems, item_seed


class RandomItems(Dataset):
    def __len__(self):
        return 37

    def __getitem__(self, index):
        return index, torch.rand(1).item()


def drawn(batch_size, rank, world, epoch=0, skip=0, max_batches=0):
    sampler = EpochSampler(37, batch_size, seed=5, rank=rank, world_size=world, max_batches=max_batches)
    sampler.set_epoch(epoch, skip)
    data = SeededItems(RandomItems())
    return [data[key] for key in sampler]


def batches(items, batch_size):
    return [items[i : i + batch_size] for i in range(0, len(items), batch_size)]


def test_two_processes_see_the_global_batches_of_one():
    single = batches(drawn(6, 0, 1), 6)
    ranks = [batches(drawn(3, rank, 2), 3) for rank in range(2)]
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 6
    for step, global_batch in enumerate(single):
        assert sorted(global_batch) == sorted(ranks[0][step] + ranks[1][step])


def test_items_depend_on_epoch_and_index_only():
    first, again = drawn(4, 0, 1, epoch=3), drawn(4, 0, 1, epoch=3)
    assert first == again
    assert drawn(4, 0, 1, epoch=4) != first
    assert len({index for index, _ in first}) == len(first) == 36


def test_skipping_batches_resumes_the_same_sequence():
    full = drawn(4, 0, 1, epoch=2)
    assert drawn(4, 0, 1, epoch=2, skip=3) == full[12:]


def test_max_batches_caps_an_epoch():
    assert len(drawn(4, 0, 1, max_batches=2)) == 8


def test_item_seed_differs_across_epochs_and_indices():
    seeds = {item_seed(0, epoch, index) for epoch in range(5) for index in range(100)}
    assert len(seeds) == 500
