"""Synthetic phantoms: determinism, organs present, contrast, BTCV layout through the loaders."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agcl.data import build_cohort, discover_btcv, load_case, load_datalist
from agcl.data.synthetic import make_phantom, write_btcv_like

SMALL = {"shape": (64, 64, 20), "spacing": (5.5, 5.5, 10.0)}


def test_reproducible_per_seed_and_different_across_seeds():
    a, la = make_phantom(5, **SMALL)
    b, lb = make_phantom(5, **SMALL)
    c, lc = make_phantom(6, **SMALL)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(la, lc)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_every_organ_present_at_default_grid(seed):
    img, lab = make_phantom(seed)
    assert img.shape == lab.shape == (128, 128, 40)
    assert set(np.unique(lab).tolist()) == set(range(14))
    assert np.isfinite(img).all() and img.dtype == np.float32


def test_contrast_enhances_vessels_and_parenchyma_same_anatomy():
    c, lab_c = make_phantom(1, "contrast")
    n, lab_n = make_phantom(1, "non-contrast")
    np.testing.assert_array_equal(lab_c, lab_n)  # anatomy depends on the seed only
    for organ in (1, 6, 8, 9, 10):  # spleen, liver, aorta, IVC, portal vein
        m = lab_c == organ
        assert c[m].mean() > n[m].mean() + 30, organ


def test_not_solved_by_a_threshold():
    # neighbouring organs' intensity ranges overlap: the best single threshold between liver
    # and spleen / kidney / IVC misclassifies a clear fraction of voxels
    img, lab = make_phantom(2, "non-contrast")
    liver = img[lab == 6]
    for other in (1, 11, 9):
        o = img[lab == other]
        best = min(((liver < t).mean() + (o >= t).mean()) / 2 for t in np.linspace(-50, 150, 201))
        best = min(
            best,
            min(((liver >= t).mean() + (o < t).mean()) / 2 for t in np.linspace(-50, 150, 201)),
        )
        assert best > 0.1, other
    # organs touch: liver voxels with a 6-neighbour in another organ exist
    from scipy import ndimage

    border = ndimage.binary_dilation(lab == 6) & (lab != 6) & (lab > 0)
    assert border.sum() > 50


def test_issue_spacing_works():
    img, lab = make_phantom(0, "contrast", shape=(64, 64, 12), spacing=(0.8, 0.8, 2.5))
    assert img.shape == (64, 64, 12) and np.isfinite(img).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="modality"):
        make_phantom(0, "mri", **SMALL)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="spacing"):
        make_phantom(0, shape=(8, 8, 8), spacing=(1, 0, 1))
    with pytest.raises(ValueError, match="n_cases"):
        write_btcv_like("unused", 0)
    with pytest.raises(ValueError, match="modalities"):
        write_btcv_like("unused", 1, modalities=("contrast", "contrast"))


def test_written_layout_goes_through_the_loaders(tmp_path):
    out = write_btcv_like(tmp_path, 2, seed=3, **SMALL)
    assert sorted(out) == ["contrast", "non-contrast"]
    for mod, cases in out.items():
        found = discover_btcv(tmp_path / mod, modality=mod)
        assert found == cases
        assert (
            load_datalist(tmp_path / mod / "dataset.json", modality=mod)[0].image_path
            == cases[0].image_path
        )
        image, label = load_case(cases[0])
        ref_img, ref_lab = make_phantom(_seed(3, mod, 1), mod, **SMALL)
        np.testing.assert_array_equal(label.array, ref_lab)  # LPS on disk, RAS after loading
        np.testing.assert_allclose(image.array, np.clip(np.rint(ref_img), -1024, 3071))
        assert image.spacing == SMALL["spacing"]
    assert (
        json.loads((tmp_path / "contrast" / "dataset.json").read_text())["modality"] == "contrast"
    )
    cohort = build_cohort(out)
    assert cohort.modality_ids == (0, 0, 1, 1)
    # different subjects per modality and per case
    a = load_case(out["contrast"][0])[1].array
    assert not np.array_equal(a, load_case(out["non-contrast"][0])[1].array)
    assert not np.array_equal(a, load_case(out["contrast"][1])[1].array)


def _seed(seed, mod, i):
    return int(
        np.random.SeedSequence([seed, ("contrast", "non-contrast").index(mod), i]).generate_state(
            1
        )[0]
    )
