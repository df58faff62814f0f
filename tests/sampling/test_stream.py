"""PatchStream: every planned patch exactly once, bounded pieces, mixing, workers, ranks."""

from __future__ import annotations

import pickle
from collections import Counter

import numpy as np
import pytest
import torch

from agcl import AttentionPatchSampler, PatchStream
from agcl.sampling import attention_from_labels


def _volumes(n=6, shape=(24, 24, 6), seed=0, sparse=False):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        lab = np.zeros(shape, np.uint8)
        lab[2:9, 3:10, :] = 1
        lab[12:20, 12:22, 1 + i % 3 : 5] = 6
        if i % 2:
            lab[14:18, 2:6, 2:4] = 7
        att = (
            attention_from_labels(lab, [1, 6, 7], margin_mm=0.0, spacing=(1, 1, 1))
            if sparse
            else lab
        )
        out.append(
            {
                "image": rng.random(shape, dtype=np.float32),
                "attention": att,
                "label": lab,
                "modality": i % 2,
            }
        )
    return out


def _key(b):
    return Counter(
        zip(
            b.volume_index.tolist(),
            b.target.tolist(),
            b.slice_index.tolist(),
            map(tuple, b.centre.tolist()),
        )
    )


def _stream(vols, **kw):
    args = {
        "batch_size": 8,
        "with_label": True,
        "buffer_size": 32,
        "shards": 3,
        "streams": 2,
        "chunk_size": 5,
    }
    args.update(kw)
    return PatchStream(vols, AttentionPatchSampler(patch_size=8, patches_per_slice=3), **args)


def test_every_planned_patch_once_with_its_own_windows():
    vols = _volumes()
    stream = _stream(vols)
    stream.set_epoch(3)
    batches = list(stream)
    seen = Counter()
    for b in batches:
        seen += _key(b)
        assert len(b) <= 8
        # each patch's label is its own organ's mask, cut at its centre: the centre pixel is inside
        assert bool((b.label[:, 0, 4, 4] == 1).all()) and torch.equal(b.label, b.attention)
        for j in range(len(b)):
            v, t, s = int(b.volume_index[j]), int(b.target[j]), int(b.slice_index[j])
            ci, cj = b.centre[j].tolist()
            want = vols[v]["image"][ci - 4 : ci + 4, cj - 4 : cj + 4, s]
            if want.shape == (8, 8):
                assert np.array_equal(b.image[j, 0].numpy(), want)
            assert vols[v]["label"][ci, cj, s] == t
    # the same patches as sampling each volume whole, with the stream's per-volume generators
    expected = Counter()
    for v in range(len(vols)):
        from agcl.sampling.stream import _generator

        c, t = stream.sampler.plan(
            vols[v]["attention"], vols[v]["image"].shape, generator=_generator(0, 3, v)
        )
        expected += Counter(
            zip([v] * len(t), t.tolist(), c[:, 0].tolist(), map(tuple, c[:, 1:].tolist()))
        )
    assert seen == expected
    assert sum(len(b) for b in batches) == sum(expected.values())


def test_sparse_attention_gives_the_same_patches_as_the_label_map():
    dense = list(_stream(_volumes()))
    sparse = list(_stream(_volumes(sparse=True)))

    # per organ and slice the same counts (the draws differ: per-organ generators for sparse)
    def count(bs):
        return Counter(
            (v, t, s)
            for b in bs
            for v, t, s in zip(b.volume_index.tolist(), b.target.tolist(), b.slice_index.tolist())
        )

    assert count(dense) == count(sparse)
    for b in sparse:
        assert bool((b.attention[:, 0, 4, 4] == 1).all())


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_same_batches_for_any_number_of_workers(workers):
    vols = _volumes(7)  # shards of unequal length
    stream = _stream(vols)
    stream.set_epoch(1)
    ref = list(stream)
    got = list(stream.loader(num_workers=workers))
    assert len(got) == len(ref)
    for a, b in zip(ref, got):
        for name in (
            "image",
            "attention",
            "label",
            "target",
            "modality",
            "volume_index",
            "slice_index",
            "centre",
        ):
            assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_pin_memory_path_keeps_the_batches():
    stream = _stream(_volumes(3))
    ref = list(stream)
    got = list(stream.loader(num_workers=0, pin_memory=torch.cuda.is_available()))
    assert [len(b) for b in got] == [len(b) for b in ref]


def test_epochs_differ_and_repeat():
    stream = _stream(_volumes())
    stream.set_epoch(1)
    a = list(stream)
    b = list(stream)
    stream.set_epoch(2)
    c = list(stream)
    assert all(torch.equal(x.image, y.image) for x, y in zip(a, b))
    assert not torch.equal(a[0].image, c[0].image)


def test_volume_order_changes_between_epochs_and_repeats_within_one():
    # the order volumes are read in (not only the patches cut from them) is seeded with the
    # epoch: with one shard streaming one volume at a time it is the order of the batches
    # (issue 26, row 33)
    stream = _stream(_volumes(8), shards=1, streams=1, buffer_size=8, batch_size=8)

    def read_order(epoch):
        stream.set_epoch(epoch)
        order = [v for b in stream for v in dict.fromkeys(b.volume_index.tolist())]
        return list(dict.fromkeys(order)), stream.rank_volumes()

    orders = [read_order(e) for e in (0, 1, 2, 0)]
    assert all(seen == planned and sorted(seen) == list(range(8)) for seen, planned in orders)
    assert orders[3] == orders[0]  # the same epoch: the same order
    assert orders[1][0] != orders[0][0] and orders[2][0] != orders[1][0]


def test_batches_mix_volumes_and_modalities():
    stream = _stream(_volumes(8), shards=1, streams=4, buffer_size=64, batch_size=16)
    batches = [b for b in stream if len(b) == 16]
    assert batches
    assert np.mean([len(set(b.volume_index.tolist())) for b in batches]) >= 3
    assert np.mean([len(set(b.modality.tolist())) for b in batches]) == 2
    assert np.mean([len(set(b.target.tolist())) for b in batches]) >= 2


def test_pieces_are_bounded_and_volumes_read_once_per_epoch():
    vols = _volumes(5)

    class Counting(list):
        reads = Counter()

        def __getitem__(self, i):
            Counting.reads[i] += 1
            return list.__getitem__(self, i)

    stream = _stream(Counting(vols), chunk_size=4)
    cut = stream.sampler.cut
    sizes = []

    def spy(*a, **k):
        out = cut(*a, **k)
        sizes.append(len(out))
        return out

    stream.sampler.cut = spy
    total = sum(len(b) for b in stream)
    assert max(sizes) <= 4 and sum(sizes) == total
    assert dict(Counting.reads) == {i: 1 for i in range(5)}


def test_ranks_split_the_volumes():
    vols = _volumes(7)
    shares = [
        set(
            PatchStream(
                vols,
                AttentionPatchSampler(patch_size=8),
                batch_size=4,
                rank=r,
                world_size=3,
                seed=5,
            ).rank_volumes()
        )
        for r in range(3)
    ]
    assert set.union(*shares) == set(range(7)) and sum(map(len, shares)) == 7
    seen = set()
    for r in range(2):
        s = _stream(vols, rank=r, world_size=2)
        for b in s:
            seen |= set(b.volume_index.tolist())
        assert set().union(*[set(b.volume_index.tolist()) for b in s]) == set(s.rank_volumes())
    assert seen == set(range(7))


def test_drop_last_and_multi_channel_images():
    vols = _volumes(2)
    for v in vols:
        v["image"] = np.stack([v["image"], 1 - v["image"], v["image"] * 2])
    stream = _stream(vols, drop_last=True)
    batches = list(stream)
    assert all(len(b) == 8 for b in batches)
    b = batches[0]
    assert b.image.shape[1:] == (3, 8, 8) and b.inputs().shape[1] == 4
    inside = (
        (b.centre[:, 0] >= 4)
        & (b.centre[:, 0] <= 20)
        & (b.centre[:, 1] >= 4)
        & (b.centre[:, 1] <= 20)
    )
    assert torch.allclose(b.image[inside, 1], 1 - b.image[inside, 0])


def test_bad_arguments_name_themselves():
    vols = _volumes(2)
    sampler = AttentionPatchSampler(patch_size=8)
    with pytest.raises(ValueError, match="buffer_size"):
        PatchStream(vols, sampler, batch_size=16, buffer_size=8)
    with pytest.raises(TypeError, match="sampler"):
        PatchStream(vols, "sampler", batch_size=4)
    with pytest.raises(ValueError, match="volumes"):
        PatchStream([], sampler, batch_size=4)
    with pytest.raises(ValueError, match="rank"):
        PatchStream(vols, sampler, batch_size=4, rank=2, world_size=2)
    with pytest.raises(TypeError, match="volumes\\[0\\]"):
        list(PatchStream([{"image": 1}], sampler, batch_size=4))
    no_label = [dict(v, label=None) for v in vols]
    with pytest.raises(ValueError, match="label"):
        list(PatchStream(no_label, sampler, batch_size=4, with_label=True))
    with pytest.raises(TypeError, match="no length"):
        len(PatchStream(vols, sampler, batch_size=4))


def test_a_pickled_cache_is_empty():
    from agcl.data import VolumeCache

    cache = VolumeCache(10**9)
    cache.get("x", lambda: np.zeros(10**6, np.float32))
    assert len(pickle.loads(pickle.dumps(cache))) == 0


def test_ignore_maps_travel_with_the_labels():
    vols = _volumes(3)
    for v in vols:
        ign = np.zeros(v["label"].shape, bool)
        ign[:, :12] = True  # the left half is void
        v["ignore"] = ign
    batches = list(_stream(vols))
    for b in batches:
        assert b.ignore is not None and b.ignore.dtype == torch.bool
        for j in range(len(b)):
            ci, cj = b.centre[j].tolist()
            cols = torch.arange(cj - 4, cj + 4)
            want = (cols < 12) | (cols >= 24)  # void, or outside the volume
            rows_ok = (torch.arange(ci - 4, ci + 4) >= 0) & (torch.arange(ci - 4, ci + 4) < 24)
            expect = want[None, :] | ~rows_ok[:, None]
            assert torch.equal(b.ignore[j, 0], expect)
    no_label = _stream(vols, with_label=False)
    assert all(b.ignore is None for b in no_label)


def test_graded_attention_keeps_its_values_through_the_buffer():
    vols = _volumes(sparse=True)
    for v in vols:
        v["attention"] = attention_from_labels(
            v["label"], [1, 6, 7], margin_mm=2.0, spacing=(1, 1, 1), channel="probability"
        )
    values = set()
    for b in _stream(vols):
        # 1 on the organ (its label), 0.5 in the margin, 0 outside
        assert torch.equal(b.attention == 1, b.label == 1)
        assert torch.equal(b.attention != 0, b.attention >= 0.5)  # 0 outside, 0.5 or 1 inside
        values |= set(torch.unique(b.attention).tolist())
    assert values == {0.0, 0.5, 1.0}
