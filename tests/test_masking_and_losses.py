"""Masking rule and loss maths against values worked out by hand (PICK Eqs. 5-9)."""

from __future__ import annotations

import pytest
import torch

from nnunet_pick.losses import auxiliary_target, masked_l1_loss, paste_reconstruction
from nnunet_pick.masking import apply_mask, attentive_mask, compute_mask, pseudo_label


def test_pseudo_label_is_argmax_and_attentive_mask_hides_foreground():
    # B=1, 3 heads, 2x2: voxel-wise winners 0, 2 / 1, 0
    logits = torch.tensor([[[[5.0, 0.0], [0.0, 3.0]],
                            [[0.0, 1.0], [4.0, 0.0]],
                            [[0.0, 2.0], [0.0, 0.0]]]])
    pseudo = pseudo_label(logits, has_regions=False)
    assert pseudo.tolist() == [[[[0, 2], [1, 0]]]]
    assert not pseudo.requires_grad
    masked = attentive_mask(pseudo, has_regions=False)
    assert masked.dtype == torch.bool
    assert masked.tolist() == [[[[False, True], [True, False]]]]
    assert torch.equal(compute_mask("attentive", pseudo, has_regions=False), masked)
    with pytest.raises(ValueError, match="Unknown masking strategy"):
        compute_mask("random", pseudo, has_regions=False)


def test_region_pseudo_label_thresholds_probability_at_half():
    # sigmoid(logit) > 0.5  <=>  logit > 0; a voxel is masked if any region is on
    logits = torch.tensor([[[[0.3, -0.2]], [[-1.0, -0.1]]]])  # B=1, R=2, 1x2
    pseudo = pseudo_label(logits, has_regions=True)
    assert pseudo.tolist() == [[[[True, False]], [[False, False]]]]
    assert attentive_mask(pseudo, has_regions=True).tolist() == [[[[True, False]]]]


def test_apply_mask_zeroes_hidden_voxels_in_every_channel():
    x = torch.arange(8, dtype=torch.float32).reshape(1, 2, 2, 2) + 1
    masked = torch.tensor([[[[True, False], [False, True]]]])
    assert apply_mask(x, masked).tolist() == [[[[0, 2], [3, 0]], [[0, 6], [7, 0]]]]


def test_masked_l1_matches_hand_computation():
    # C=2, one 2x2 image; masked voxels (0,1) and (1,1)
    image = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, -1.0], [2.0, 6.0]]]])
    recon = torch.tensor([[[[9.0, 0.0], [9.0, 8.0]], [[9.0, -1.5], [9.0, 3.0]]]], requires_grad=True)
    masked = torch.tensor([[[[False, True], [False, True]]]])
    # |0-2| + |8-4| + |-1.5+1| + |3-6| = 2 + 4 + 0.5 + 3 = 9.5 over C * sum(M) = 2 * 2 = 4
    loss = masked_l1_loss(recon, image, masked)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(9.5 / 4)
    loss.backward()
    # d/d recon = sign(recon - image) * M / 4, zero where unmasked
    expected = torch.tensor([[[[0, -0.25], [0, 0.25]], [[0, -0.25], [0, -0.25]]]])
    torch.testing.assert_close(recon.grad, expected)


def test_masked_l1_is_exactly_zero_with_zero_gradient_for_an_empty_mask():
    image = torch.randn(2, 1, 4, 4)
    recon = torch.randn(2, 1, 4, 4, requires_grad=True)
    masked = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    loss = masked_l1_loss(recon, image, masked)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.count_nonzero(recon.grad) == 0
    assert torch.isfinite(recon.grad).all()


def test_masked_l1_is_float32_for_half_precision_inputs():
    image = torch.randn(1, 1, 4, 4).half()
    recon = (image.float() + 1).half()
    masked = torch.ones(1, 1, 4, 4, dtype=torch.bool)
    loss = masked_l1_loss(recon, image, masked)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(1.0, abs=1e-3)


def test_masked_l1_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        masked_l1_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="masked must be"):
        masked_l1_loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 2, dtype=torch.bool))


def test_paste_reconstruction_uses_context_outside_and_detached_reconstruction_inside():
    image = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    recon = torch.tensor([[[[10.0, 20.0], [30.0, 40.0]]]], requires_grad=True)
    masked = torch.tensor([[[[False, True], [True, False]]]])
    pasted = paste_reconstruction(image, recon, masked)
    assert pasted.tolist() == [[[[1.0, 20.0], [30.0, 4.0]]]]
    assert not pasted.requires_grad  # stopgrad: L_aux never trains the MIM decoder


def test_auxiliary_target_formats_for_nnunet_losses():
    labels = torch.tensor([[[[0, 2]]]])
    assert auxiliary_target(labels, has_regions=False, has_ignore_label=True) is labels
    regions = torch.tensor([[[[True, False]], [[True, True]]]])
    target = auxiliary_target(regions, has_regions=True, has_ignore_label=False)
    assert target.dtype == torch.float32
    assert target.tolist() == [[[[1.0, 0.0]], [[1.0, 1.0]]]]
    with_ignore = auxiliary_target(regions, has_regions=True, has_ignore_label=True)
    assert with_ignore.shape == (1, 3, 1, 2)
    assert with_ignore[:, -1].sum() == 0  # a pseudo-label ignores nothing
