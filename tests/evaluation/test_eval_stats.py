"""Bootstrap intervals (dti.evaluation.stats) and the prompt a text metric reads (protocol.class_prompt)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dti.evaluation.protocol import class_prompt
from dti.evaluation.stats import Interval, bootstrap, paired_difference

# --- bootstrap --------------------------------------------------------------------------------


@pytest.mark.parametrize("value, n", [(0.1, 7), (0.37, 50), (-2.0, 1000), (1 / 3, 3)])
def test_constant_data_gives_a_zero_width_interval(value, n):
    iv = bootstrap([value] * n)
    assert iv.low == iv.mean == iv.high
    assert iv.mean == pytest.approx(value, abs=1e-15) and iv.n == n and iv.level == 0.95


def test_a_single_value_is_its_own_interval():
    assert bootstrap([0.42]) == Interval(0.42, 0.42, 0.42, 1, 0.95)


@pytest.mark.parametrize("seed", range(5))
def test_the_interval_holds_the_mean(seed):
    x = np.random.default_rng(seed).exponential(size=12)  # skewed and small: the percentiles sit unevenly about the mean
    iv = bootstrap(x, resamples=500, seed=seed)
    assert iv.mean == pytest.approx(float(x.mean()), abs=1e-12)
    assert iv.low <= iv.mean <= iv.high and iv.low < iv.high


@pytest.mark.parametrize("seed, n", [(0, 200), (1, 400), (2, 3000)])
def test_the_95_percent_interval_matches_the_normal_theory(seed, n):
    """On normal data the percentile bootstrap of the mean is close to mean +- 1.96 sd / sqrt(n)."""
    x = np.random.default_rng(100 + seed).normal(0.5, 0.2, size=n)
    iv = bootstrap(x, seed=seed)
    half = 1.96 * x.std(ddof=1) / math.sqrt(n)
    assert (iv.high - iv.low) / 2 == pytest.approx(half, rel=0.15)
    assert iv.low == pytest.approx(x.mean() - half, abs=0.15 * half)
    assert iv.high == pytest.approx(x.mean() + half, abs=0.15 * half)


def test_a_higher_level_gives_a_wider_interval():
    x = np.random.default_rng(3).normal(size=100)
    narrow, wide = bootstrap(x, level=0.5), bootstrap(x, level=0.99)
    assert wide.low < narrow.low < narrow.high < wide.high and wide.level == 0.99


def test_the_same_seed_gives_the_same_interval():
    x = np.random.default_rng(4).normal(size=300)
    assert bootstrap(x, seed=7) == bootstrap(list(x), seed=7)
    assert bootstrap(x, seed=7) != bootstrap(x, seed=8)


def test_many_values_stay_in_bounded_memory_and_agree_with_theory():
    """3000 values (the paper's protocol: 30 subjects x 25 prompts x 4 seeds) are resampled in blocks."""
    import tracemalloc

    x = np.random.default_rng(5).uniform(size=3000)
    tracemalloc.start()
    try:
        iv = bootstrap(x, resamples=4000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100e6  # one block of 4000 x 3000 indices and values would be 192 MB
    half = 1.96 * x.std(ddof=1) / math.sqrt(len(x))
    assert (iv.high - iv.low) / 2 == pytest.approx(half, rel=0.15)


@pytest.mark.parametrize(
    "values, fragment",
    [
        ([], "non-empty"),
        ([[0.1, 0.2]], "non-empty list"),
        ([0.1, float("nan")], "finite"),
        ([0.1, float("inf")], "finite"),
        ([1e308, 1e308], "too large"),
    ],
)
def test_bad_values_refused(values, fragment):
    with pytest.raises(ValueError, match=fragment):
        bootstrap(values)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(level=0), "level"),
        (dict(level=1.0), "level"),
        (dict(level=1.5), "level"),
        (dict(level=float("nan")), "level"),
        (dict(resamples=0), "resamples"),
        (dict(resamples=2.5), "resamples"),
    ],
)
def test_bad_settings_refused(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        bootstrap([0.1, 0.2, 0.3], **kwargs)


def test_interval_helpers():
    iv = Interval(0.5, 0.25, 0.75, 10)
    assert iv.excludes_zero() and not Interval(0.1, -0.1, 0.3, 10).excludes_zero() and Interval(-0.5, -0.7, -0.2, 4).excludes_zero()
    assert iv.as_dict() == {"mean": 0.5, "low": 0.25, "high": 0.75, "n": 10, "level": 0.95}
    assert str(iv) == "0.500 [0.250, 0.750]"


# --- paired differences -----------------------------------------------------------------------


def test_paired_difference_of_shifted_data_is_the_shift():
    """b = a + 0.1 exactly per pair: the difference is the shift however noisy a is."""
    a = np.random.default_rng(6).normal(0.4, 0.3, size=120)
    iv = paired_difference(a + 0.1, a)
    assert iv.mean == pytest.approx(0.1, abs=1e-12)
    assert iv.high - iv.low < 1e-12 and iv.excludes_zero() and iv.n == 120


def test_paired_difference_is_the_bootstrap_of_the_differences():
    rng = np.random.default_rng(7)
    a, b = rng.normal(0.5, 0.1, 80), rng.normal(0.45, 0.1, 80)
    assert paired_difference(a, b, seed=3) == bootstrap(a - b, seed=3)
    reverse = paired_difference(b, a, seed=3)
    assert reverse.mean == pytest.approx(-paired_difference(a, b, seed=3).mean)


def test_paired_difference_pairing_narrows_the_interval():
    """Paired noise cancels: a shared per-unit effect does not widen the difference's interval."""
    rng = np.random.default_rng(8)
    shared = rng.normal(0, 1.0, 200)
    a, b = shared + 0.05 + rng.normal(0, 0.01, 200), shared + rng.normal(0, 0.01, 200)
    iv = paired_difference(a, b)
    assert iv.excludes_zero() and iv.low > 0.04 and iv.high < 0.06


@pytest.mark.parametrize(
    "a, b, fragment",
    [
        ([0.1, 0.2], [0.1, 0.2, 0.3], "differ in shape"),
        ([], [], "non-empty"),
        ([0.1, float("nan")], [0.1, 0.2], "finite"),
        ([0.1, 0.2], [float("inf"), 0.2], "finite"),
    ],
)
def test_paired_difference_refusals(a, b, fragment):
    with pytest.raises(ValueError, match=fragment):
        paired_difference(a, b)


# --- class_prompt -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt, token, word, expected",
    [
        ("a <my-dog> dog in the snow", "<my-dog>", "dog", "a dog in the snow"),
        ("a photo of <my-dog>", "<my-dog>", "dog", "a photo of dog"),
        ("<my-dog> and <my-dog> on the beach", "<my-dog>", "dog", "dog and dog on the beach"),
        ("a <t> stuffed animal on a rug", "<t>", "stuffed animal", "a stuffed animal on a rug"),
        ("a <t>  dog   wearing a hat", "<t>", "dog", "a dog wearing a hat"),
        ("<my-dog>s in the snow", "<my-dog>", "dog", "dogs in the snow"),
        ("a <t> dogs bowl", "<t>", "dog", "a dog dogs bowl"),  # not a doubled word: left as it is
        ("a sks dog on a tasks table", "sks", "dog", "a dog on a tasks table"),  # a word token stays whole-word
        ("a photo of <t>", "<t>", r"c\1t", r"a photo of c\1t"),  # the class word is text, not a pattern
    ],
)
def test_class_prompt(prompt, token, word, expected):
    assert class_prompt(prompt, token, word) == expected


@pytest.mark.parametrize("token, word", [("", "dog"), ("<t>", ""), ("<t>", "  ")])
def test_class_prompt_refuses_empty_token_or_class_word(token, word):
    with pytest.raises(ValueError, match="token and a class word"):
        class_prompt("a <t> photo", token, word)
