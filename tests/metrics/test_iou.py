"""IoU per class with the void label ignored, against hand-computed values."""

import numpy as np
import pytest
import torch

from agcl.metrics import confusion_matrix, iou_from_confusion, iou_per_class, mean_iou


def test_hand_computed_example():
    # target (255 = void) and prediction, 3 x 4
    target = np.array([[0, 0, 1, 1], [0, 255, 1, 2], [255, 2, 2, 2]])
    pred = np.array([[0, 1, 1, 1], [0, 2, 0, 2], [1, 2, 2, 0]])
    # non-void pixels: 10. class 0: TP 2 (0,0),(1,0); FP (1,2),(2,3); FN (0,1) -> 2 / 5
    # class 1: TP 2 (0,2),(0,3); FP (0,1); FN (1,2) -> 2 / 4 (pred 1 at void (2,0) not counted)
    # class 2: TP 3 (1,3),(2,1),(2,2); FP none (pred 2 at void (1,1) not counted); FN (2,3) -> 3 / 4
    ious = iou_per_class(pred, target, 3)
    assert ious == pytest.approx([0.4, 0.5, 0.75])
    assert mean_iou(ious) == pytest.approx(1.65 / 3)
    # void counted as a class would change the answer (the void pixels are what make it differ)
    assert iou_per_class(pred, np.where(target == 255, 0, target), 3) != ious


def test_absent_class_is_none_and_prediction_only_class_is_zero():
    target = np.array([0, 0, 1, 1])
    assert iou_per_class(np.array([0, 0, 1, 1]), target, 4) == [1.0, 1.0, None, None]
    ious = iou_per_class(np.array([0, 3, 1, 1]), target, 4)
    assert ious == [0.5, 1.0, None, 0.0]
    assert mean_iou(ious) == pytest.approx(0.5)
    assert mean_iou([None, None]) is None


def test_dataset_iou_accumulates_one_confusion_matrix():
    t1, p1 = np.array([1, 1, 0]), np.array([1, 0, 0])
    t2, p2 = np.array([1, 0, 0, 0]), np.array([1, 0, 0, 0])
    cm = confusion_matrix(p1, t1, 2) + confusion_matrix(p2, t2, 2)
    assert iou_from_confusion(cm) == iou_per_class(np.r_[p1, p2], np.r_[t1, t2], 2)
    assert iou_from_confusion(cm)[1] == pytest.approx(2 / 3)  # not the mean of 1/2 and 1


def test_tensors_and_ignore_none():
    t = torch.tensor([[0, 255], [1, 1]])
    p = torch.tensor([[0, 0], [1, 1]])
    assert iou_per_class(p, t, 2) == [1.0, 1.0]
    with pytest.raises(ValueError, match="target must hold class ids"):
        iou_per_class(p, t, 2, ignore_index=None)


def test_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        iou_per_class(np.zeros((2, 2), int), np.zeros((2, 3), int), 2)
    with pytest.raises(ValueError, match="pred must hold class ids in \\[0, 2\\)"):
        iou_per_class(np.array([2]), np.array([0]), 2)
    with pytest.raises(TypeError, match="pred must hold integer"):
        iou_per_class(np.array([0.5]), np.array([0]), 2)
    with pytest.raises(TypeError, match="target must be a numpy array"):
        iou_per_class(np.array([0]), [0], 2)
    with pytest.raises(ValueError, match="num_classes"):
        iou_per_class(np.array([0]), np.array([0]), 0)
    with pytest.raises(ValueError, match="square"):
        iou_from_confusion(np.zeros((2, 3)))
