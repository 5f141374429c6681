# Copyright (c) monai_tfm contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Tests of the velocity networks and their blocks (CPU, small volumes)."""

from __future__ import annotations

import math

import pytest
import torch

from monai_tfm.networks import CronosUNet, FourierFeatures, TFMUNet, TimeConditioning
from monai_tfm.networks.blocks import WindowAttention, compute_down_strides

NETS = [CronosUNet, TFMUNet]
ODD = (9, 10, 7)
THIN = (32, 32, 8)


def make_net(cls, num_frames=2, in_channels=1, seed=0, **kwargs):
    torch.manual_seed(seed)
    kwargs.setdefault("channels", 8)
    return cls(num_frames=num_frames, in_channels=in_channels, **kwargs)


def perturb_head(net, seed=1):
    """Give the zero-initialised output layer random weights."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        net.out_conv.weight.copy_(torch.randn(net.out_conv.weight.shape, generator=gen) * 0.1)
        net.out_conv.bias.copy_(torch.randn(net.out_conv.bias.shape, generator=gen) * 0.1)
    return net


def continuous_inputs(batch=2, num_frames=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    frame_times = torch.sort(torch.rand(batch, num_frames, generator=gen), dim=1).values
    frame_mask = torch.ones(batch, num_frames, dtype=torch.bool)
    target_time = torch.full((batch,), 1.2)
    return frame_times, frame_mask, target_time


# ---------------------------------------------------------------------------------------------- time codes


def test_fourier_features_values():
    ff = FourierFeatures(num_features=4, max_freq=8.0)
    assert torch.allclose(ff.freqs, torch.tensor([1.0, 2.0, 4.0, 8.0]))
    assert "freqs" in dict(ff.named_buffers())
    t = torch.tensor([[0.0, 0.25]])
    out = ff(t)
    assert out.shape == (1, 2, 8)
    assert torch.allclose(out[0, 1, :4], torch.sin(2 * math.pi * ff.freqs * 0.25), atol=1e-6)
    assert torch.allclose(out[0, 1, 4:], torch.cos(2 * math.pi * ff.freqs * 0.25), atol=1e-6)


def test_time_conditioning_masked_mean_and_empty_rows():
    tc = TimeConditioning(cond_dim=8, num_features=4, mode="continuous")
    times = torch.tensor([[0.1, 0.3, 0.7], [0.2, 0.5, 0.9]])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    code = tc._frame_code(times, mask, 2)
    expected0 = tc.fourier(times[0, :2]).mean(0)
    assert torch.allclose(code[0], expected0, atol=1e-6)
    assert torch.equal(code[1], torch.zeros_like(code[1]))
    # non-finite times of padded frames do not leak into the code
    times_nan = times.clone()
    times_nan[0, 2] = float("nan")
    assert torch.allclose(tc._frame_code(times_nan, mask, 2), code)


def test_time_conditioning_modes_and_errors():
    disc = TimeConditioning(cond_dim=8, num_features=4, mode="discrete")
    assert disc.in_dim == 8
    out = disc(0.3, frame_times=torch.rand(2, 3), batch_size=2)
    assert out.shape == (2, 8)
    assert torch.equal(out, disc(torch.tensor([0.3, 0.3])))
    assert TimeConditioning(cond_dim=8, num_features=4, mode="continuous").in_dim == 24
    assert TimeConditioning(cond_dim=8, num_features=4, mode="continuous", use_target_time=False).in_dim == 16
    cont = TimeConditioning(cond_dim=8, num_features=4, mode="continuous")
    with pytest.raises(ValueError, match="frame_times"):
        cont(torch.rand(2), target_time=torch.rand(2))
    with pytest.raises(ValueError, match="target_time"):
        cont(torch.rand(2), frame_times=torch.rand(2, 3))
    with pytest.raises(ValueError, match="mode"):
        TimeConditioning(mode="irregular")
    with pytest.raises(ValueError, match="tau"):
        disc(torch.rand(3), batch_size=2)


# ---------------------------------------------------------------------------------------------- resampling


def test_down_strides():
    assert compute_down_strides(ODD, 3) == [(2, 2, 2), (1, 1, 1), (1, 1, 1)]
    assert compute_down_strides(THIN, 3) == [(2, 2, 2), (2, 2, 1), (2, 2, 1)]
    assert compute_down_strides((16, 64, 64), 3, axes=(1, 2)) == [(1, 2, 2)] * 3
    net = TFMUNet(num_frames=1, channels=8)  # default: the last axis (z of an (x, y, z) NIfTI volume) kept
    assert all(s[2] == 1 for s in net.down_strides((64, 64, 64)))
    assert all(s[0] == 1 for s in TFMUNet(num_frames=1, channels=8, slice_axis=0).down_strides((64, 64, 64)))
    fixed = CronosUNet(num_frames=1, channels=8, spatial_size=THIN)
    assert fixed.down_strides(ODD) == compute_down_strides(THIN, 3)
    with pytest.raises(ValueError, match="slice_axis"):
        TFMUNet(num_frames=1, channels=8, slice_axis=3)


@pytest.mark.parametrize("net_cls", NETS)
def test_slice_axis_on_an_anisotropic_volume(net_cls):
    """An ACDC-like (x, y, z) = 32 x 24 x 8 volume: with slice_axis=2 only x and y are halved, z keeps its 8 slices
    at every level, and the output has the input's shape."""
    size = (32, 24, 8)
    net = net_cls(num_frames=2, channels=8, channel_mult=(1, 2, 2), slice_axis=2)
    assert net.down_strides(size) == [(2, 2, 1), (2, 2, 1)]
    assert net.stride_lists(list(size)) == [[2, 2, 1], [2, 2, 1]]  # what forward uses
    x = torch.rand(1, 2, 1, *size)
    assert net(x, torch.rand(1)).shape == x.shape
    if net_cls is CronosUNet:  # the CRONOS default strides every axis that stays >= min_size (z: 8 -> 4)
        assert net_cls(num_frames=2, channels=8, channel_mult=(1, 2, 2)).down_strides(size)[0] == (2, 2, 2)


# ---------------------------------------------------------------------------------------------- attention


def test_window_attention_locality_and_padding():
    torch.manual_seed(0)
    attn = WindowAttention(3, 8, num_heads=2, window_size=4, norm_groups=2).eval()
    attn.norm = torch.nn.Identity()  # make windows independent of each other (GN is global)
    x = torch.randn(1, 8, 6, 4, 4)  # depth 6 = one full window + one padded window of 2
    out = attn(x)
    assert out.shape == x.shape
    x2 = x.clone()
    x2[:, :, 0] += 1.0  # change the first window only
    assert torch.allclose(attn(x2)[:, :, 4:], out[:, :, 4:])
    # the padded window equals global attention over its two real slices: padding is masked out
    glob = WindowAttention(3, 8, num_heads=2, window_size=None, norm_groups=2).eval()
    glob.load_state_dict(attn.state_dict(), strict=False)
    glob.norm = torch.nn.Identity()
    assert torch.allclose(glob(x[:, :, 4:]), out[:, :, 4:], atol=1e-6)
    # a window larger than the volume is global attention
    big = WindowAttention(3, 8, num_heads=2, window_size=16, norm_groups=2).eval()
    big.load_state_dict(attn.state_dict(), strict=False)
    big.norm = torch.nn.Identity()
    assert torch.allclose(big(x), glob(x), atol=1e-6)


# ---------------------------------------------------------------------------------------------- networks


@pytest.mark.parametrize("cls", NETS)
@pytest.mark.parametrize("spatial", [ODD, THIN])
@pytest.mark.parametrize("num_frames,in_channels", [(1, 1), (4, 2)])
def test_output_shape_and_zero_init(cls, spatial, num_frames, in_channels):
    net = make_net(cls, num_frames, in_channels)
    x = torch.randn(2, num_frames, in_channels, *spatial)
    v = net(x, torch.rand(2))
    assert v.shape == x.shape
    assert torch.equal(v, torch.zeros_like(v))


@pytest.mark.parametrize("cls", NETS)
def test_scalar_tau_and_tau_dependence(cls):
    net = perturb_head(make_net(cls)).eval()
    x = torch.randn(2, 2, 1, *ODD)
    with torch.no_grad():
        v_float = net(x, 0.3)
        assert torch.allclose(v_float, net(x, torch.tensor(0.3)))
        assert torch.allclose(v_float, net(x, torch.full((2,), 0.3)))
        v_other = net(x, 0.8)
    assert v_float.abs().max() > 0
    assert not torch.allclose(v_float, v_other)


@pytest.mark.parametrize("cls", NETS)
def test_continuous_mode_uses_time(cls):
    net = perturb_head(make_net(cls, num_frames=3, time_mode="continuous")).eval()
    x = torch.randn(2, 3, 1, *ODD)
    tau = torch.tensor([0.0, 0.0])  # at tau = 0 only the target time tells the forecast target apart
    ft, fm, tt = continuous_inputs()
    with torch.no_grad():
        base = net(x, tau, ft, fm, tt)
        assert not torch.allclose(base, net(x, tau, ft, fm, tt + 0.5))
        assert not torch.allclose(base, net(x, tau, ft + 0.1, fm, tt))
        # padded frames: their times do not matter
        fm_pad = fm.clone()
        fm_pad[:, 0] = False
        ft_pad = ft.clone()
        ft_pad[:, 0] = torch.tensor([5.0, -3.0])
        v_pad = net(x, tau, ft, fm_pad, tt)
        assert torch.allclose(v_pad, net(x, tau, ft_pad, fm_pad, tt))
        assert not torch.allclose(v_pad, base)
    with pytest.raises(ValueError, match="frame_times"):
        net(x, tau, target_time=tt)


@pytest.mark.parametrize("cls", NETS)
def test_discrete_mode_ignores_frame_times(cls):
    net = perturb_head(make_net(cls)).eval()
    x = torch.randn(1, 2, 1, *ODD)
    with torch.no_grad():
        assert torch.equal(net(x, 0.5), net(x, 0.5, torch.rand(1, 2), None, torch.rand(1)))


@pytest.mark.parametrize("cls", NETS)
def test_discrete_mode_with_target_time(cls):
    # use_target_time in discrete mode: the target time changes the velocity (frame times still do not), the code
    # has one more block, the target time is required, and the network still compiles with TorchScript
    net = perturb_head(make_net(cls, time_mode="discrete", use_target_time=True)).eval()
    assert net.time_cond.in_dim == 2 * TimeConditioning(mode="discrete").in_dim
    x = torch.randn(2, 2, 1, *ODD)
    tau, tt = torch.zeros(2), torch.tensor([0.5, 0.9])
    with torch.no_grad():
        base = net(x, tau, target_time=tt)
        assert not torch.allclose(base, net(x, tau, target_time=tt + 0.2))
        assert torch.equal(base, net(x, tau, torch.rand(2, 2), None, tt))
        torch.testing.assert_close(torch.jit.script(net)(x, tau, None, None, tt), base)
    with pytest.raises(ValueError, match="target_time"):
        net(x, tau)


@pytest.mark.parametrize("cls", NETS)
@pytest.mark.parametrize("time_mode", ["discrete", "continuous"])
def test_batch_independence(cls, time_mode):
    net = perturb_head(make_net(cls, num_frames=3, time_mode=time_mode)).eval()
    x = torch.randn(2, 3, 1, *ODD)
    tau = torch.tensor([0.2, 0.7])
    ft, fm, tt = continuous_inputs()
    fm[1, 0] = False
    tt[1] = 0.4
    with torch.no_grad():
        both = net(x, tau, ft, fm, tt)
        alone = net(x[:1], tau[:1], ft[:1], fm[:1], tt[:1])
    # equal up to float rounding (batched convolutions may sum in a different order)
    torch.testing.assert_close(both[:1], alone, atol=2e-5, rtol=1e-4)
    assert not torch.allclose(both[1:], alone, atol=1e-2)


@pytest.mark.parametrize("cls", NETS)
@pytest.mark.parametrize("time_mode", ["discrete", "continuous"])
def test_gradients_reach_every_parameter(cls, time_mode):
    net = perturb_head(make_net(cls, num_frames=3, time_mode=time_mode))
    x = torch.randn(2, 3, 1, *ODD)
    ft, fm, tt = continuous_inputs()
    net(x, torch.rand(2), ft, fm, tt).pow(2).mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


@pytest.mark.parametrize("cls", NETS)
@pytest.mark.parametrize("attention", [True, False])
def test_attention_switch_and_large_window(cls, attention):
    net = perturb_head(make_net(cls, attention=attention, attention_window=64)).eval()
    x = torch.randn(1, 2, 1, *THIN)
    with torch.no_grad():
        v = net(x, 0.5)
    assert v.shape == x.shape and torch.isfinite(v).all()
    has_attn = any(isinstance(m, WindowAttention) for m in net.modules())
    assert has_attn == attention


@pytest.mark.parametrize("cls", NETS)
def test_wrong_input_shape(cls):
    net = make_net(cls, num_frames=2, in_channels=1)
    with pytest.raises(ValueError, match="expected x"):
        net(torch.randn(1, 3, 1, *ODD), 0.5)
    with pytest.raises(ValueError, match="expected x"):
        net(torch.randn(1, 2, *ODD), 0.5)


def test_cronos_defaults_match_paper():
    net = CronosUNet(num_frames=4)
    assert net.stem.out_channels == 32 and net.stem.kernel_size == (1, 1, 1)
    assert [b.conv2.out_channels for b in net.down_blocks] == [32, 32, 64, 128]
    assert net.mid_attn.window_size == (8, 8, 8) and net.mid_attn.attn.num_heads == 4
    assert net.out_conv.out_channels == 4 and net.out_conv.kernel_size == (1, 1, 1)
    assert not net.out_conv.weight.any() and not net.out_conv.bias.any()


def test_spatial_dims_2():
    for cls in NETS:
        net = perturb_head(make_net(cls, num_frames=2, spatial_dims=2, attention_window=4))
        x = torch.randn(2, 2, 1, 10, 7)
        assert net(x, torch.rand(2)).shape == x.shape


@pytest.mark.parametrize("cls", [CronosUNet, TFMUNet])
def test_endpoint_prediction_divides_by_remaining_flow(cls):
    # the same weights: an endpoint network's velocity is the velocity network's output over (1 - tau), in eager mode
    # and in TorchScript; an unknown parameterisation is refused
    kw = dict(num_frames=3, channels=8, channel_mult=(1, 2), norm_groups=4, attention=False, cond_dim=32)
    torch.manual_seed(0)
    plain = cls(**kw)
    with torch.no_grad():
        for p in plain.parameters():
            p.normal_(0, 0.1)
    endpoint = cls(**kw, prediction="endpoint")
    endpoint.load_state_dict(plain.state_dict())
    x, tau = torch.randn(3, 3, 1, 16, 16, 8), torch.tensor([0.0, 0.75, 1.0])
    with torch.no_grad():
        v, e = plain(x, tau), endpoint(x, tau)
        scripted = torch.jit.script(endpoint)(x, tau)
    torch.testing.assert_close(e[0], v[0])
    torch.testing.assert_close(e[1], v[1] / 0.25)
    torch.testing.assert_close(e[2], v[2] / 1e-3)  # tau = 1: the remaining flow is clamped, the velocity finite
    torch.testing.assert_close(scripted, e)
    with pytest.raises(ValueError, match="prediction"):
        cls(**kw, prediction="noise")


def test_warp_prediction_moves_frames_by_its_displacement():
    # a warp network whose last layer outputs a constant one-voxel displacement along the first axis and no
    # residual: its end point is each frame shifted by one voxel (away from the border that the resampling pads),
    # its velocity that shift over (1 - tau); zero-initialised, it predicts no change; TFMUNet refuses the option
    kw = dict(num_frames=2, channels=8, channel_mult=(1, 2), norm_groups=4, attention=False, cond_dim=32)
    net = CronosUNet(**kw, prediction="warp")
    x, tau = torch.rand(2, 2, 1, 8, 6, 4), torch.tensor([0.0, 0.5])
    with torch.no_grad():
        torch.testing.assert_close(net(x, tau), torch.zeros_like(x), atol=1e-6, rtol=0)
        assert net.out_conv.out_channels == 2 * 1 + 2 * 3
        net.out_conv.bias[2::3] = 1.0  # channels 2, 5: the first-axis displacement of each frame
        v = net(x, tau)
    assert v.shape == x.shape
    shifted = x[..., 1:, :, :] - x[..., :-1, :, :]
    torch.testing.assert_close(v[0, ..., :-1, :, :], shifted[0])
    torch.testing.assert_close(v[1, ..., :-1, :, :], shifted[1] / 0.5)
    with pytest.raises(ValueError, match="warp"):
        TFMUNet(**kw, prediction="warp")
