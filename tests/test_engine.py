# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Prepare-batch, loss, inferer with real networks, evaluation metric, and a short overfit run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.engines import SupervisedTrainer
from monai.inferers import SimpleInferer

from monai_tfm.data.synthetic import make_heart_series
from monai_tfm.engines import FlowMatchingPrepareBatch, ForecastPrepareBatch
from monai_tfm.flows import interpolate, last_context_image, tie_padding
from monai_tfm.inferers import ForecastInferer
from monai_tfm.losses import FlowMatchingLoss
from monai_tfm.metrics import compute_forecast_metrics
from monai_tfm.networks import CronosUNet
from monai_tfm.transforms import FillLOCF, GridEmbed, select_context


def _batch(b=2, k=4, shape=(1, 8, 8, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "context": torch.rand((b, k, *shape), generator=g),
        "context_time": torch.linspace(0, 0.6, k).repeat(b, 1),
        "context_mask": torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]][:b]).bool()[:, :k],
        "target": torch.rand((b, *shape), generator=g),
        "target_time": torch.tensor([0.9, 1.0])[:b],
    }


def _net(mode, k=4, seed=0):
    torch.manual_seed(seed)
    net = CronosUNet(num_frames=k, in_channels=1, channels=8, attention=False, time_mode=mode, cond_dim=32)
    with torch.no_grad():  # the head is zero-initialised; give it weights so that the field is not trivially zero
        for p in net.out_conv.parameters():
            p.normal_(0, 0.05)
    return net.eval()


class TestPrepareBatch:
    def test_distance_weighting_of_the_loss_frames(self):
        # by hand: the discrete variant counts every slot, each weighing exp(-|t_target - t_k| / scale); the real
        # frames of the "real" option keep their zeros; a scale that is not positive is refused
        batch = _batch()
        _, targets, _, _ = FlowMatchingPrepareBatch("discrete", distance_scale=0.5)(batch)
        times = [0.0, 0.2, 0.4, 0.6]
        expected = torch.tensor([[math.exp(-abs(t_target - t) / 0.5) for t in times] for t_target in (0.9, 1.0)])
        torch.testing.assert_close(targets["weight"], expected)
        _, real, _, _ = FlowMatchingPrepareBatch("discrete", loss_frames="real", distance_scale=0.5)(batch)
        torch.testing.assert_close(real["weight"], expected * batch["context_mask"])
        assert torch.equal(FlowMatchingPrepareBatch("discrete")(batch)[1]["weight"], torch.ones(2, 4))
        with pytest.raises(ValueError, match="scale"):
            FlowMatchingPrepareBatch("discrete", distance_scale=0.0)

    def test_discrete_training_batch(self):
        batch = _batch()
        g = torch.Generator().manual_seed(1)
        x_tau, targets, args, kwargs = FlowMatchingPrepareBatch("discrete", generator=g)(batch)
        tau = torch.rand(2, generator=torch.Generator().manual_seed(1))
        x1 = batch["target"].unsqueeze(1).expand_as(batch["context"])
        torch.testing.assert_close(kwargs["tau"], tau)
        torch.testing.assert_close(x_tau, interpolate(batch["context"], x1, tau))
        torch.testing.assert_close(targets["velocity"], x1 - batch["context"])
        assert targets["weight"].tolist() == [[1.0] * 4] * 2 and args == () and set(kwargs) == {"tau", "target_time"}
        torch.testing.assert_close(kwargs["target_time"], batch["target_time"])
        _, real, _, _ = FlowMatchingPrepareBatch("discrete", loss_frames="real")(batch)
        assert real["weight"].tolist() == batch["context_mask"].float().tolist()

    def test_tau_zero_prob(self):
        # about that share of the samples at tau = 0, the others uniform; the seeded per-sample draws too; p outside
        # [0, 1) is refused
        n = 4000
        batch = {**_batch(), "context": torch.rand(2, 4, 1, 2, 2, 2), "target": torch.rand(2, 1, 2, 2, 2)}
        big = {k: v.repeat_interleave(n // 2, dim=0) for k, v in batch.items()}
        g = torch.Generator().manual_seed(5)
        tau = FlowMatchingPrepareBatch(generator=g, tau_zero_prob=0.3)(big)[3]["tau"]
        assert abs(float((tau == 0).float().mean()) - 0.3) < 0.03
        assert 0.4 < float(tau[tau > 0].mean()) < 0.6
        seeded = FlowMatchingPrepareBatch(seed=1, tau_zero_prob=0.5)
        taus = torch.cat([seeded(batch)[3]["tau"] for seeded.epoch in range(200)])
        assert 0.35 < float((taus == 0).float().mean()) < 0.65
        for bad in (-0.1, 1.0):
            with pytest.raises(ValueError, match="tau_zero_prob"):
                FlowMatchingPrepareBatch(tau_zero_prob=bad)

    def test_continuous_training_batch(self):
        batch = _batch()
        _, targets, _, kwargs = FlowMatchingPrepareBatch("continuous", time_scale=2.0)(batch)
        tau = kwargs["tau"]
        expected = (1 - tau[:, None]) * 2 * batch["context_time"] + tau[:, None] * 2 * batch["target_time"][:, None]
        torch.testing.assert_close(kwargs["frame_times"], expected)
        torch.testing.assert_close(kwargs["target_time"], 2 * batch["target_time"])
        assert targets["weight"].tolist() == batch["context_mask"].float().tolist()

    def test_forecast_batch_and_errors(self):
        batch = _batch()
        x0, target, _, kw = ForecastPrepareBatch("continuous")(batch)
        assert torch.equal(x0, batch["context"]) and torch.equal(target, batch["target"])
        assert set(kw) == {"count_mask", "frame_times", "frame_mask", "target_time"}
        no_target = {k: v for k, v in batch.items() if k != "target"}
        assert ForecastPrepareBatch("discrete")(no_target)[1] is None
        with pytest.raises(KeyError, match="context_mask"):
            FlowMatchingPrepareBatch()({k: v for k, v in batch.items() if k != "context_mask"})
        with pytest.raises(ValueError, match="variant"):
            FlowMatchingPrepareBatch("hybrid")


class TestLoss:
    def test_masked_mse_by_hand(self):
        pred = torch.zeros(1, 2, 1, 1, 1, 2)
        u = torch.tensor([1.0, 3.0, 2.0, 2.0]).reshape(1, 2, 1, 1, 1, 2)
        loss = FlowMatchingLoss()
        assert float(loss(pred, {"velocity": u, "weight": torch.tensor([[1.0, 1.0]])})) == pytest.approx(4.5)
        assert float(loss(pred, {"velocity": u, "weight": torch.tensor([[1.0, 0.0]])})) == pytest.approx(5.0)
        assert float(loss(pred, u)) == pytest.approx(4.5)
        with pytest.raises(ValueError, match="no frame counts"):
            loss(pred, {"velocity": u, "weight": torch.zeros(1, 2)})

    def test_endpoint_prediction_loss_is_endpoint_mse(self):
        # an endpoint-parameterised network: its velocity loss with the (1 - tau)^2 scale equals the MSE of the end
        # point X_tau + (1 - tau) v against X1, computed here directly
        batch = _batch()
        batch["context_mask"] = torch.ones(2, 4, dtype=torch.bool)
        g = torch.Generator().manual_seed(3)
        x_tau, targets, _, kw = FlowMatchingPrepareBatch(generator=g, prediction="endpoint")(batch)
        net = CronosUNet(num_frames=4, channels=8, attention=False, cond_dim=32, prediction="endpoint")
        with torch.no_grad():
            for p in net.out_conv.parameters():
                p.normal_(0, 0.05)
            v = net(x_tau, **kw)
            loss = float(FlowMatchingLoss()(v, targets))
        tau = kw["tau"].reshape(-1, 1, 1, 1, 1, 1)
        end = x_tau + (1 - tau) * v
        expected = float((end - batch["target"].unsqueeze(1)).pow(2).mean())
        assert loss == pytest.approx(expected, rel=1e-5)
        # the velocity parameterisation has no scale, and a bad name is refused
        assert "scale" not in FlowMatchingPrepareBatch(generator=g)(batch)[1]
        with pytest.raises(ValueError, match="prediction"):
            FlowMatchingPrepareBatch(prediction="x0")

    def test_log_reduction_is_mean_log_of_sample_errors(self):
        # by hand: each sample's MSE over its counted frames, then the mean of the logs; a sample with no counted
        # frame is left out; a bad name or eps is refused
        gen = torch.Generator().manual_seed(4)
        v, u = torch.randn((3, 3, 1, 4, 4, 2), generator=gen), torch.randn((3, 3, 1, 4, 4, 2), generator=gen)
        w = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
        sq = (v - u) ** 2
        expected = (torch.log(sq[0, :2].mean() + 1e-3) + torch.log(sq[1, 2].mean() + 1e-3)) / 2
        loss = FlowMatchingLoss("log", eps=1e-3)(v, {"velocity": u, "weight": w})
        torch.testing.assert_close(loss, expected)
        # a plain velocity tensor: every frame of every sample counts
        plain = FlowMatchingLoss("log")(v, u)
        assert float(plain) == pytest.approx(float(torch.log(sq.flatten(1).mean(1) + 1e-6).mean()), rel=1e-6)
        with pytest.raises(ValueError, match="sample_reduction"):
            FlowMatchingLoss("sum")
        with pytest.raises(ValueError, match="eps"):
            FlowMatchingLoss("log", eps=-1.0)

    def test_absolute_distance_is_masked_mean_absolute_error(self):
        # by hand: |v - u| averaged over the counted frames' voxels (masked mean) and, with "log", per sample
        pred = torch.zeros(1, 2, 1, 1, 1, 2)
        u = torch.tensor([1.0, -3.0, 2.0, -2.0]).reshape(1, 2, 1, 1, 1, 2)
        loss = FlowMatchingLoss(distance="absolute")
        assert float(loss(pred, {"velocity": u, "weight": torch.tensor([[1.0, 1.0]])})) == pytest.approx(2.0)
        assert float(loss(pred, {"velocity": u, "weight": torch.tensor([[1.0, 0.0]])})) == pytest.approx(2.0)
        assert float(loss(pred, {"velocity": u, "weight": torch.tensor([[0.0, 1.0]])})) == pytest.approx(2.0)
        u2 = torch.tensor([1.0, -3.0, 0.5, -0.5]).reshape(1, 2, 1, 1, 1, 2)
        assert float(loss(pred, u2)) == pytest.approx(1.25)
        log = FlowMatchingLoss("log", eps=0.0, distance="absolute")(pred, u2)
        assert float(log) == pytest.approx(math.log(1.25))
        with pytest.raises(ValueError, match="distance"):
            FlowMatchingLoss(distance="huber")


class TestInfererWithNetwork:
    def test_continuous_padding_does_not_change_forecast(self):
        net = _net("continuous")
        batch = _batch()
        x0, _, _, kw = ForecastPrepareBatch("continuous")(batch)
        inferer = ForecastInferer("midpoint", 3)
        with torch.no_grad():
            ref = inferer(x0, net, **kw)
            x_mod, times = x0.clone(), kw["frame_times"].clone()
            x_mod[0, 2:] = torch.rand_like(x_mod[0, 2:])  # sample 0 has 2 real frames: change its padding
            times[0, 2:] = torch.tensor([5.0, -3.0])
            out = inferer(x_mod, net, **{**kw, "frame_times": times})
        torch.testing.assert_close(out, ref)
        # the end states of padded slots are ties of the last real slot and do not enter the mean
        states = inferer.last_states
        torch.testing.assert_close(states[0, 2], states[0, 1])

    def test_batch_samples_independent(self):
        for mode in ("discrete", "continuous"):
            net = _net(mode)
            batch = _batch()
            x0, _, _, kw = ForecastPrepareBatch(mode)(batch)
            inferer = ForecastInferer("euler", 4)
            with torch.no_grad():
                both = inferer(x0, net, **kw)
                one = inferer(x0[1:], net, **{k: v[1:] for k, v in kw.items()})
            torch.testing.assert_close(both[1:], one, atol=2e-5, rtol=1e-4)

    def test_continuous_forecast_depends_on_target_time(self):
        net = _net("continuous")
        batch = _batch()
        x0, _, _, kw = ForecastPrepareBatch("continuous")(batch)
        inferer = ForecastInferer("euler", 2)
        with torch.no_grad():
            a = inferer(x0, net, **kw)
            b = inferer(x0, net, **{**kw, "target_time": kw["target_time"] + 0.5})
        assert (a - b).abs().max() > 1e-4
        # one Euler step evaluates only tau = 0, where the flowed times equal the context times: the explicit
        # target-time code keeps even a one-step forecast time-aware
        one = ForecastInferer("euler", 1)
        with torch.no_grad():
            assert (one(x0, net, **kw) - one(x0, net, **{**kw, "target_time": kw["target_time"] + 0.5})).abs().max() > 0

    def test_discrete_forecast_follows_target_time_only_when_encoded(self):
        # the discrete prepare-batch hands the target time to the inferer; a discrete network forecasts from it only
        # with use_target_time (the papers' discrete network, the default, is the same at every target time)
        batch = _batch()
        x0, _, _, kw = ForecastPrepareBatch("discrete")(batch)
        assert set(kw) == {"count_mask", "target_time"}
        later = {**kw, "target_time": kw["target_time"] + 0.3}
        inferer = ForecastInferer("euler", 1)
        torch.manual_seed(0)
        blind = _net("discrete")
        torch.manual_seed(0)
        timed = CronosUNet(
            num_frames=4,
            in_channels=1,
            channels=8,
            attention=False,
            time_mode="discrete",
            cond_dim=32,
            use_target_time=True,
        )
        with torch.no_grad():
            for p in timed.out_conv.parameters():
                p.normal_(0, 0.05)
            assert torch.equal(inferer(x0, blind, **kw), inferer(x0, blind, **later))
            assert (inferer(x0, timed.eval(), **kw) - inferer(x0, timed, **later)).abs().max() > 1e-4


class _Engine:
    """Minimal stand-in for an evaluator's state, to drive ForecastMetrics without a data loader."""

    class State:
        pass

    def __init__(self, batch, pred):
        self.state = self.State()
        self.state.batch = batch
        self.state.output = {"pred": pred}
        self.state.metrics = {}


def test_forecast_metrics_rows_and_lci():
    from monai_tfm.handlers import ForecastMetrics

    batch = _batch()
    batch["subject"], batch["draw"] = ["a", "b"], torch.tensor([0, 1])
    lci = last_context_image(batch["context"], batch["context_mask"])
    torch.testing.assert_close(lci, batch["context"][torch.arange(2), torch.tensor([1, 3])])
    pred = 0.5 * (lci + batch["target"])
    metric = ForecastMetrics(key="psnr")
    metric.reset()
    engine = _Engine(batch, pred)
    metric.iteration_completed(engine)
    metric.completed(engine, "val_psnr")
    rows = metric.rows
    assert [r["subject"] for r in rows] == ["a", "b"] and [r["draw"] for r in rows] == [0, 1]
    ref = compute_forecast_metrics(pred[1], batch["target"][1], lci[1])
    assert rows[1]["model_psnr"] == pytest.approx(ref["psnr"]) and rows[1]["lci_skill"] == pytest.approx(0.0)
    assert rows[1]["model_skill"] == pytest.approx(0.75)  # half the error of LCI everywhere
    assert engine.state.metrics["val_psnr"] == pytest.approx(np.mean([r["model_psnr"] for r in rows]))
    assert engine.state.metrics["val_lci_psnr"] == pytest.approx(np.mean([r["lci_psnr"] for r in rows]))


def test_forecast_metrics_lci_rows_cached_per_sample(monkeypatch):
    """Second epoch over the same fixed draws: LCI rows come from the cache; a changed sample is recomputed."""
    import monai_tfm.handlers.forecast_metrics as fm

    calls = []
    real = fm.compute_forecast_metrics_batch
    monkeypatch.setattr(fm, "compute_forecast_metrics_batch", lambda p, t, c: calls.append(p.shape[0]) or real(p, t, c))
    batch = _batch()
    batch["subject"], batch["draw"] = ["a", "b"], torch.tensor([0, 1])
    pred = batch["target"] * 0.9
    metric = fm.ForecastMetrics()
    epochs = []
    for _ in range(2):
        metric.reset()
        metric.iteration_completed(_Engine(batch, pred))
        epochs.append([dict(r) for r in metric.rows])
    assert calls == [2, 2, 2]  # epoch 1: model + LCI; epoch 2: model only
    assert epochs[0] == epochs[1]
    changed = dict(batch, target=batch["target"].clone())
    changed["target"][1] += 0.1  # same (subject, draw), other content: not served from the cache
    metric.reset()
    metric.iteration_completed(_Engine(changed, pred))
    assert calls[3:] == [2, 1]
    lci = last_context_image(changed["context"], changed["context_mask"])
    ref = compute_forecast_metrics(lci[1], changed["target"][1], lci[1])
    assert metric.rows[1]["lci_nrmse"] == pytest.approx(ref["nrmse"]) and metric.rows[0] == epochs[0][0]


def _phantom_samples(n_draws: int, seed: int):
    """Discrete (grid + LOCF) samples of one tiny heart phantom: target slot 9 from context slots <= 5."""
    frames, times = make_heart_series(seed, spatial_size=(16, 16, 8), num_frames=12)
    series = torch.from_numpy(frames)[:, None]
    times = torch.from_numpy(np.asarray(times, dtype=np.float32))
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n_draws):
        ctx = sorted(set(rng.choice(6, size=3, replace=False).tolist()) | {5})
        s = select_context(series, times, 9, ctx, max_context=11)
        slots, slot_t, occ = GridEmbed(11, 1 / 11)(s["context"], s["context_time"], s["context_mask"])
        s.update(context=FillLOCF()(slots, occ), context_time=slot_t, context_mask=occ)
        out.append(s)
    return out


@pytest.mark.slow
def test_overfit_tiny_phantom_beats_lci():
    torch.manual_seed(0)
    samples = _phantom_samples(4, seed=7)
    batch = {k: torch.stack([torch.as_tensor(s[k]) for s in samples]) for k in samples[0]}
    net = CronosUNet(num_frames=11, in_channels=1, channels=8, attention=False, time_mode="discrete", cond_dim=32)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=150,
        train_data_loader=[batch],
        network=net,
        optimizer=opt,
        loss_function=FlowMatchingLoss(),
        prepare_batch=FlowMatchingPrepareBatch("discrete"),
        inferer=SimpleInferer(),
        decollate=False,
    )
    trainer.run()
    x0, target, _, kw = ForecastPrepareBatch("discrete")(batch)
    with torch.no_grad():
        pred = ForecastInferer("euler", 10)(x0, net.eval(), **kw)
    lci = last_context_image(batch["context"], batch["context_mask"])
    model_mse = float(((pred - target) ** 2).mean())
    lci_mse = float(((lci - target) ** 2).mean())
    assert model_mse < 0.5 * lci_mse, (model_mse, lci_mse)
    assert tie_padding(x0, kw["count_mask"]) is x0  # discrete: every slot counts, nothing is tied


def test_log_run_summary_with_and_without_validation(tmp_path, caplog):
    """The run summary reports the best validated epoch, or (no evaluator: generation bundles) only the paths."""
    from monai_tfm.handlers import TrainingCheckpointer
    from monai_tfm.utils import log_run_summary

    net = torch.nn.Linear(2, 2)
    plain = TrainingCheckpointer(tmp_path / "a", {"network": net}, network=net)
    with caplog.at_level("INFO", logger="monai_tfm"):
        summary = log_run_summary(plain)
    assert summary == {
        "model": str(tmp_path / "a" / "models" / "model.pt"),
        "resume_checkpoint": str(tmp_path / "a" / "checkpoints" / "last.pt"),
    }
    assert "no validation" in caplog.text
    validated = TrainingCheckpointer(tmp_path / "b", {"network": net}, network=net, evaluator=object())
    validated.best, validated.best_epoch = 0.25, 3
    summary = log_run_summary(validated)
    assert summary["best"] == 0.25 and summary["best_epoch"] == 3 and summary["key_metric"] == "val_nrmse"


def test_step_budget_stops_mid_epoch():
    from ignite.engine import Engine

    from monai_tfm.handlers import StepBudget, epochs_for_steps

    assert epochs_for_steps(7, 5, 99) == 2 and epochs_for_steps(None, 5, 4) == 4 and epochs_for_steps(10, 5, 1) == 2
    with pytest.raises(ValueError):
        epochs_for_steps(-1, 5, 1)
    engine = Engine(lambda e, b: b)
    budget = StepBudget(7)
    budget.attach(engine)
    engine.run(range(5), max_epochs=epochs_for_steps(7, 5, 1))
    assert engine.state.iteration == 7 and budget.steps == 7 and budget.seconds_per_step >= 0
    unlimited = StepBudget(None)
    engine = Engine(lambda e, b: b)
    unlimited.attach(engine)
    engine.run(range(5), max_epochs=2)
    assert engine.state.iteration == 10


def test_step_budget_median_ignores_a_slow_first_step(tmp_path):
    """A calibration run turns seconds into steps with the median step time: one slow warm-up step moves the mean."""
    import json
    import time

    from ignite.engine import Engine

    from monai_tfm.handlers import StepBudget

    def step(engine, batch):
        time.sleep(0.5 if engine.state.iteration == 1 else 0.001)

    budget = StepBudget(5)
    engine = Engine(step)
    budget.attach(engine)
    engine.run(range(5), max_epochs=1)
    assert len(budget.step_seconds) == 5 and budget.steps == 5
    assert budget.median_seconds_per_step < 0.05 < 0.09 < budget.seconds_per_step
    assert abs(budget.seconds_per_step - sum(budget.step_seconds) / 5) < 1e-9
    budget.write(str(tmp_path / "budget.json"), threads=1)
    record = json.loads((tmp_path / "budget.json").read_text())
    assert record["median_seconds_per_step"] == budget.median_seconds_per_step and record["threads"] == 1
