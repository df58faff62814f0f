"""Synthetic 2-D scenes: deterministic, all classes, void borders, VOC layout round trip."""

import numpy as np
import pytest
from scipy import ndimage

from agcl.data.synthetic2d import SYNTHETIC2D_CLASSES, make_scene, make_scenes


def test_scenes_are_deterministic_and_differ_between_indices():
    a, b = make_scene(3, 5, size=40), make_scene(3, 5, size=40)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(make_scene(3, 6, size=40)[0], a[0])
    assert not np.array_equal(make_scene(4, 5, size=40)[0], a[0])


def test_every_class_appears_and_void_lines_the_outlines():
    scenes = make_scenes(30, 0, size=48)
    seen = set().union(*(set(np.unique(m).tolist()) for _, m in scenes))
    assert seen == {0, 1, 2, 3, 4, 255} and len(SYNTHETIC2D_CLASSES) == 5
    for i, (image, m) in enumerate(scenes):
        objects = (m != 0) & (m != 255)
        # no object pixel touches background directly: void separates them
        assert not (ndimage.binary_dilation(m == 0) & objects).any()
        # the same scene without the band: void only replaces pixels at most 1 px from an object
        image0, m0 = make_scene(0, i, size=48, void_width=0)
        np.testing.assert_array_equal(image, image0)
        np.testing.assert_array_equal(m[m != 255], m0[m != 255])
        near = ndimage.binary_dilation(m0 > 0)
        assert (m == 255).any() and near[m == 255].all()


def test_no_void_band_when_width_zero_and_bad_arguments():
    _, m = make_scene(0, 1, size=32, void_width=0)
    assert 255 not in m
    with pytest.raises(ValueError, match="size"):
        make_scene(0, 0, size=8)
    with pytest.raises(ValueError, match="max_objects"):
        make_scene(0, 0, max_objects=0)


def test_write_voc_like_reads_back_through_the_reader(tmp_path):
    pytest.importorskip("PIL")
    from agcl.data.synthetic2d import write_voc_like
    from agcl.data.voc import VOCSegmentation

    devkit = write_voc_like(tmp_path, 3, 2, seed=1, size=32)
    train, val = VOCSegmentation(devkit, "train"), VOCSegmentation(devkit, "val")
    assert (len(train), len(val)) == (3, 2)
    image, mask = val[0]
    ref_image, ref_mask = make_scene(1, 3, size=32)
    np.testing.assert_array_equal(mask, ref_mask)  # PNG is lossless
    assert np.abs(image.astype(int) - ref_image).mean() < 8  # JPEG quality 95
    assert not list(tmp_path.glob(".VOCdevkit.*"))
