"""Bootstrap confidence intervals (plot._stats) and numbers quoted with them (_figures._ci)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gradlab._figures import _ci, _decimals
from gradlab.plot._stats import bootstrap_ci, summarise


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    v = np.array([0.8, 1.1, 0.9, 1.4, 1.0])
    mean, lo, hi = bootstrap_ci(v)
    assert mean == pytest.approx(v.mean())
    assert lo < mean < hi
    assert bootstrap_ci(v) == (mean, lo, hi)  # deterministic
    assert bootstrap_ci(v[::-1]) == pytest.approx((mean, lo, hi))  # order does not matter
    # the resampled means lie between the smallest and largest value
    assert v.min() <= lo and hi <= v.max()


def test_bootstrap_ci_matches_the_normal_interval_for_many_values():
    # n = 400 draws: the percentile interval of the mean ≈ mean ± 1.96 sd/√n (sd with 1/n)
    v = np.random.default_rng(1).standard_normal(400)
    mean, lo, hi = bootstrap_ci(v, resamples=4000)
    half = 1.96 * v.std() / np.sqrt(v.size)
    # the bootstrap quantiles of 4000 resamples scatter by ~ 2.5% of the half-width
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.08)
    assert (lo + hi) / 2 == pytest.approx(mean, abs=0.1 * half)


def test_bootstrap_ci_of_one_value_or_equal_values_has_no_width():
    assert bootstrap_ci([2.5]) == (2.5, 2.5, 2.5)
    assert bootstrap_ci([3.0, 3.0, 3.0]) == (3.0, 3.0, 3.0)
    assert all(np.isnan(bootstrap_ci([np.nan])))
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci([1.0, 2.0], level=95)


def test_summarise_bootstrap_band_per_group_equals_bootstrap_ci():
    df = pd.DataFrame({"cell": ["a"] * 5 + ["b"] * 5, "value": [1, 2, 3, 4, 9, 5, 5, 6, 6, 7.0]})
    out = summarise(df, ["cell"], band="bootstrap").set_index("cell")
    for cell in ("a", "b"):
        m, lo, hi = bootstrap_ci(df.loc[df["cell"] == cell, "value"])
        assert (out.loc[cell, "mean"], out.loc[cell, "lo"], out.loc[cell, "hi"]) == (m, lo, hi)


@pytest.mark.parametrize(
    ("mean", "lo", "hi", "text"),
    [
        (0.0123, 0.0101, 0.0150, "0.012 (95% CI 0.010–0.015)"),
        (0.9712, 0.93, 0.999, "0.97 (95% CI 0.93–1.00)"),
        (-0.2721, -0.2812, -0.2651, "−0.272 (95% CI −0.281 to −0.265)"),
        (-82.34, -83.1, -81.6, "−82.3 (95% CI −83.1 to −81.6)"),
        (7.8, 3.1, 14.2, "8 (95% CI 3–14)"),  # width 11: two digits, not "10 (0–10)"
        (151.0, 121.0, 182.0, "150 (95% CI 120–180)"),
        (8.7e-5, 5.1e-5, 1.24e-4, "9e−5 (95% CI 5e−5–1.2e−4)"),
        (0.5, 0.5, 0.5, "0.5"),  # no interval: two significant digits
        (0.123456, 0.123456, 0.123456, "0.12"),
    ],
)
def test_ci_quotes_the_digits_the_interval_supports(mean, lo, hi, text):
    assert _ci(mean, lo, hi) == text


def test_ci_unit_follows_every_number():
    assert _ci(77.2, 75.1, 79.3, unit="%") == "77% (95% CI 75%–79%)"
    assert _ci(0.5, 0.5, 0.5, unit="%") == "0.5%"


def test_ci_text_does_not_change_when_the_mean_moves_by_far_less_than_the_width():
    # a rerun that moves every number by 1% of the interval width prints the same text,
    # unless a number sits on a rounding edge (not the case here)
    lo, hi, mean = 0.0101, 0.0150, 0.0123
    shift = 0.01 * (hi - lo)
    assert _ci(mean + shift, lo + shift, hi + shift) == _ci(mean, lo, hi)


def test_decimals_follow_the_width():
    assert _decimals(0.0101, 0.0150) == 3
    assert _decimals(1.2, 3.4) == 1  # width 2.2: leading digit 1-3, two digits
    assert _decimals(1.2, 5.4) == 0  # width 4.2: one
    assert _decimals(120.0, 180.0) == -1
    assert _decimals(1.0, 1.0) is None
