# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Grid embedding and LOCF (CRONOS appendix A.1) and the context sampling protocol (docs/method.md sections 3 and 6)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.data import list_data_collate

from monai_tfm.transforms import (
    ContextProtocol,
    FillLOCF,
    FillLOCFd,
    GridEmbed,
    GridEmbedd,
    InferenceContextd,
    RandContextd,
    SelectContextd,
    TimeRange,
    draw_context,
    grid_slots,
    make_fixed_draws,
    select_context,
    subject_rng,
)


def _frames(values):
    """Frames (T, 1, 2, 2, 2) whose voxels all equal the given values, so slots are identifiable."""
    return torch.tensor(values, dtype=torch.float32).reshape(-1, 1, 1, 1, 1).expand(-1, 1, 2, 2, 2).clone()


class TestGrid:
    def test_slot_formula(self):
        # q(t) = clip(1 + floor((t - g1)/Delta + 1/2), 1, K), here 0-based; g1 = 1, Delta = 2, K = 4
        times = torch.tensor([1.0, 1.9, 2.1, 4.9, 5.0, 100.0, -7.0])
        assert grid_slots(times, 1.0, 2.0, 4).tolist() == [0, 0, 1, 2, 2, 3, 0]
        with pytest.raises(ValueError, match="spacing"):
            grid_slots(times, 0.0, 0.0, 4)

    def test_embed_collision_latest_wins_and_padding_ignored(self):
        frames = _frames([10, 20, 30, 99])
        times = torch.tensor([0.0, 2.1, 1.8, 3.0])  # frames 1 and 2 both fall into slot 2; frame 1 is later
        mask = torch.tensor([True, True, True, False])  # frame 3 is padding
        slots, slot_t, occ = GridEmbed(num_slots=5, spacing=1.0)(frames, times, mask)
        assert occ.tolist() == [True, False, True, False, False]
        assert slots[:, 0, 0, 0, 0].tolist() == [10, 0, 20, 0, 0]
        torch.testing.assert_close(slot_t, torch.arange(5, dtype=torch.float32))

    def test_locf_leading_gap_and_carry(self):
        slots = _frames([0, 5, 0, 0, 7, 0])
        occ = torch.tensor([0, 1, 0, 0, 1, 0]).bool()
        filled = FillLOCF()(slots, occ)
        assert filled[:, 0, 0, 0, 0].tolist() == [5, 5, 5, 5, 7, 7]
        zeros = FillLOCF("zeros")(slots, occ)
        assert zeros[:, 0, 0, 0, 0].tolist() == [0, 5, 0, 0, 7, 0]
        assert slots[:, 0, 0, 0, 0].tolist() == [0, 5, 0, 0, 7, 0]  # input untouched

    def test_all_missing_raises(self):
        with pytest.raises(ValueError, match="no observed frame"):
            FillLOCF()(_frames([1, 2]), torch.zeros(2, dtype=torch.bool))
        d = {"subject": "p7", "context": _frames([1, 2]), "context_mask": torch.zeros(2, dtype=torch.bool)}
        with pytest.raises(ValueError, match="p7"):
            FillLOCFd()(d)

    def test_dict_pipeline_keeps_occupancy(self):
        d = {
            "context": _frames([1, 3, 3]),
            "context_time": torch.tensor([0.0, 0.3, 0.3]),
            "context_mask": torch.tensor([True, True, False]),
        }
        d = FillLOCFd()(GridEmbedd(num_slots=4, spacing=0.1)(d))
        assert d["context_mask"].tolist() == [True, False, False, True]
        assert d["context"][:, 0, 0, 0, 0].tolist() == [1, 1, 1, 3]
        assert d["context"].shape == (4, 1, 2, 2, 2)


class TestContext:
    protocol = ContextProtocol(gap=3, keep_prob=0.5, min_keep=1, max_context=11)

    def test_draws_respect_protocol(self):
        rng = np.random.default_rng(0)
        targets = set()
        for _ in range(500):
            d = draw_context(rng, 12, self.protocol)
            targets.add(d.target_index)
            assert 4 <= d.target_index <= 11
            assert 1 <= len(d.context_indices) and list(d.context_indices) == sorted(d.context_indices)
            assert max(d.context_indices) < d.target_index - 3  # the 3 frames before the target are hidden
        assert targets == set(range(4, 12))

    def test_min_gap_draws_every_gap(self):
        rng = np.random.default_rng(2)
        protocol = ContextProtocol(gap=3, min_gap=0, keep_prob=1.0, max_context=11)
        gaps = set()
        for _ in range(400):
            d = draw_context(rng, 12, protocol)
            assert 4 <= d.target_index <= 11  # the target range stays that of the evaluation gap
            gaps.add(d.target_index - max(d.context_indices) - 1)  # keep_prob 1: the hidden frames are the gap
        assert gaps == {0, 1, 2, 3}
        # without min_gap the draws are those of the plain protocol (same generator, same numbers)
        plain = ContextProtocol(gap=3, keep_prob=0.5, max_context=11)
        a = [draw_context(np.random.default_rng(5), 12, plain) for _ in range(3)]
        b = [draw_context(np.random.default_rng(5), 12, ContextProtocol(**{**plain.__dict__})) for _ in range(3)]
        assert a == b
        for bad in (-1, 4):
            with pytest.raises(ValueError, match="min_gap"):
                ContextProtocol(gap=3, min_gap=bad)

    def test_keep_all_window_last_and_samples(self):
        rng = np.random.default_rng(1)
        d = draw_context(rng, 10, ContextProtocol(target="last", gap=3, window=4))
        assert d.target_index == 9 and d.context_indices == (2, 3, 4, 5)
        d = draw_context(rng, 10, ContextProtocol(target="last", num_context_samples=2))
        assert d.target_index == 9 and len(d.context_indices) == 2
        d = draw_context(rng, 12, ContextProtocol(gap=0, max_context=2))
        assert len(d.context_indices) <= 2
        with pytest.raises(ValueError, match="too short"):
            draw_context(rng, 4, ContextProtocol(gap=3))

    def test_subject_rng_is_keyed(self):
        a = subject_rng(0, "p1", 0).random(3)
        assert np.array_equal(a, subject_rng(0, "p1", 0).random(3))
        assert not np.array_equal(a, subject_rng(0, "p1", 1).random(3))
        assert not np.array_equal(a, subject_rng(1, "p1", 0).random(3))
        assert not np.array_equal(a, subject_rng(0, "p2", 0).random(3))

    def test_fixed_draws_reproducible_and_persisted(self, tmp_path):
        items = [{"subject": f"s{i}", "frames": [{}] * 12} for i in range(5)]
        a = make_fixed_draws(items, self.protocol, seed=3, num_draws=2, path=tmp_path / "run_a" / "draws.json")
        b = make_fixed_draws(items[::-1], self.protocol, seed=3, num_draws=2, path=tmp_path / "run_b" / "draws.json")
        key = lambda x: (x["subject"], x["draw"])  # noqa: E731
        assert sorted((key(x), x["target_index"], x["context_indices"]) for x in a) == sorted(
            (key(x), x["target_index"], x["context_indices"]) for x in b
        )
        saved = json.loads((tmp_path / "run_a" / "draws.json").read_text())
        assert saved["seed"] == 3 and len(saved["draws"]) == 10
        # reuse of an existing file, and refusal when the protocol changed
        again = make_fixed_draws(items, self.protocol, seed=3, num_draws=2, path=tmp_path / "run_a" / "draws.json")
        assert [key(x) for x in again] == [key(x) for x in a]
        with pytest.raises(ValueError, match="another protocol"):
            make_fixed_draws(items, ContextProtocol(gap=2), seed=3, num_draws=2, path=tmp_path / "run_a" / "draws.json")
        # a file written before a protocol field existed (here: min_gap) is still the same protocol
        del saved["protocol"]["min_gap"]
        (tmp_path / "run_a" / "draws.json").write_text(json.dumps(saved))
        again = make_fixed_draws(items, self.protocol, seed=3, num_draws=2, path=tmp_path / "run_a" / "draws.json")
        assert [key(x) for x in again] == [key(x) for x in a]
        with pytest.raises(ValueError, match="another protocol"):
            make_fixed_draws(items, self.protocol, seed=4, num_draws=2, path=tmp_path / "run_a" / "draws.json")

    def test_select_context_pads_with_last_frame(self):
        series = _frames(list(range(8)))
        times = torch.linspace(0, 0.7, 8)
        out = select_context(series, times, target_index=7, context_indices=[1, 3], max_context=4)
        assert out["context"][:, 0, 0, 0, 0].tolist() == [1, 3, 3, 3]
        assert out["context_mask"].tolist() == [True, True, False, False]
        torch.testing.assert_close(out["context_time"], times[[1, 3, 3, 3]])
        assert float(out["target"][0, 0, 0, 0]) == 7 and float(out["target_time"]) == pytest.approx(0.7)
        with pytest.raises(ValueError, match="before the target"):
            select_context(series, times, 2, [1, 3])

    def test_rand_context_dict(self):
        series = _frames(list(range(12)))
        item = {"subject": "s", "series": series, "series_time": torch.linspace(0, 1, 12), "frames": [1, 2]}
        t = RandContextd(self.protocol)
        t.set_random_state(seed=5)
        out = t(item)
        assert out["context"].shape == (11, 1, 2, 2, 2) and out["draw"] == -1 and "frames" not in out
        assert "series" not in out
        k = out["target_index"]
        assert float(out["target"][0, 0, 0, 0]) == k
        t2 = RandContextd(self.protocol)
        t2.set_random_state(seed=5)
        assert t2(item)["target_index"] == k
        fixed = SelectContextd(max_context=11)({**item, "target_index": 5, "context_indices": [0, 1]})
        assert fixed["context_mask"].sum() == 2 and float(fixed["target"][0, 0, 0, 0]) == 5


class TestTargetLead:
    """A target-anchored grid ending ``lead`` before the target, and inference context that hides the same gap."""

    def _sample(self, idx, target):
        frames = _frames([float(i) for i in range(20)])
        times = torch.arange(20, dtype=torch.float32)
        return {
            "context": frames[idx],
            "context_time": times[idx],
            "context_mask": torch.ones(len(idx), dtype=torch.bool),
            "target_time": times[target],
        }

    def test_grid_lead(self):
        # 4 one-frame slots ending 3 frames before the target 12: g = 6, 7, 8, 9
        out = GridEmbedd(num_slots=4, spacing=1.0, anchor="target", lead=3.0)(self._sample([5, 7, 9], 12))
        torch.testing.assert_close(out["context_time"], torch.tensor([6.0, 7.0, 8.0, 9.0]))
        assert out["context_mask"].tolist() == [True, True, False, True]  # frame 5 is older: first slot
        assert out["context"][:, 0, 0, 0, 0].tolist() == [5, 7, 0, 9]
        # lead None = one spacing (unchanged default); lead must be positive
        default = GridEmbedd(num_slots=4, spacing=2.0, anchor="target")(self._sample([5, 7, 9], 12))
        torch.testing.assert_close(default["context_time"], torch.tensor([4.0, 6.0, 8.0, 10.0]))
        with pytest.raises(ValueError, match="lead"):
            GridEmbedd(num_slots=4, spacing=1.0, anchor="target", lead=0.0)

    def test_inference_min_lead(self):
        times = torch.arange(12, dtype=torch.float32)
        item = {"subject": "s", "series": _frames(list(range(12))), "series_time": times}
        out = InferenceContextd(target_time="last", max_context=7, min_lead=3.0)(item)
        assert out["context_time"].tolist() == [2.0, 3, 4, 5, 6, 7, 8] and float(out["target_time"]) == 11.0
        assert float(out["target"][0, 0, 0, 0]) == 11.0
        plain = InferenceContextd(target_time="last", max_context=7)(item)  # default: every earlier frame
        assert plain["context_time"].tolist() == [4.0, 5, 6, 7, 8, 9, 10]
        with pytest.raises(ValueError, match="at least 3.0 before"):
            InferenceContextd(target_time=2.0, min_lead=3.0)(item)
        with pytest.raises(ValueError, match="min_lead"):
            InferenceContextd(min_lead=-1.0)


class TestFollowUp:
    """Irregular follow-up visits (LUMIERE): target = last visit, context = all earlier visits, real weeks."""

    weeks = torch.tensor([0.0, 1 / 7, 12.0, 44.0])

    def test_target_last_context_all_earlier(self):
        protocol = ContextProtocol(target="last", max_context=6)
        rng = np.random.default_rng(0)
        assert draw_context(rng, 4, protocol) == draw_context(rng, 4, protocol)  # nothing random
        assert draw_context(rng, 4, protocol).target_index == 3
        assert draw_context(rng, 4, protocol).context_indices == (0, 1, 2)
        assert draw_context(rng, 9, protocol).context_indices == (2, 3, 4, 5, 6, 7)  # the latest 6
        with pytest.raises(ValueError, match="too short"):
            draw_context(rng, 1, protocol)

    def test_series_of_different_lengths_collate(self):
        t = RandContextd(ContextProtocol(target="last", max_context=6))
        a = t({"subject": "a", "series": _frames([1, 2, 3, 4]), "series_time": self.weeks})
        b = t({"subject": "b", "series": _frames([5, 6]), "series_time": torch.tensor([0.0, 20.0])})
        assert "series_time" not in a and "series" not in a
        batch = list_data_collate([a, b])
        assert batch["context"].shape == (2, 6, 1, 2, 2, 2)
        assert batch["context_mask"].sum(1).tolist() == [3, 1]
        assert batch["target_time"].tolist() == [44.0, 20.0]
        assert batch["target"][:, 0, 0, 0, 0].tolist() == [4, 6]

    def test_grid_anchored_at_target(self):
        d = {"context": _frames([1, 2, 3, 4]), "context_time": self.weeks, "context_mask": torch.ones(4, dtype=bool)}
        # 4 slots of 12 weeks ending one spacing before week 60: g = 12, 24, 36, 48
        out = GridEmbedd(num_slots=4, spacing=12.0, anchor="target")({**d, "target_time": torch.tensor(60.0)})
        assert out["context_mask"].tolist() == [True, False, False, True]
        assert out["context"][:, 0, 0, 0, 0].tolist() == [3, 0, 0, 4]  # weeks 0, 1/7 and 12: the latest wins
        assert out["context_time"].tolist() == [12.0, 24.0, 36.0, 48.0]
        # a target long after every visit: all fall into the first slot
        far = GridEmbedd(num_slots=4, spacing=12.0, anchor="target")({**d, "target_time": 200.0})
        assert far["context_mask"].tolist() == [True, False, False, False] and far["context"][0, 0, 0, 0, 0] == 4
        # the fixed grid is unchanged
        fixed = GridEmbedd(num_slots=4, spacing=12.0)({**d, "target_time": 60.0})
        assert fixed["context_mask"].tolist() == [True, True, False, True]
        with pytest.raises(KeyError, match="target_time"):
            GridEmbedd(num_slots=4, spacing=12.0, anchor="target")(d)
        with pytest.raises(ValueError, match="anchor"):
            GridEmbedd(num_slots=4, spacing=12.0, anchor="last")

    def test_inference_target_last(self):
        item = {"subject": "p", "series": _frames([1, 2, 3, 4]), "series_time": self.weeks}
        out = InferenceContextd(target_time="last", max_context=6)(item)
        assert float(out["target_time"]) == 44.0 and float(out["target"][0, 0, 0, 0]) == 4
        assert out["context_mask"].tolist() == [True, True, True, False, False, False]
        torch.testing.assert_close(out["context_time"], self.weeks[[0, 1, 2, 2, 2, 2]])
        assert "series_time" not in out and "series" not in out
        # per item, over a numeric default; a number forecasts that week from the visits before it
        assert float(InferenceContextd(target_time=5.0)({**item, "target_time": "last"})["target_time"]) == 44.0
        mid = InferenceContextd(target_time=20.0)(item)
        assert "target" not in mid and mid["context_time"].tolist() == pytest.approx([0.0, 1 / 7, 12.0])
        with pytest.raises(ValueError, match="'first'"):
            InferenceContextd(target_time="first")
        with pytest.raises(ValueError, match="'next'"):
            InferenceContextd()({**item, "target_time": "next"})


class TestInferenceRules:
    """The strict inference rules of the transforms that every forecast path (command, bundle, server) applies."""

    def test_fixed_grid_context_indices(self, caplog):
        grid = GridEmbedd(num_slots=4, spacing=0.5, origin=0.0)  # slots 0, 0.5, 1, 1.5; forecasts up to 2
        assert grid.context_indices([0.0, 0.5, 1.5], 2.0) == [0, 1, 2]
        with caplog.at_level("WARNING"):
            assert grid.context_indices([0.0, 0.5, 1.5], 1.0, ["a", "b", "c"]) == [0, 1]
        assert "after the target time 1 are not used (c)" in caplog.text
        with pytest.raises(ValueError, match="target time 2.6 lies outside"):
            grid.context_indices([0.0], 2.6)
        with pytest.raises(ValueError, match=r"scan 'b' at time -0.3 lies outside the time grid.*\[-0.25, 1.75\)"):
            grid.context_indices([-0.3, 0.5], 1.0, ["b", "c"])
        with pytest.raises(ValueError, match="no scan at or before the target time 0.2"):
            grid.context_indices([0.5], 0.2)
        with caplog.at_level("WARNING"):
            assert grid.context_indices([0.4, 0.6], 1.0, ["p", "q"]) == [0, 1]
        assert "'p' and 'q' fall into the same time slot 1" in caplog.text

    def test_anchored_grid_hides_the_gap_before_the_target(self):
        # 3 slots ending lead = 3 before the target: at target 10 the slots are 5, 6, 7; scans at 8 and 9 are hidden
        grid = GridEmbedd(num_slots=3, spacing=1.0, anchor="target", lead=3.0)
        assert grid.context_indices([float(t) for t in range(10)], 10.0) == list(range(8))
        with pytest.raises(ValueError, match="outside the hidden gap"):
            grid.context_indices([8.0, 9.0], 10.0)
        # the slots the indices go to are the ones __call__ fills (scans older than the grid share the first slot)
        kept = grid.context_indices([2.0, 6.0, 7.0], 10.0)
        out = grid(
            {
                "context": _frames([2.0, 6.0, 7.0])[kept],
                "context_time": torch.tensor([2.0, 6.0, 7.0]),
                "context_mask": torch.ones(3, dtype=torch.bool),
                "target_time": torch.tensor(10.0),
            }
        )
        assert out["context_time"].tolist() == [5.0, 6.0, 7.0] and out["context"][:, 0, 0, 0, 0].tolist() == [2, 6, 7]

    def test_time_range(self):
        assert TimeRange.from_config(None) is None
        rng = TimeRange.from_config([0, 1], 0.25)
        assert rng == TimeRange(0.0, 1.0, 0.25) and rng.accepted == (-0.25, 1.25)
        rng.check([0.0, 1.2], 1.25)
        with pytest.raises(ValueError, match=r"target time 1.3 lies outside the trained times: .* 0..1 .* -0.25..1.25"):
            rng.check([0.0], 1.3)
        with pytest.raises(ValueError, match="scan 'late' at time 2 lies outside"):
            rng.check([0.0, 2.0], 0.5, ["early", "late"])
        for value, margin in (([1, 0], 0), ([0, float("inf")], 0), ([0, 1], -1)):
            with pytest.raises(ValueError, match="finite with lo <= hi"):
                TimeRange.from_config(value, margin)
        with pytest.raises(ValueError, match=r"must be \[lo, hi\]"):
            TimeRange.from_config([0, 1, 2])


def test_rand_hold_still_makes_a_series_still():
    from monai.data import MetaTensor

    from monai_tfm.transforms import RandHoldStilld

    series = MetaTensor(torch.arange(5.0).reshape(5, 1, 1, 1, 1).expand(5, 1, 2, 3, 2).clone(), affine=torch.eye(4) * 2)
    t = RandHoldStilld("series", prob=1.0)
    t.set_random_state(3)
    out = t({"series": series, "series_time": torch.arange(5.0)})["series"]
    assert out.shape == series.shape and isinstance(out, MetaTensor) and torch.equal(out.affine, series.affine)
    k = int(out[0, 0, 0, 0, 0])
    assert torch.equal(out, series[k : k + 1].expand_as(series)) and 0 <= k < 5
    same = RandHoldStilld("series", prob=0.0)({"series": series})["series"]
    assert torch.equal(same, series)
    # the probability: about 30 % of 400 seeded draws are still
    still = 0
    for s in range(400):
        x = RandHoldStilld("series", prob=0.3).set_random_state(s)({"series": series})["series"]
        still += bool((x == x[0]).all())
    assert 80 < still < 160
    with pytest.raises(ValueError, match="prob must be in"):
        RandHoldStilld("series", prob=1.5)
