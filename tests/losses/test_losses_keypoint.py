"""Task-aligned keypoint loss: hand-computed 1- and 2-cell examples, cell scatter, gradients."""

import math

import pytest
import torch

from tasp_hloc.losses.keypoint import (
    TaskAlignedKeypointLoss,
    alignment_factor,
    anchors_to_cells,
    weighted_cell_cross_entropy,
)


def test_alignment_factor():
    M = torch.tensor([0.0, 1.0, 3.0])
    d = alignment_factor(M, margin=1.0, temperature=0.5)
    torch.testing.assert_close(d, torch.tensor([math.exp(0.5), 1.0, math.exp(-1.0)]))


def test_one_cell():
    logits = torch.zeros(1, 65, 1, 1, requires_grad=True)  # softmax = 1/65 everywhere
    labels = torch.tensor([[[3]]])  # keypoint at pixel (3, 0)
    loss = TaskAlignedKeypointLoss()
    kp = torch.tensor([[[3.0, 0.0]]])
    out = loss(logits, labels, triplet_loss=torch.tensor([[0.0]]), keypoints=kp)
    # M = 0 -> delta = exp(0.5 * (1 - 0))
    assert out["loss"].item() == pytest.approx(math.exp(0.5) * math.log(65), rel=1e-6)
    assert out["delta_mean"].item() == pytest.approx(math.exp(0.5))
    out = loss(logits, labels, triplet_loss=torch.tensor([[1.0]]), keypoints=kp)
    assert out["loss"].item() == pytest.approx(math.log(65), rel=1e-6)  # M = m -> delta = 1


def _two_cells():
    logits = torch.zeros(1, 65, 1, 2)
    logits[0, 10, 0, 0] = math.log(3.0)  # cell 0: p(label 10) = 3 / 67
    labels = torch.tensor([[[10, 64]]])  # cell 0 positive (pixel dy=1, dx=2), cell 1 empty
    return logits.requires_grad_(), labels


def test_two_cells_task_aligned_vs_plain():
    logits, labels = _two_cells()
    M = torch.tensor([[2.0, 0.1]], requires_grad=True)
    kp = torch.tensor([[[2.0, 1.0], [12.0, 3.0]]])  # the labelled keypoint; a grid anchor in cell 1
    kv = torch.tensor([[True, False]])  # only labelled anchors feed delta
    ta = TaskAlignedKeypointLoss()
    out = ta(logits, labels, triplet_loss=M, keypoints=kp, keypoint_valid=kv)
    pos, neg = math.log(67 / 3), math.log(65)
    delta = math.exp(0.5 * (1 - 2.0))
    assert out["loss"].item() == pytest.approx((delta * pos + neg) / 2, rel=1e-6)
    assert out["delta"].flatten().tolist() == pytest.approx([delta, 1.0])
    assert out["aligned_fraction"].item() == 1.0
    # Switched off: SuperPoint's mean cell cross-entropy.
    plain = TaskAlignedKeypointLoss({"task_aligned": False})
    out_p = plain(logits, labels, triplet_loss=M, keypoints=kp, keypoint_valid=kv)
    assert out_p["loss"].item() == pytest.approx((pos + neg) / 2, rel=1e-6)
    # Without any triplet for the positive cell, delta stays 1.
    none = torch.tensor([[False, False]])
    out_n = ta(logits, labels, triplet_loss=M, keypoints=kp, keypoint_valid=none)
    assert out_n["loss"].item() == pytest.approx((pos + neg) / 2, rel=1e-6)
    assert out_n["aligned_fraction"].item() == 0.0
    # Masking cell 1 out: normalised by the single valid cell.
    out_m = ta(logits, labels, torch.tensor([[[True, False]]]), M, kp, kv)
    assert out_m["loss"].item() == pytest.approx(delta * pos, rel=1e-6)

    # Gradient reaches the logits but not M (delta has no gradient).
    out["loss"].sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert M.grad is None
    # d loss / d logit[label] of the positive cell = delta * (p - 1) / 2.
    assert logits.grad[0, 10, 0, 0].item() == pytest.approx(delta * (3 / 67 - 1) / 2, rel=1e-5)


def test_anchors_to_cells_average_and_bounds():
    vals = torch.tensor([[1.0, 3.0, 5.0, 7.0, 9.0]])
    kp = torch.tensor([[[0.0, 0.0], [7.0, 7.2], [8.0, 0.0], [40.0, 0.0], [float("nan"), 1.0]]])
    mask = torch.tensor([[True, True, True, True, True]])
    out, has = anchors_to_cells(vals, kp, mask, hc=2, wc=2, cell=8, fill=1.0)
    # anchors 0, 1 -> cell (0, 0), mean 2; anchor 2 -> (0, 1); 3 and 4 fall outside.
    assert out.tolist() == [[[2.0, 5.0], [1.0, 1.0]]]
    assert has.tolist() == [[[True, True], [False, False]]]


def test_label_checks():
    logits = torch.zeros(1, 65, 2, 2)
    with pytest.raises(ValueError, match="int64 in \\[0, 64\\]"):
        weighted_cell_cross_entropy(logits, torch.full((1, 2, 2), 65))
    with pytest.raises(ValueError, match="labels of shape"):
        weighted_cell_cross_entropy(logits, torch.zeros(1, 3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="B x 65"):
        weighted_cell_cross_entropy(torch.zeros(1, 64, 2, 2), torch.zeros(1, 2, 2).long())
