"""AttentionPatchDataset over synthetic BTCV files, with DataLoader workers."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from agcl import AttentionPatchDataset, AttentionPatchSampler
from agcl.data import build_cohort, load_case, preprocess_ct
from agcl.data.synthetic import write_btcv_like
from agcl.sampling import PatchBatch, collate_patch_batches, minibatches

SMALL = {"shape": (48, 48, 10), "spacing": (7.3, 7.3, 20.0)}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("btcv")
    return build_cohort(write_btcv_like(root, 2, seed=1, **SMALL))


def _sampler():
    return AttentionPatchSampler(patch_size=16, patches_per_slice=2)


def test_items_match_direct_sampling(cohort):
    ds = AttentionPatchDataset(cohort, _sampler(), seed=4)
    assert len(ds) == 4
    b = ds[2]
    image, label = load_case(cohort.cases[2])
    img = preprocess_ct(image.array)
    assert b.modality.unique().tolist() == [1] and b.volume_index.unique().tolist() == [2]
    for p in range(0, len(b), 7):  # patches are cut from the preprocessed image
        z, (i, j) = int(b.slice_index[p]), b.centre[p].tolist()
        assert label.array[i, j, z] == b.target[p]
        assert b.image[p, 0, 8, 8] == pytest.approx(float(img[i, j, z]))
    again = ds[2]
    assert torch.equal(b.centre, again.centre)  # same (seed, epoch, index), same patches
    ds.set_epoch(1)
    assert not torch.equal(b.centre, ds[2].centre)


def test_dataloader_with_workers_equals_in_process(cohort):
    ds = AttentionPatchDataset(cohort, _sampler(), seed=0, cache_mb=1)
    kw = {"batch_size": 2, "collate_fn": collate_patch_batches}
    serial = list(DataLoader(ds, num_workers=0, **kw))
    parallel = list(DataLoader(ds, num_workers=2, **kw))
    assert len(serial) == len(parallel) == 2
    for a, b in zip(serial, parallel):
        assert torch.equal(a.image, b.image) and torch.equal(a.target, b.target)
    assert set(serial[1].modality.tolist()) == {1}
    cache = ds.volumes.cache  # prepared cases are kept within the byte bound
    assert 0 < cache.nbytes <= cache.max_bytes == 2**20


def test_attention_from_files_and_arrays(cohort, tmp_path):
    case = cohort.cases[0]
    lab = load_case(case)[1].array
    only_liver = np.where(lab == 6, 6, 0).astype(np.int16)
    # an attention file in the scan's own (LPS) storage order, as a coarse model would save it
    ref = nib.load(str(case.label_path))
    nib.save(
        nib.Nifti1Image(only_liver[::-1, ::-1, :].astype(np.uint8), ref.affine),
        str(tmp_path / "att.nii.gz"),
    )
    for att in (tmp_path / "att.nii.gz", only_liver):
        b = AttentionPatchDataset([case], _sampler(), attention=[att])[0]
        assert set(b.target.tolist()) == {6}
        assert b.label is not None and torch.equal(
            b.label, b.attention
        )  # liver GT == liver attention


def test_in_memory_volumes_and_minibatches():
    lab = np.zeros((10, 10, 4), np.int16)
    lab[2:6, 2:6, 1:3] = 3
    ds = AttentionPatchDataset(
        [{"image": np.zeros((10, 10, 4)), "label": lab, "modality": 1}], _sampler(), targets=[3]
    )
    b = ds[0]
    assert len(b) == 4 and b.modality.tolist() == [1] * 4
    parts = list(minibatches(b, 3, generator=torch.Generator().manual_seed(0)))
    assert [len(p) for p in parts] == [3, 1]
    assert sorted(torch.cat([p.slice_index for p in parts]).tolist()) == sorted(
        b.slice_index.tolist()
    )
    assert [len(p) for p in minibatches(b, 3, drop_last=True)] == [3]


def test_errors(cohort):
    with pytest.raises(TypeError, match="sampler"):
        AttentionPatchDataset(cohort, object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="attention must have one entry per case"):
        AttentionPatchDataset(cohort, _sampler(), attention=["a"])
    with pytest.raises(ValueError, match="modality_ids"):
        AttentionPatchDataset(cohort, _sampler(), modality_ids=[0])
    with pytest.raises(ValueError, match="cache_mb"):
        AttentionPatchDataset(cohort, _sampler(), cache_mb=-1)
    with pytest.raises(ValueError, match="cases"):
        AttentionPatchDataset([], _sampler())
    ds = AttentionPatchDataset([{"image": np.zeros((4, 4, 4))}], _sampler())
    with pytest.raises(ValueError, match="no label and no attention"):
        ds[0]
    with pytest.raises(IndexError, match="index"):
        ds[3]
    with pytest.raises(ValueError, match="batch_size"):
        list(minibatches(PatchBatch.empty(4), 0))


def test_it_reads_the_pipelines_volumes_and_loads_cases_through_prepared_cases(cohort):
    """One data path: the dataset over cases is TrainingVolumes over PreparedCases (with a
    VolumeCache), and it takes such volumes (as PatchStream does) directly."""
    from agcl.data import PreparedCases, TrainingVolumes, VolumeCache
    from agcl.sampling import CaseAttention

    ds = AttentionPatchDataset(cohort, _sampler(), seed=4)
    assert isinstance(ds.volumes, TrainingVolumes) and isinstance(ds.volumes.cases, PreparedCases)
    prepared = PreparedCases(list(cohort.cases), list(cohort.modality_ids))
    vols = TrainingVolumes(prepared, CaseAttention([1, 6], 0.0), cache=VolumeCache(2**26))
    b = AttentionPatchDataset(vols, _sampler(), seed=4)[2]
    assert set(b.target.tolist()) <= {1, 6} and b.volume_index.unique().tolist() == [2]
    with pytest.raises(ValueError, match="come with the volumes"):
        AttentionPatchDataset(vols, _sampler(), modality_ids=[0, 0, 1, 1])
