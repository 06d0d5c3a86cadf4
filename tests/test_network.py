"""PICKNetwork built from nnU-Net's own plans of a real dataset: 2D, 3D, ResEnc; 1 and 3 input channels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import load_plans
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_pick import nnUNetTrainerPICK
from nnunet_pick.network import PICKNetwork

CASES = [("nnUNetPlans", "2d"), ("nnUNetPlans", "3d_fullres"), ("nnUNetResEncUNetMPlans", "3d_fullres")]
HEADS = 3  # background, Anterior, Posterior


def configuration(preprocessed, plans_name, config):
    return PlansManager(load_plans(preprocessed, plans_name)).get_configuration(config)


def small_input(cm, channels, batch=2):
    # twice the product of the strides per axis: 2 voxels per axis at the bottleneck (instance norm needs > 1)
    size = 2 * np.prod(np.array(cm.pool_op_kernel_sizes), axis=0)
    return torch.randn(batch, channels, *[int(s) for s in size])


@pytest.mark.parametrize(("plans_name", "config"), CASES)
@pytest.mark.parametrize("channels", [1, 3])
def test_outputs_of_every_branch(hippocampus, plans_name, config, channels):
    cm = configuration(hippocampus, plans_name, config)
    net = PICKNetwork.from_plans(cm, channels, HEADS, enable_deep_supervision=True)
    x = small_input(cm, channels)
    primary = net(x)
    n_stages = len(cm.pool_op_kernel_sizes)
    assert isinstance(primary, list)
    assert len(primary) == n_stages - 1
    assert primary[0].shape == (2, HEADS, *x.shape[2:])
    assert net(x, branch="mim").shape == x.shape  # one linear output channel per input channel
    assert net(x, branch="aux").shape == (2, HEADS, *x.shape[2:])
    net.decoder.deep_supervision = False
    assert net(x).shape == (2, HEADS, *x.shape[2:])
    with pytest.raises(ValueError, match="Unknown PICK branch"):
        net(x, branch="recon")
    # the architecture class of the plans is used for every decoder
    assert type(net.encoder).__name__ == ("ResidualEncoder" if "ResEnc" in plans_name else "PlainConvEncoder")


@pytest.mark.parametrize(("plans_name", "config"), CASES)
def test_strict_load_into_inference_network_and_same_output_as_plain_nnunet(hippocampus, plans_name, config):
    cm = configuration(hippocampus, plans_name, config)
    pm = PlansManager(load_plans(hippocampus, plans_name))
    trained = nnUNetTrainerPICK.build_network_architecture(pm, cm, 1, HEADS, enable_deep_supervision=True)
    # what nnUNetPredictor builds and loads strictly
    inference = nnUNetTrainerPICK.build_network_architecture(pm, cm, 1, HEADS, enable_deep_supervision=False)
    inference.load_state_dict(trained.state_dict(), strict=True)
    plain = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                   cm.network_arch_init_kwargs_req_import, 1, HEADS, deep_supervision=False)
    primary_only = {k: v for k, v in trained.state_dict().items() if k.split(".")[0] in ("encoder", "decoder")}
    plain.load_state_dict(primary_only, strict=True)
    inference.eval()
    plain.eval()
    x = small_input(cm, 1)
    with torch.no_grad():
        torch.testing.assert_close(inference(x), plain(x), rtol=0, atol=0)


def test_primary_weights_match_stock_initialisation(hippocampus):
    cm = configuration(hippocampus, "nnUNetPlans", "3d_fullres")
    torch.manual_seed(123)
    plain = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                   cm.network_arch_init_kwargs_req_import, 1, HEADS, deep_supervision=True)
    torch.manual_seed(123)
    pick = PICKNetwork.from_plans(cm, 1, HEADS)
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(pick.state_dict()[key], value, rtol=0, atol=0)


def test_extra_decoders_are_he_initialised_and_share_the_encoder(hippocampus):
    cm = configuration(hippocampus, "nnUNetPlans", "3d_fullres")
    net = PICKNetwork.from_plans(cm, 1, HEADS)
    for decoder in (net.mim_decoder, net.aux_decoder):
        assert decoder.encoder is net.encoder
        conv = decoder.stages[0].convs[0].conv
        fan_in = conv.weight[0].numel()
        expected_std = (2 / (1 + 1e-2 ** 2)) ** 0.5 / fan_in ** 0.5  # kaiming_normal_, a=1e-2 (InitWeights_He)
        assert conv.weight.std().item() == pytest.approx(expected_std, rel=0.05)
        assert torch.count_nonzero(conv.bias) == 0
    # MIM / aux decoders keep only their full-resolution head: no parameter that never gets a gradient
    assert sum(p.numel() for p in net.mim_decoder.seg_layers[:-1].parameters()) == 0
    assert sum(p.numel() for p in net.aux_decoder.seg_layers[:-1].parameters()) == 0
    assert net.mim_decoder.seg_layers[-1].out_channels == 1
    assert net.aux_decoder.seg_layers[-1].out_channels == HEADS


def test_every_parameter_gets_a_gradient_from_the_three_branches(hippocampus):
    cm = configuration(hippocampus, "nnUNetPlans", "2d")
    net = PICKNetwork.from_plans(cm, 1, HEADS, enable_deep_supervision=True)
    x = small_input(cm, 1)
    loss = sum(o.sum() for o in net(x)) + net(x, branch="mim").sum() + net(x, branch="aux").sum()
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert missing == []
