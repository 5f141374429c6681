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
"""Tests of monai_tfm.metrics against independent float64 numpy/scipy references."""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
import unittest
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from scipy.signal import correlate

from monai_tfm.metrics import (
    FORECAST_METRICS,
    HIGHER_IS_BETTER,
    aggregate_runs,
    compute_forecast_metrics,
    compute_forecast_metrics_batch,
    format_runs_markdown,
    format_summary_markdown,
    make_row,
    read_per_sample_csv,
    ssim_window_sizes,
    summarise,
    write_per_sample_csv,
    write_summary,
)

__all__: list[str] = []

# MONAI's compute_ssim_and_cs casts to float32: the local variances E[x^2] - E[x]^2 lose digits, most on smooth data
# (observed up to 2.1e-3 on the x100 scale against float64; MONAI's code run in float64 agrees to 2e-5).
SSIM_ATOL = 5e-3


# ----------------------------------------------------------------------------------------------------------------
# independent float64 references
# ----------------------------------------------------------------------------------------------------------------
def ref_window(n: int) -> int:
    """Largest odd window <= min(11, n)."""
    w = min(11, n)
    return w if w % 2 else w - 1


def ref_gaussian_kernel_3d(shape: tuple[int, int, int], sigma: float = 1.5) -> np.ndarray:
    """Normalised 3D Gaussian on a grid of the given odd sizes, centred, built as a full 3D array."""
    grids = np.meshgrid(*[np.arange(n) - (n - 1) / 2.0 for n in shape], indexing="ij")
    r2 = sum(g**2 for g in grids)
    k = np.exp(-r2 / (2.0 * sigma**2))
    return k / k.sum()


def ref_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """3D SSIM x100 (valid correlation, biased local moments), mean over channels."""
    c1, c2 = (0.01 * 1.0) ** 2, (0.03 * 1.0) ** 2
    kernel = ref_gaussian_kernel_3d(tuple(ref_window(n) for n in x.shape[1:]))
    values = []
    for xc, yc in zip(x.astype(np.float64), y.astype(np.float64)):

        def filt(a: np.ndarray) -> np.ndarray:
            return correlate(a, kernel, mode="valid", method="direct")

        mx, my = filt(xc), filt(yc)
        vx = filt(xc * xc) - mx**2
        vy = filt(yc * yc) - my**2
        cxy = filt(xc * yc) - mx * my
        smap = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        values.append(smap.mean())
    return 100.0 * float(np.mean(values))


def ref_metrics(pred: np.ndarray, target: np.ndarray, lci: np.ndarray, thr: float = 0.05) -> dict[str, float]:
    p, y, lc = (np.asarray(a, dtype=np.float64) for a in (pred, target, lci))
    mse = float(np.sum((p - y) ** 2) / p.size)
    rmse = math.sqrt(mse)
    pc = np.clip(p, 0.0, 1.0)
    mse_clip = float(np.sum((pc - y) ** 2) / p.size)
    region = np.abs(y - lc) > thr
    mse_lci = float(np.sum((lc - y) ** 2) / p.size)
    out = {
        "mse": mse,
        "rmse": rmse,
        "nrmse": rmse / (y.max() - y.min()),
        "psnr": 10.0 * math.log10(1.0 / mse_clip),
        "ssim": ref_ssim(pc, y),
        "skill": 1.0 - mse / mse_lci,
    }
    if region.any():
        cm = float(np.sum(((p - y) ** 2)[region]) / region.sum())
        cl = float(np.sum(((lc - y) ** 2)[region]) / region.sum())
        out["change_rmse"] = math.sqrt(cm)
        out["change_skill"] = 1.0 - cm / cl
    else:
        out["change_rmse"] = out["change_skill"] = math.nan
    return out


def make_case(shape: tuple[int, ...], seed: int, smooth: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Target in [0, 1], LCI a perturbed target, prediction partly outside [0, 1]."""
    rng = np.random.default_rng(seed)
    target = rng.random(shape)
    if smooth:
        target = gaussian_filter(target, sigma=(0, 2, 2, 2))
        target = (target - target.min()) / (target.max() - target.min())
    lci = np.clip(target + 0.08 * rng.standard_normal(shape), 0, 1)
    pred = target + 0.06 * rng.standard_normal(shape)
    pred.flat[:7] = [-0.3, 1.4, 2.0, -1.0, 0.5, 1.1, -0.05]
    return pred, target, lci


CASES = [
    ((1, 20, 24, 5), 0, False),  # thin: last axis window shrinks to 5
    ((2, 13, 17, 12), 1, False),  # odd sizes, two channels; 12 -> 11
    ((1, 9, 10, 11), 2, True),  # 9 -> 9, 10 -> 9, 11 -> 11, smooth data
    ((1, 4, 15, 2), 3, False),  # 4 -> 3, 2 -> 1
]


class TestWindowSizes(unittest.TestCase):
    def test_rule(self):
        self.assertEqual(ssim_window_sizes((20, 24, 5)), (11, 11, 5))
        self.assertEqual(ssim_window_sizes((12, 11, 10)), (11, 11, 9))
        self.assertEqual(ssim_window_sizes((4, 2, 1)), (3, 1, 1))
        for n in range(1, 30):
            self.assertEqual(ssim_window_sizes((n,))[0], ref_window(n))

    def test_errors(self):
        with self.assertRaises(ValueError):
            ssim_window_sizes((5, 5, 5), win_size=10)
        with self.assertRaises(ValueError):
            ssim_window_sizes((5, 0, 5))


class TestForecastMetrics(unittest.TestCase):
    def assert_metrics_close(self, got: dict, want: dict, rtol: float = 1e-9):
        self.assertEqual(set(FORECAST_METRICS), set(got))
        for name in FORECAST_METRICS:
            if math.isnan(want[name]):
                self.assertTrue(math.isnan(got[name]), name)
            elif name == "ssim":
                self.assertAlmostEqual(got[name], want[name], delta=SSIM_ATOL, msg=name)
            else:
                np.testing.assert_allclose(got[name], want[name], rtol=rtol, atol=1e-12, err_msg=name)

    def test_against_reference(self):
        for shape, seed, smooth in CASES:
            with self.subTest(shape=shape, smooth=smooth):
                pred, target, lci = make_case(shape, seed, smooth)
                got = compute_forecast_metrics(pred, target, lci)
                self.assert_metrics_close(got, ref_metrics(pred, target, lci))
                self.assertTrue(all(isinstance(v, float) for v in got.values()))

    def test_torch_inputs_and_batch(self):
        preds, targets, lcis = zip(*(make_case((2, 13, 17, 12), s) for s in range(3)))
        p, t, lc = (np.stack(a) for a in (preds, targets, lcis))
        batch = compute_forecast_metrics_batch(torch.from_numpy(p), torch.from_numpy(t), torch.from_numpy(lc))
        self.assertEqual(len(batch), 3)
        for i in range(3):
            single = compute_forecast_metrics(torch.from_numpy(p[i]), t[i], lc[i])
            for name in FORECAST_METRICS:
                self.assertAlmostEqual(batch[i][name], single[name], delta=1e-9 if name != "ssim" else 1e-4)
            self.assert_metrics_close(batch[i], ref_metrics(p[i], t[i], lc[i]))
        # float32 tensors are promoted; the result is close to the float64 one
        f32 = compute_forecast_metrics(torch.from_numpy(p[0]).float(), torch.from_numpy(t[0]).float(), lc[0])
        self.assertAlmostEqual(f32["rmse"], batch[0]["rmse"], delta=1e-6)
        self.assertEqual(compute_forecast_metrics_batch(p[:0], t[:0], lc[:0]), [])

    def test_multichannel_is_mean_over_channels(self):
        pred, target, lci = make_case((2, 13, 17, 12), 5)
        both = compute_forecast_metrics(pred, target, lci)["ssim"]
        per = [compute_forecast_metrics(pred[c : c + 1], target[c : c + 1], lci[c : c + 1])["ssim"] for c in (0, 1)]
        self.assertAlmostEqual(both, float(np.mean(per)), delta=1e-4)

    def test_identical(self):
        _, target, lci = make_case((1, 20, 24, 5), 6)
        m = compute_forecast_metrics(target, target, lci)
        self.assertEqual(m["mse"], 0.0)
        self.assertEqual(m["rmse"], 0.0)
        self.assertEqual(m["nrmse"], 0.0)
        self.assertEqual(m["change_rmse"], 0.0)
        self.assertEqual(m["psnr"], math.inf)  # documented: no cap
        self.assertAlmostEqual(m["ssim"], 100.0, places=5)
        self.assertEqual(m["skill"], 1.0)
        self.assertEqual(m["change_skill"], 1.0)

    def test_lci_against_itself(self):
        _, target, lci = make_case((1, 20, 24, 5), 7)
        m = compute_forecast_metrics(lci, target, lci)
        self.assertEqual(m["skill"], 0.0)
        self.assertEqual(m["change_skill"], 0.0)

    def test_closer_prediction_has_positive_skill(self):
        _, target, lci = make_case((1, 13, 17, 12), 8)
        pred = lci + 0.5 * (target - lci)  # error halved everywhere -> MSE ratio 1/4
        m = compute_forecast_metrics(pred, target, lci)
        self.assertAlmostEqual(m["skill"], 0.75, places=12)
        self.assertAlmostEqual(m["change_skill"], 0.75, places=12)
        worse = compute_forecast_metrics(lci + 3.0 * (target - lci), target, lci)  # error doubled -> 1 - 4
        self.assertAlmostEqual(worse["skill"], -3.0, places=12)
        self.assertTrue(HIGHER_IS_BETTER["skill"] and not HIGHER_IS_BETTER["rmse"])

    def test_empty_change_region(self):
        rng = np.random.default_rng(9)
        target = rng.random((1, 10, 12, 6))
        lci = target + 0.04 * np.sign(rng.standard_normal(target.shape))  # |diff| = 0.04 <= 0.05 everywhere
        m = compute_forecast_metrics(target + 0.01, target, lci)
        self.assertTrue(math.isnan(m["change_rmse"]))
        self.assertTrue(math.isnan(m["change_skill"]))
        self.assertTrue(math.isfinite(m["skill"]))
        # a lower threshold finds the change again
        m = compute_forecast_metrics(target + 0.01, target, lci, change_threshold=0.03)
        self.assertAlmostEqual(m["change_rmse"], 0.01, places=12)

    def test_lci_equal_target_gives_nan_skill(self):
        _, target, _ = make_case((1, 8, 8, 8), 10)
        m = compute_forecast_metrics(target + 0.1, target, target)
        self.assertTrue(math.isnan(m["skill"]))
        self.assertTrue(math.isnan(m["change_skill"]))

    def test_clipping_only_for_psnr_ssim(self):
        rng = np.random.default_rng(11)
        target = rng.random((1, 12, 14, 7))
        target.flat[::5] = 1.0
        target.flat[1::5] = 0.0
        pred = target.copy()
        pred.flat[::5] = 1.3  # clipped back to the target value 1
        pred.flat[1::5] = -0.2  # clipped back to the target value 0
        m = compute_forecast_metrics(pred, target, target * 0.5)
        self.assertEqual(m["psnr"], math.inf)
        self.assertAlmostEqual(m["ssim"], 100.0, places=5)
        n = target.size
        want_mse = (len(range(0, n, 5)) * 0.3**2 + len(range(1, n, 5)) * 0.2**2) / n
        self.assertAlmostEqual(m["mse"], want_mse, places=12)
        self.assertAlmostEqual(m["rmse"], math.sqrt(want_mse), places=12)

    def test_constant_target(self):
        target = np.full((1, 6, 7, 8), 0.4)
        with self.assertLogs("monai_tfm.metrics.forecast", level="WARNING"):
            m = compute_forecast_metrics(target + 0.1, target, target)
        self.assertTrue(math.isnan(m["nrmse"]))
        self.assertAlmostEqual(m["rmse"], 0.1, places=12)

    def test_bad_inputs(self):
        a = np.zeros((1, 4, 4, 4))
        with self.assertRaises(ValueError):
            compute_forecast_metrics(a, np.zeros((1, 4, 4, 5)), a)
        with self.assertRaises(ValueError):
            compute_forecast_metrics(a[0], a[0], a[0])
        with self.assertRaises(TypeError):
            compute_forecast_metrics_batch([[0.0]], a[None], a[None])


# ----------------------------------------------------------------------------------------------------------------
# reports
# ----------------------------------------------------------------------------------------------------------------
def make_rows(n: int = 9, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        values = {}
        for method in ("model", "lci"):
            values[method] = {m: float(rng.normal(1.0 if method == "model" else 2.0)) for m in FORECAST_METRICS}
        if i % 3 == 0:
            values["model"]["change_rmse"] = values["lci"]["change_rmse"] = math.nan
        rows.append(make_row(f"subj_{i // 3}", i % 3, 0.25 * i, values))
    return rows


class TestReport(unittest.TestCase):
    def test_summarise_against_numpy(self):
        rows = make_rows()
        summary = summarise(rows, FORECAST_METRICS, ["model"])
        self.assertEqual(list(summary), ["model", "lci"])  # LCI added
        for method in ("model", "lci"):
            for metric in FORECAST_METRICS:
                v = np.array([r[f"{method}_{metric}"] for r in rows])
                v = v[~np.isnan(v)]
                s = summary[method][metric]
                self.assertEqual(s["n"], v.size)
                self.assertAlmostEqual(s["mean"], np.mean(v), places=12)
                self.assertAlmostEqual(s["std"], np.std(v, ddof=1), places=12)
                self.assertAlmostEqual(s["median"], np.median(v), places=12)
        self.assertEqual(summary["model"]["change_rmse"]["n"], 6)
        with self.assertRaises(KeyError):
            summarise(rows, ["psnr"], ["other"])
        with self.assertRaises(ValueError):
            summarise([], ["psnr"])

    def test_single_value_std_nan(self):
        s = summarise(make_rows(1), ["psnr"])
        self.assertEqual(s["model"]["psnr"]["n"], 1)
        self.assertTrue(math.isnan(s["model"]["psnr"]["std"]))

    def test_markdown(self):
        summary = summarise(make_rows(), ["psnr", "rmse", "change_rmse"], ["model"])
        text = format_summary_markdown(summary)
        lines = text.strip().splitlines()
        self.assertEqual(lines[0], "| method | n | psnr | rmse | change_rmse |")
        self.assertEqual(len(lines), 4)
        self.assertTrue(lines[2].startswith("| model | 9 |"))
        self.assertTrue(lines[3].startswith("| lci | 9 |"))
        s = summary["lci"]["psnr"]
        self.assertIn(f"**{s['mean']:.4g}** +- {s['std']:.4g} ({s['median']:.4g})", lines[3])  # higher psnr best
        s = summary["model"]["rmse"]
        self.assertIn(f"**{s['mean']:.4g}** +- {s['std']:.4g} ({s['median']:.4g})", lines[2])  # lower rmse best
        self.assertIn("[n=6]", lines[2])
        only_lci = format_summary_markdown(summary, metrics=["psnr"], methods=[], bold_best=False)
        self.assertNotIn("model", only_lci)
        self.assertNotIn("**", only_lci)

    def test_csv_round_trip(self):
        rows = make_rows()
        rows[1]["model_psnr"] = math.inf
        with tempfile.TemporaryDirectory() as d:
            path = write_per_sample_csv(rows, Path(d) / "per_sample.csv")
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                self.assertEqual(reader.fieldnames[:3], ["subject", "draw", "target_time"])
                back = list(reader)
            self.assertEqual(len(back), len(rows))
            for row, raw in zip(rows, back):
                self.assertEqual(raw["subject"], row["subject"])
                self.assertEqual(int(raw["draw"]), row["draw"])
                for k, v in row.items():
                    if k in ("subject", "draw"):
                        continue
                    got = float(raw[k])
                    self.assertTrue(got == v or (math.isnan(got) and math.isnan(v)), k)
            self.assertEqual(os.listdir(d), ["per_sample.csv"])
            again = read_per_sample_csv(path)
            s1, s2 = summarise(rows, ["psnr", "change_rmse"]), summarise(again, ["psnr", "change_rmse"])
            self.assertEqual(json.dumps(s1), json.dumps(s2))

    def test_overwrite_refusal_and_atomicity(self):
        rows = make_rows(3)
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "out.csv"
            write_per_sample_csv(rows, path)
            before = path.read_text()
            with self.assertRaises(FileExistsError) as ctx:
                write_per_sample_csv(rows[:1], path)
            self.assertIn(str(path), str(ctx.exception))
            self.assertEqual(path.read_text(), before)
            write_per_sample_csv(rows[:1], path, overwrite=True)
            self.assertEqual(len(path.read_text().splitlines()), 2)
            # a failing replace leaves neither a temp file nor a changed destination
            failing_replace = mock.patch("monai_tfm.utils.io.os.replace", side_effect=OSError("disk full"))
            with failing_replace, self.assertRaises(OSError):
                write_per_sample_csv(rows, path, overwrite=True)
            self.assertEqual(len(path.read_text().splitlines()), 2)
            self.assertEqual(os.listdir(d), ["out.csv"])

    def test_write_summary_formats(self):
        summary = summarise(make_rows(), ["psnr", "ssim"], ["model"])
        with tempfile.TemporaryDirectory() as d:
            md = write_summary(Path(d) / "sub" / "summary.md", summary)
            self.assertEqual(md.read_text(), format_summary_markdown(summary))
            js = write_summary(Path(d) / "summary.json", summary)
            self.assertEqual(json.loads(js.read_text())["lci"]["ssim"]["n"], 9)
            cs = write_summary(Path(d) / "summary.csv", summary, metrics=["psnr"])
            with open(cs, newline="") as f:
                lines = list(csv.DictReader(f))
            self.assertEqual([(r["method"], r["metric"]) for r in lines], [("model", "psnr"), ("lci", "psnr")])
            self.assertEqual(float(lines[0]["mean"]), summary["model"]["psnr"]["mean"])
            with self.assertRaises(FileExistsError):
                write_summary(md, summary)
            with self.assertRaises(ValueError):
                write_summary(Path(d) / "summary.txt", summary)
            self.assertEqual(sorted(os.listdir(d)), ["sub", "summary.csv", "summary.json"])
            self.assertEqual(os.listdir(Path(d) / "sub"), ["summary.md"])

    def test_aggregate_runs(self):
        runs = [summarise(make_rows(seed=s), ["psnr", "change_rmse"]) for s in range(3)]
        agg = aggregate_runs(runs)
        for method in ("model", "lci"):
            for metric in ("psnr", "change_rmse"):
                means = np.array([r[method][metric]["mean"] for r in runs])
                self.assertEqual(agg[method][metric]["n_runs"], 3)
                self.assertAlmostEqual(agg[method][metric]["mean"], np.mean(means), places=12)
                self.assertAlmostEqual(agg[method][metric]["std"], np.std(means, ddof=1), places=12)
        # plain per-run means are accepted too
        plain = [{m: {k: c["mean"] for k, c in cells.items()} for m, cells in r.items()} for r in runs]
        self.assertEqual(aggregate_runs(plain), agg)
        text = format_runs_markdown(agg)
        lines = text.strip().splitlines()
        self.assertEqual(lines[0], "| method | runs | psnr | change_rmse |")
        s = agg["model"]["psnr"]
        self.assertIn(f"{s['mean']:.4g} +- {s['std']:.4g}", lines[2])
        with tempfile.TemporaryDirectory() as d:
            path = write_summary(Path(d) / "runs.md", agg)
            self.assertEqual(path.read_text(), text)
        with self.assertRaises(ValueError):
            aggregate_runs([])
        with self.assertRaises(KeyError):
            aggregate_runs(runs, metrics=["ssim"])


if __name__ == "__main__":
    unittest.main()


def test_paired_gain_per_subject_bootstrap():
    import pytest

    from monai_tfm.metrics import paired_gain

    # subject a: gains 1 and 3 (mean 2), subject b: gain -1; two subjects, one better
    rows = [
        {"subject": "a", "model_psnr": 21.0, "lci_psnr": 20.0, "model_nrmse": 0.1, "lci_nrmse": 0.2},
        {"subject": "a", "model_psnr": 23.0, "lci_psnr": 20.0, "model_nrmse": 0.1, "lci_nrmse": 0.2},
        {"subject": "b", "model_psnr": 19.0, "lci_psnr": 20.0, "model_nrmse": 0.3, "lci_nrmse": 0.2},
    ]
    g = paired_gain(rows, "psnr", resamples=2000)
    assert g["mean"] == pytest.approx(0.5) and g["subjects"] == 2 and g["better"] == 1
    assert g["ci_low"] == pytest.approx(-1.0) and g["ci_high"] == pytest.approx(2.0)  # all-b and all-a resamples
    n = paired_gain(rows, "nrmse")  # a lower NRMSE is a positive gain
    assert n["mean"] == pytest.approx(0.0) and n["better"] == 1
    same = [{"subject": s, "model_ssim": 80.0 + 1.5, "lci_ssim": 80.0} for s in "abcd"]
    c = paired_gain(same, "ssim")
    assert c["mean"] == c["ci_low"] == c["ci_high"] == pytest.approx(1.5) and c["better"] == 4
    # the median is over subjects (of their mean gains): 3 subjects with gains 2, -1 and 10 -> median 2, mean 11/3
    skewed = rows + [{"subject": "c", "model_psnr": 30.0, "lci_psnr": 20.0}]
    m = paired_gain(skewed, "psnr", resamples=100)
    assert (
        m["median"] == pytest.approx(2.0) and m["mean"] == pytest.approx(11 / 3) and g["median"] == pytest.approx(0.5)
    )
    with pytest.raises(ValueError):
        paired_gain([], "psnr")
