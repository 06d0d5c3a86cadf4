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


def test_random_blocks_mask_exactly_60_percent_of_16_voxel_tiles():
    from nnunet_pick.masking import random_block_mask

    g = torch.Generator().manual_seed(0)
    masked = random_block_mask(3, (32, 48, 16), generator=g)  # 2 x 3 x 1 = 6 tiles, round(3.6) = 4 masked
    assert masked.shape == (3, 1, 32, 48, 16)
    tiles = masked[:, 0, ::16, ::16, ::16]
    assert tiles.reshape(3, -1).sum(1).tolist() == [4, 4, 4]
    # every tile is all masked or all visible
    blocks = masked[:, 0].reshape(3, 2, 16, 3, 16, 1, 16)
    assert torch.equal(blocks.all(dim=(2, 4, 6)), blocks.any(dim=(2, 4, 6)))
    # edge tiles are cut at the border: 2D 40 x 20 -> 3 x 2 tiles, round(0.6 * 6) = 4 masked
    masked2d = random_block_mask(1, (40, 20), generator=g)
    assert masked2d.shape == (1, 1, 40, 20)
    assert masked2d[0, 0, ::16, ::16].sum() == 4


def test_random_single_block_covers_60_percent_in_one_box():
    from nnunet_pick.masking import random_single_block_mask

    masked = random_single_block_mask(4, (40, 50, 30), generator=torch.Generator().manual_seed(1))
    edges = [round(s * 0.6 ** (1 / 3)) for s in (40, 50, 30)]  # 34, 42, 25
    assert edges == [34, 42, 25]
    for m in masked[:, 0]:
        idx = m.nonzero()
        extent = (idx.max(0).values - idx.min(0).values + 1).tolist()
        assert extent == edges
        assert m.sum() == 34 * 42 * 25  # one solid box
    assert masked.float().mean().item() == pytest.approx(0.6, abs=0.01)


def test_background_mask_is_the_complement_of_the_attentive_mask():
    pseudo = torch.tensor([[[[0, 1], [2, 0]]]])
    assert compute_mask("background", pseudo, has_regions=False).tolist() == [[[[True, False], [False, True]]]]


def test_cutmix_pastes_the_same_box_into_images_and_every_target_scale():
    from nnunet_pick.augmentation import cutmix

    data = torch.stack([torch.full((1, 4, 4), 1.0), torch.full((1, 4, 4), 2.0)])  # B=2, C=1, 4x4
    target = [torch.stack([torch.zeros(1, 4, 4), torch.ones(1, 4, 4)]),
              torch.stack([torch.zeros(1, 2, 2), torch.ones(1, 2, 2)])]  # full and half resolution
    mixed, mixed_target = cutmix(data, target, [(0, 2), (1, 4)], torch.tensor([1, 0]))
    expected0 = torch.tensor([[1, 2, 2, 2], [1, 2, 2, 2], [1, 1, 1, 1], [1, 1, 1, 1]], dtype=torch.float32)
    assert torch.equal(mixed[0, 0], expected0)
    assert torch.equal(mixed[1, 0], 3 - expected0)
    assert torch.equal(mixed_target[0][0, 0], expected0 - 1)
    # half resolution: rows [0, 1), columns [0, 2) (floor of the start, ceil of the end)
    assert mixed_target[1][0, 0].tolist() == [[1, 1], [0, 0]]
    assert torch.equal(data[0], torch.full((1, 4, 4), 1.0))  # inputs untouched


def test_fourier_amplitude_mix_keeps_phase_and_mixes_amplitude():
    from nnunet_pick.augmentation import fourier_amplitude_mix

    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    partner = torch.tensor([1, 0])
    torch.testing.assert_close(fourier_amplitude_mix(x, torch.zeros(2), partner), x, atol=1e-5, rtol=0)
    out = fourier_amplitude_mix(x, torch.tensor([1.0, 0.5]), partner)
    f_out, f_x = torch.fft.fftn(out, dim=(2, 3)), torch.fft.fftn(x, dim=(2, 3))
    torch.testing.assert_close(f_out[0].abs(), f_x[1].abs(), atol=1e-4, rtol=1e-4)  # λ = 1: partner's amplitude
    torch.testing.assert_close(f_out[1].abs(), 0.5 * f_x[1].abs() + 0.5 * f_x[0].abs(), atol=1e-4, rtol=1e-4)
    keep = f_x[0].abs() > 1e-3
    torch.testing.assert_close(torch.cos(f_out[0].angle() - f_x[0].angle())[keep], torch.ones(int(keep.sum())),
                               atol=1e-3, rtol=0)  # own phase


def test_confident_voxels_and_the_auxiliary_target_that_leaves_the_others_out():
    from nnunet_pick.masking import confident_voxels

    # softmax over 3 classes at 3 voxels: probabilities (0.98, 0.01, 0.01), (0.5, 0.25, 0.25), (0.02, 0.04, 0.94)
    probabilities = torch.tensor([[0.98, 0.5, 0.02], [0.01, 0.25, 0.04], [0.01, 0.25, 0.94]])
    logits = probabilities.log().view(1, 3, 1, 3)
    kept = confident_voxels(logits, 0.95, has_regions=False)
    assert kept.tolist() == [[[[True, False, False]]]]
    assert confident_voxels(logits, 0.9, has_regions=False).tolist() == [[[[True, False, True]]]]
    assert confident_voxels(logits, 0.0, has_regions=False).all()
    pseudo = logits.argmax(1, keepdim=True)
    target = auxiliary_target(pseudo, has_regions=False, has_ignore_label=True, kept=kept, ignore_value=3)
    assert target.tolist() == [[[[0, 3, 3]]]]
    with pytest.raises(ValueError, match="ignore_value"):
        auxiliary_target(pseudo, has_regions=False, has_ignore_label=False, kept=kept)
    with pytest.raises(ValueError, match="probability"):
        confident_voxels(logits, 1.5, has_regions=False)
    # regions: every region's probability must be >= 0.9 or <= 0.1; sigmoid(3) = 0.953, sigmoid(1) = 0.731
    region_logits = torch.tensor([[[[3.0, 3.0, -3.0]], [[-3.0, 1.0, -3.0]]]])
    kept = confident_voxels(region_logits, 0.9, has_regions=True)
    assert kept.tolist() == [[[[True, False, True]]]]
    target = auxiliary_target(region_logits > 0, has_regions=True, has_ignore_label=True, kept=kept)
    assert target[:, -1].tolist() == [[[0.0, 1.0, 0.0]]]  # nnU-Net's ignore channel: 1 = left out
    with pytest.raises(ValueError, match="ignore channel"):
        auxiliary_target(region_logits > 0, has_regions=True, has_ignore_label=False, kept=kept)
