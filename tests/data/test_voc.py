"""The VOC-layout reader on a tiny devkit the test writes (JPEG + palette PNG + split files)."""

import numpy as np
import pytest

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from agcl.data.voc import (  # noqa: E402
    VOC_CLASSES,
    VOCSegmentation,
    find_voc_root,
    load_voc_mask,
    read_voc_split,
    save_voc_mask,
    voc_palette,
)


def _devkit(tmp_path, ids_train=("a", "b"), ids_val=("c",)):
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    masks = {}
    for k, name in enumerate((*ids_train, *ids_val)):
        img = np.full((6, 8, 3), 40 * k, np.uint8)
        Image.fromarray(img).save(voc / "JPEGImages" / f"{name}.jpg", quality=95)
        mask = np.zeros((6, 8), np.uint8)
        mask[1:4, 2:6] = 15  # person
        mask[0, :] = 255  # void band
        mask[5, 7] = 1
        pim = Image.fromarray(mask, mode="P")
        pim.putpalette(voc_palette().reshape(-1).tolist())
        pim.save(voc / "SegmentationClass" / f"{name}.png")
        masks[name] = mask
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(ids_train) + "\n\n")
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(ids_val) + "\n")
    return tmp_path / "VOCdevkit", masks


def test_palette_bit_interleaving_matches_known_colours():
    p = voc_palette()
    assert p.shape == (256, 3) and p.dtype == np.uint8
    # a few colours of the published VOC colour map
    assert p[2].tolist() == [0, 128, 0] and p[3].tolist() == [128, 128, 0]
    assert p[8].tolist() == [64, 0, 0] and p[20].tolist() == [0, 64, 128]
    assert len({tuple(c) for c in p.tolist()}) == 256
    assert len(VOC_CLASSES) == 21 and VOC_CLASSES[15] == "person"


def test_reader_returns_images_and_masks_with_void(tmp_path):
    devkit, masks = _devkit(tmp_path)
    ds = VOCSegmentation(devkit, "train")
    assert len(ds) == 2 and ds.ids == ["a", "b"]
    image, mask = ds[1]
    assert image.shape == (6, 8, 3) and image.dtype == np.uint8
    assert abs(int(image.mean()) - 40) <= 2  # JPEG is lossy, a flat image nearly exact
    np.testing.assert_array_equal(mask, masks["b"])
    assert (mask == 255).sum() == 8 and set(np.unique(mask)) == {0, 1, 15, 255}
    # the same devkit found from its VOC2012 folder and from the folder above
    assert find_voc_root(devkit / "VOC2012") == find_voc_root(tmp_path) == devkit / "VOC2012"
    assert VOCSegmentation(tmp_path, "val").ids == ["c"]
    assert ds[-1][1].shape == (6, 8)
    with pytest.raises(IndexError, match="out of range"):
        ds[2]


def test_missing_paths_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="VOC2012"):
        VOCSegmentation(tmp_path / "nowhere")
    devkit, _ = _devkit(tmp_path)
    with pytest.raises(FileNotFoundError, match="test.txt"):
        read_voc_split(devkit, "test")
    (devkit / "VOC2012" / "SegmentationClass" / "b.png").unlink()
    with pytest.raises(FileNotFoundError, match="b.png"):
        VOCSegmentation(devkit, "train")
    with pytest.raises(ValueError, match="split"):
        read_voc_split(devkit, "")


def test_corrupt_mask_names_its_path(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="bad.png"):
        load_voc_mask(bad)


def test_rgb_mask_maps_back_through_the_palette(tmp_path):
    mask = np.array([[0, 1, 255], [15, 20, 0]], np.uint8)
    Image.fromarray(voc_palette()[mask]).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(load_voc_mask(tmp_path / "rgb.png"), mask)
    odd = voc_palette()[mask].copy()
    odd[0, 0] = (1, 2, 3)
    Image.fromarray(odd).save(tmp_path / "odd.png")
    with pytest.raises(ValueError, match="outside the VOC palette"):
        load_voc_mask(tmp_path / "odd.png")


def test_save_voc_mask_round_trips_with_the_palette(tmp_path):
    labels = np.array([[0, 3, 255], [21, 7, 1]], np.int64)
    path = save_voc_mask(tmp_path / "sub" / "pred.png", labels)
    with Image.open(path) as im:
        assert im.mode == "P"
        assert im.getpalette()[:9] == [0, 0, 0, 128, 0, 0, 0, 128, 0]
    np.testing.assert_array_equal(load_voc_mask(path), labels)
    assert not list((tmp_path / "sub").glob(".*tmp"))
    with pytest.raises(ValueError, match="labels must lie"):
        save_voc_mask(tmp_path / "x.png", np.array([[256]]))
    with pytest.raises(ValueError, match="2-D"):
        save_voc_mask(tmp_path / "x.png", np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(TypeError, match="integer"):
        save_voc_mask(tmp_path / "x.png", np.zeros((2, 2)))


def test_corrupt_image_and_mismatched_mask_are_named(tmp_path):
    from agcl.data.voc import load_voc_image

    devkit, _ = _devkit(tmp_path)
    jpg = devkit / "VOC2012" / "JPEGImages" / "a.jpg"
    jpg.write_bytes(b"\xff\xd8 broken")
    with pytest.raises(ValueError, match="a.jpg"):
        load_voc_image(jpg)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(devkit / "VOC2012" / "JPEGImages" / "b.jpg")
    with pytest.raises(ValueError, match="b.png.*shape"):
        VOCSegmentation(devkit, "train")[1]
