# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""The flow path, solvers (exact results and NFE on linear fields) and the forecasting inferer."""

from __future__ import annotations

import math

import pytest
import torch

from monai_tfm.flows import (
    broadcast_target,
    euler_maruyama,
    flowed_times,
    integrate,
    interpolate,
    last_real_index,
    reduce_frames,
    sigma_at,
    target_velocity,
    tie_padding,
)
from monai_tfm.inferers import ForecastInferer


def _stack(b=2, k=4, shape=(1, 3, 4, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((b, k, *shape), generator=g), torch.rand((b, *shape), generator=g)


class TestPath:
    def test_interpolation_and_target(self):
        x0, target = _stack()
        x1 = broadcast_target(target, 4)
        assert x1.shape == x0.shape and torch.equal(x1[:, 2], target)
        tau = torch.tensor([0.0, 0.3])
        xt = interpolate(x0, x1, tau)
        torch.testing.assert_close(xt[0], x0[0])
        torch.testing.assert_close(xt[1], 0.7 * x0[1] + 0.3 * x1[1])
        torch.testing.assert_close(interpolate(x0, x1, torch.ones(2)), x1)
        torch.testing.assert_close(target_velocity(x0, x1), x1 - x0)
        # d/dtau of the path is the target velocity (finite difference)
        h = 1e-3
        fd = (interpolate(x0, x1, tau + h) - interpolate(x0, x1, tau)) / h
        torch.testing.assert_close(fd, x1 - x0, atol=1e-3, rtol=1e-3)

    def test_noise(self):
        x0, target = _stack()
        x1 = broadcast_target(target, 4)
        eps = torch.randn_like(x0)
        tau = torch.tensor([0.25, 0.5])
        xt = interpolate(x0, x1, tau, sigma=0.1, noise=eps)
        torch.testing.assert_close(xt, interpolate(x0, x1, tau) + 0.1 * eps)
        bridge = sigma_at(torch.tensor([0.0, 0.5, 1.0]), 0.2, "bridge")
        torch.testing.assert_close(bridge, torch.tensor([0.0, 0.1, 0.0]))
        with pytest.raises(ValueError, match="unknown sigma schedule"):
            sigma_at(tau, 0.1, "cosine")

    def test_flowed_times(self):
        ctx = torch.tensor([[0.0, 0.2, 0.4], [1.0, 2.0, 3.0]])
        tgt = torch.tensor([1.0, 5.0])
        out = flowed_times(ctx, tgt, torch.tensor([0.5, 1.0]))
        torch.testing.assert_close(out, torch.tensor([[0.5, 0.6, 0.7], [5.0, 5.0, 5.0]]))
        torch.testing.assert_close(flowed_times(ctx, tgt, torch.zeros(2)), ctx)

    def test_reduce_and_last_index(self):
        x = torch.arange(2 * 4, dtype=torch.float32).reshape(2, 4, 1, 1, 1, 1)
        mask = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 1]]).bool()
        assert last_real_index(mask).tolist() == [1, 3]
        torch.testing.assert_close(reduce_frames(x, mask, "mean").flatten(), torch.tensor([0.5, (4 + 6 + 7) / 3]))
        torch.testing.assert_close(reduce_frames(x, mask, "last").flatten(), torch.tensor([1.0, 7.0]))
        torch.testing.assert_close(reduce_frames(x, None, "mean").flatten(), torch.tensor([1.5, 5.5]))
        with pytest.raises(ValueError, match="at least one real"):
            last_real_index(torch.zeros(1, 3, dtype=torch.bool))
        with pytest.raises(ValueError, match="unknown aggregation"):
            reduce_frames(x, mask, "median")

    def test_tie_padding(self):
        x = torch.arange(5.0).reshape(1, 5, 1).repeat(2, 1, 1)
        mask = torch.tensor([[0, 1, 0, 1, 0], [1, 1, 0, 0, 0]]).bool()
        assert tie_padding(x, mask)[..., 0].tolist() == [[1, 1, 1, 3, 3], [0, 1, 1, 1, 1]]
        assert tie_padding(x, torch.ones(2, 5, dtype=torch.bool)) is x


class TestSolvers:
    @pytest.mark.parametrize("steps", [1, 4, 10])
    def test_linear_decay_exact_per_method(self, steps):
        a = -0.7
        x0 = torch.ones(3, dtype=torch.float64)
        h = 1.0 / steps
        expected = {
            "euler": ((1 + a * h) ** steps, steps),
            "midpoint": ((1 + a * h + (a * h) ** 2 / 2) ** steps, 2 * steps),
            "rk4": ((1 + a * h + (a * h) ** 2 / 2 + (a * h) ** 3 / 6 + (a * h) ** 4 / 24) ** steps, 4 * steps),
        }
        for method, (value, nfe) in expected.items():
            res = integrate(lambda t, x: a * x, x0, method, steps)
            assert res.nfe == nfe, method
            torch.testing.assert_close(res.x, torch.full_like(x0, value), rtol=1e-12, atol=1e-12)

    def test_constant_field_is_exact(self):
        x0 = torch.zeros(2, 3)
        for method in ("euler", "midpoint", "rk4"):
            res = integrate(lambda t, x: torch.full_like(x, 2.5), x0, method, 3)
            torch.testing.assert_close(res.x, torch.full_like(x0, 2.5))

    def test_time_dependent_field(self):
        # dx/dtau = tau: euler with N steps gives sum_{i<N} i h * h = (N-1)/(2N); rk4 is exact (1/2)
        res = integrate(lambda t, x: t * torch.ones_like(x), torch.zeros(1, dtype=torch.float64), "euler", 4)
        assert math.isclose(float(res.x), 3 / 8, rel_tol=1e-9)
        res = integrate(lambda t, x: t * torch.ones_like(x), torch.zeros(1, dtype=torch.float64), "rk4", 2)
        assert math.isclose(float(res.x), 0.5, rel_tol=1e-9)

    def test_dopri5_counts_nfe(self):
        res = integrate(lambda t, x: -0.7 * x, torch.ones(2, dtype=torch.float64), "dopri5", rtol=1e-8, atol=1e-8)
        assert res.steps is None and res.nfe > 6
        torch.testing.assert_close(res.x, torch.full((2,), math.exp(-0.7), dtype=torch.float64))

    def test_errors(self):
        with pytest.raises(ValueError, match="unknown solver"):
            integrate(lambda t, x: x, torch.ones(1), "heun3")
        with pytest.raises(ValueError, match="steps"):
            integrate(lambda t, x: x, torch.ones(1), "euler", 0)

    def test_euler_maruyama(self):
        f = lambda t, x: -0.5 * x  # noqa: E731
        x0 = torch.ones(4, dtype=torch.float64)
        torch.testing.assert_close(euler_maruyama(f, x0, 5).x, integrate(f, x0, "euler", 5).x)
        g1 = torch.Generator().manual_seed(3)
        g2 = torch.Generator().manual_seed(3)
        a = euler_maruyama(f, x0, 5, diffusion=0.1, generator=g1)
        b = euler_maruyama(f, x0, 5, diffusion=0.1, generator=g2)
        assert a.nfe == 5 and torch.equal(a.x, b.x) and not torch.allclose(a.x, integrate(f, x0, "euler", 5).x)


class _Zero(torch.nn.Module):
    def forward(self, x, tau, frame_times=None, frame_mask=None, target_time=None):
        return torch.zeros_like(x)


class _Const(torch.nn.Module):
    """v = c for every slot: the forecast of any slot moves by exactly c."""

    def forward(self, x, tau, frame_times=None, frame_mask=None, target_time=None):
        return torch.full_like(x, 0.25)


class TestForecastInferer:
    def test_zero_field_gives_lci_and_mean(self):
        x0, _ = _stack(k=5)
        mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 1, 1, 0]]).bool()
        for method, steps, nfe in (("euler", 3, 3), ("midpoint", 3, 6), ("rk4", 2, 8)):
            last = ForecastInferer(method, steps, "last")(x0, _Zero(), count_mask=mask)
            torch.testing.assert_close(last, x0[torch.arange(2), torch.tensor([2, 3])])
            inf = ForecastInferer(method, steps, "mean")
            mean = inf(x0, _Zero(), count_mask=mask)
            torch.testing.assert_close(mean[0], x0[0, :3].mean(0))
            torch.testing.assert_close(mean[1], x0[1, [0, 2, 3]].mean(0))
            assert inf.last_nfe == nfe

    def test_constant_field_moves_forecast(self):
        x0, _ = _stack(k=3)
        out = ForecastInferer("euler", 4, "last")(x0, _Const())
        torch.testing.assert_close(out, x0[:, -1] + 0.25)

    def test_continuous_requires_target_time(self):
        x0, _ = _stack(k=3)
        with pytest.raises(ValueError, match="target_time"):
            ForecastInferer()(x0, _Zero(), frame_times=torch.zeros(2, 3))

    def test_stochastic_mean_and_std(self):
        x0, _ = _stack(k=2)
        inf = ForecastInferer("euler_maruyama", 4, "mean", num_samples=6, diffusion=0.2, seed=1)
        out = inf(x0, _Zero())
        assert out.shape == x0[:, 0].shape and inf.last_std is not None and float(inf.last_std.mean()) > 0
        assert inf.last_nfe == 24
        again = ForecastInferer("euler_maruyama", 4, "mean", num_samples=6, diffusion=0.2, seed=1)(x0, _Zero())
        torch.testing.assert_close(out, again)


def test_heun2_step_by_hand_and_nfe():
    # dx/dt = -x from x = 1 over [0, 1]: one Heun step gives 1 + (k1 + k2) / 2 with k1 = -1, k2 = -(1 + k1) = 0
    result = integrate(lambda t, x: -x, torch.ones(1), method="heun2", steps=1)
    assert result.nfe == 2 and float(result.x) == pytest.approx(0.5)
    two = integrate(lambda t, x: -x, torch.ones(1), method="heun2", steps=2)
    assert two.nfe == 4 and float(two.x) == pytest.approx((1 - 0.5 + 0.125) ** 2)
