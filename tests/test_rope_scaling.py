"""RoPE scaling methods and the Hugging Face config reader against float64 references.

The references below are written from each method's formula (paper or reference code, as
named) in plain numpy/Python, and the golden values are those of REFERENCES.md section 19.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from posenc_jax import functional
from posenc_jax.functional import (
    DynamicNTKScaling,
    LinearScaling,
    Llama3Scaling,
    LongRoPEScaling,
    NTKScaling,
    YaRNScaling,
)

# --- independent references ------------------------------------------------------------------


def default_freqs(dim, base):
    return np.array([base ** (-2.0 * t / dim) for t in range(dim // 2)])


def reference_linear(dim, base, factor):
    """Chen et al. 2023: positions m -> m / s, i.e. every frequency / s."""
    return default_freqs(dim, base) / factor


def reference_ntk(dim, base, alpha):
    """bloc97 2023: base' = base * alpha^(d / (d - 2))."""
    return default_freqs(dim, base * alpha ** (dim / (dim - 2)))


def dynamic_base(dim, base, factor, original, seq_len):
    """emozilla 2023 / Hugging Face: base * (s * n / L0 - (s - 1))^(d / (d - 2)), n >= L0."""
    n = max(seq_len, original)
    return base * (factor * n / original - (factor - 1)) ** (dim / (dim - 2))


def reference_yarn(dim, base, factor, original, beta_fast=32.0, beta_slow=1.0, truncate=True):
    """Peng et al. 2023, official code: pair t(beta) turning beta times over L0, linear ramp.

    Pair t makes L0 / (2 pi base^(2t/d)) turns over L0; t(beta) solves that for beta turns.
    """

    def t_of(beta):
        return dim * math.log(original / (2 * math.pi * beta)) / (2 * math.log(base))

    low, high = t_of(beta_fast), t_of(beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    out = []
    for t, theta in enumerate(default_freqs(dim, base)):
        ramp = min(max((t - low) / (high - low), 0.0), 1.0)  # 0: keep, 1: interpolate
        out.append((1 - ramp) * theta + ramp * theta / factor)
    return np.array(out)


def reference_llama3(dim, base, factor, low_freq_factor, high_freq_factor, original):
    """Meta llama-models apply_scaling, one frequency at a time."""
    low_wavelen, high_wavelen = original / low_freq_factor, original / high_freq_factor
    out = []
    for freq in default_freqs(dim, base):
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(freq)
        elif wavelen > low_wavelen:
            out.append(freq / factor)
        else:
            smooth = (original / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
            out.append((1 - smooth) * freq / factor + smooth * freq)
    return np.array(out)


# --- linear and NTK --------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [1.0, 2.0, 8.0])
def test_linear_divides_every_frequency(factor):
    got, scale = functional.rope_inv_freq(64, scaling=LinearScaling(factor))
    np.testing.assert_allclose(got, reference_linear(64, 10000.0, factor), rtol=1e-13)
    assert scale == 1.0


def test_ntk_base_golden_value():
    """alpha = 8, d = 128: base 10000 * 8^(128/126) = 82684.62."""
    got, scale = functional.rope_inv_freq(128, scaling=NTKScaling(8.0))
    np.testing.assert_allclose(got, reference_ntk(128, 10000.0, 8.0), rtol=1e-12)
    # theta_1 = base'^(-2/128) recovers the rescaled base
    np.testing.assert_allclose(got[1] ** (-64.0), 82684.62, atol=5e-3)
    assert scale == 1.0
    # the fastest pair is untouched, the slowest divided by exactly alpha
    plain, _ = functional.rope_inv_freq(128)
    np.testing.assert_allclose([got[0], got[-1]], [plain[0], plain[-1] / 8.0], rtol=1e-12)


# --- dynamic NTK -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "seq_len, base",
    [(None, 10000.0), (100, 10000.0), (4096, 10000.0), (8192, 30527.74), (16384, 72195.86)],
)
def test_dynamic_ntk_bases(seq_len, base):
    scaling = DynamicNTKScaling(factor=2.0, original_max_position_embeddings=4096)
    got, scale = functional.rope_inv_freq(128, scaling=scaling, seq_len=seq_len)
    np.testing.assert_allclose(got[1] ** (-64.0), base, atol=5e-3)
    want_base = dynamic_base(128, 10000.0, 2.0, 4096, seq_len or 0)
    np.testing.assert_allclose(got, default_freqs(128, want_base), rtol=1e-12)
    assert scale == 1.0


def test_dynamic_ntk_with_a_traced_length_matches_the_static_one():
    scaling = DynamicNTKScaling(factor=4.0, original_max_position_embeddings=256)
    traced = jax.jit(lambda n: functional.rope_inv_freq(64, scaling=scaling, seq_len=n)[0])
    for seq_len in (10, 256, 300, 2000):
        static, _ = functional.rope_inv_freq(64, scaling=scaling, seq_len=seq_len)
        np.testing.assert_allclose(traced(jnp.int32(seq_len)), static, rtol=2e-6)


# --- YaRN ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dim, base, original, low, high",
    [(128, 1e4, 4096, 20, 46), (64, 1e4, 2048, 8, 21), (128, 1e6, 32768, 23, 40)],
)
def test_yarn_correction_range_golden_values(dim, base, original, low, high):
    assert functional.yarn_correction_range(dim, base, original) == (low, high)


def test_yarn_correction_range_untruncated():
    low, high = functional.yarn_correction_range(128, 1e4, 4096, truncate=False)
    np.testing.assert_allclose([low, high], [20.94, 45.03], atol=5e-3)


@pytest.mark.parametrize(
    "dim, base, factor, original, truncate",
    [
        (128, 1e4, 4.0, 4096, True),
        (64, 1e4, 8.0, 2048, True),
        (128, 1e6, 4.0, 32768, False),
        (128, 5e5, 40.0, 4096, True),
    ],
)
def test_yarn_frequencies(dim, base, factor, original, truncate):
    scaling = YaRNScaling(
        factor=factor, original_max_position_embeddings=original, truncate=truncate
    )
    got, _ = functional.rope_inv_freq(dim, base=base, scaling=scaling)
    want = reference_yarn(dim, base, factor, original, truncate=truncate)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    low, high = functional.yarn_correction_range(dim, base, original, truncate=truncate)
    plain = default_freqs(dim, base)
    fast = np.arange(dim // 2) <= low
    slow = np.arange(dim // 2) >= high
    np.testing.assert_allclose(got[fast], plain[fast], rtol=1e-12)
    np.testing.assert_allclose(got[slow], plain[slow] / factor, rtol=1e-12)


@pytest.mark.parametrize(
    "factor, scale",
    [(2, 1.069315), (4, 1.138629), (8, 1.207944), (16, 1.277259), (32, 1.346574), (40, 1.368888)],
)
def test_yarn_attention_factor_golden_values(factor, scale):
    _, got = functional.rope_inv_freq(
        128, scaling=YaRNScaling(factor=float(factor), original_max_position_embeddings=4096)
    )
    assert got == pytest.approx(scale, abs=5e-7)
    assert got == pytest.approx(0.1 * math.log(factor) + 1)


def test_yarn_deepseek_mscale():
    """DeepSeek-V3: mscale = mscale_all_dim = 1 cancels; the softmax scale gets 1.873854."""
    scaling = YaRNScaling(
        factor=40.0, original_max_position_embeddings=4096, mscale=1.0, mscale_all_dim=1.0
    )
    assert scaling.attention_scale == 1.0
    assert functional.yarn_mscale(40.0, 1.0) ** 2 == pytest.approx(1.873854, abs=5e-7)
    # unequal coefficients give their ratio; an explicit attention_factor wins
    ratio = YaRNScaling(40.0, 4096, mscale=0.707, mscale_all_dim=1.0).attention_scale
    assert ratio == pytest.approx((0.0707 * math.log(40) + 1) / (0.1 * math.log(40) + 1))
    assert YaRNScaling(40.0, 4096, attention_factor=0.5).attention_scale == 0.5
    assert functional.yarn_mscale(1.0) == 1.0


# --- Llama 3 ---------------------------------------------------------------------------------


def test_llama3_golden_bands():
    scaling = Llama3Scaling(
        factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192
    )
    got, scale = functional.rope_inv_freq(128, base=5e5, scaling=scaling)
    assert scale == 1.0
    np.testing.assert_allclose(got, reference_llama3(128, 5e5, 8.0, 1.0, 4.0, 8192), rtol=1e-12)
    plain = default_freqs(128, 5e5)
    ratio = plain / got
    unchanged = np.isclose(ratio, 1.0, rtol=1e-12)
    divided = np.isclose(ratio, 8.0, rtol=1e-12)
    assert unchanged.sum() == 29 and divided.sum() == 29
    smoothed = np.flatnonzero(~unchanged & ~divided)
    np.testing.assert_array_equal(smoothed, np.arange(29, 35))
    np.testing.assert_allclose(
        ratio[smoothed], [1.2075, 1.5534, 2.0263, 2.6945, 3.6843, 5.2573], atol=5e-5
    )


def test_llama3_needs_ordered_band_factors():
    with pytest.raises(ValueError, match="high_freq_factor > low_freq_factor"):
        Llama3Scaling(factor=8.0, low_freq_factor=4.0, high_freq_factor=4.0)


# --- LongRoPE --------------------------------------------------------------------------------


def synthetic_factors(pairs):
    short = 1.0 + 0.05 * np.arange(pairs) / pairs
    long = 1.0 + 30.0 * (np.arange(pairs) / pairs) ** 2
    return short.tolist(), long.tolist()


def test_longrope_attention_factor_golden_value():
    """131072 / 4096 extension: sqrt(1 + ln 32 / ln 4096) = 1.190238."""
    short, long = synthetic_factors(48)
    scaling = LongRoPEScaling(short, long, original_max_position_embeddings=4096, factor=32.0)
    _, scale = functional.rope_inv_freq(96, scaling=scaling)
    assert scale == pytest.approx(1.190238, abs=5e-7)
    assert scale == pytest.approx(math.sqrt(1 + math.log(32) / math.log(4096)))
    no_extension = LongRoPEScaling(short, long, original_max_position_embeddings=4096, factor=1.0)
    assert no_extension.attention_scale == 1.0


@pytest.mark.parametrize(
    "seq_len, use_long", [(None, False), (1, False), (4096, False), (4097, True), (131072, True)]
)
def test_longrope_picks_factors_by_length(seq_len, use_long):
    short, long = synthetic_factors(48)
    scaling = LongRoPEScaling(short, long, original_max_position_embeddings=4096, factor=32.0)
    got, _ = functional.rope_inv_freq(96, base=1e4, scaling=scaling, seq_len=seq_len)
    factors = np.array(long if use_long else short)
    np.testing.assert_allclose(got, default_freqs(96, 1e4) / factors, rtol=1e-12)
    traced = jax.jit(lambda n: functional.rope_inv_freq(96, scaling=scaling, seq_len=n)[0])
    if seq_len is not None:
        np.testing.assert_allclose(traced(jnp.int32(seq_len)), got, rtol=1e-6)


def test_longrope_factor_count_must_match_the_rotated_dim():
    short, long = synthetic_factors(48)
    scaling = LongRoPEScaling(short, long, original_max_position_embeddings=4096, factor=32.0)
    with pytest.raises(ValueError, match="48 factors.*64 frequency pairs"):
        functional.rope_inv_freq(128, scaling=scaling)
    with pytest.raises(ValueError, match="short_factor has 48 entries and long_factor 47"):
        LongRoPEScaling(short, long[:47], original_max_position_embeddings=4096)
    with pytest.raises(ValueError, match="long_factor must be a non-empty list of positive"):
        LongRoPEScaling(short, [0.0] * 48, original_max_position_embeddings=4096)


# --- invalid values --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: LinearScaling(0.5), "factor must be a finite number >= 1"),
        (lambda: NTKScaling(float("nan")), "factor must be a finite number >= 1"),
        (lambda: DynamicNTKScaling(2.0, 0), "original_max_position_embeddings must be a positive"),
        (lambda: YaRNScaling(4.0, 4096, beta_fast=1.0, beta_slow=32.0), "beta_fast > beta_slow"),
        (
            lambda: YaRNScaling(4.0, 4096, attention_factor=-1.0),
            "attention_factor must be a finite number > 0, got -1.0",
        ),
        (
            lambda: YaRNScaling(4.0, 4096, attention_factor=float("inf")),
            "attention_factor must be a finite number > 0, got inf",
        ),
        (
            lambda: YaRNScaling(4.0, 4096, mscale=float("nan"), mscale_all_dim=1.0),
            "mscale must be a finite number >= 0, got nan",
        ),
        # 0.1 m ln(4) + 1 = 0: the DeepSeek ratio would divide by zero.
        (
            lambda: YaRNScaling(4.0, 4096, mscale=1.0, mscale_all_dim=-10 / math.log(4.0)),
            "mscale_all_dim must be a finite number >= 0",
        ),
        (
            lambda: LongRoPEScaling([1.0], [2.0], 4096, factor=2.0, attention_factor=float("nan")),
            "LongRoPE attention_factor must be a finite number > 0, got nan",
        ),
        (
            lambda: functional.rope_inv_freq(8, scaling=DynamicNTKScaling(2.0, 16), seq_len=16.9),
            "seq_len must be a positive integer length.*got 16.9",
        ),
        (
            lambda: functional.rope_inv_freq(8, scaling=DynamicNTKScaling(2.0, 16), seq_len=0),
            "seq_len must be a positive integer length.*got 0",
        ),
    ],
)
def test_invalid_values_are_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_ntk_needs_more_than_one_pair():
    with pytest.raises(ValueError, match="d > 2"):
        functional.rope_inv_freq(2, scaling=NTKScaling(2.0))


# --- Hugging Face configs --------------------------------------------------------------------


def test_hf_llama31():
    params = {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
        "rope_theta": 500000.0,  # rope_parameters style (newer configs)
    }
    scaling = functional.rope_scaling_from_hf(params, max_position_embeddings=131072)
    assert scaling == Llama3Scaling(8.0, 1.0, 4.0, 8192)
    base = functional.rope_theta_from_hf(params)
    assert base == 500000.0
    got, scale = functional.rope_inv_freq(128, base=base, scaling=scaling)
    np.testing.assert_allclose(got, reference_llama3(128, 5e5, 8.0, 1.0, 4.0, 8192), rtol=1e-12)
    assert scale == 1.0


def test_hf_yarn_qwen_style():
    """Qwen2.5 long-context recipe: factor 4 over 32768, legacy "type" key, theta top level."""
    params = {"factor": 4.0, "original_max_position_embeddings": 32768, "type": "yarn"}
    scaling = functional.rope_scaling_from_hf(params, max_position_embeddings=32768)
    assert scaling == YaRNScaling(factor=4.0, original_max_position_embeddings=32768)
    base = functional.rope_theta_from_hf(params, rope_theta=1e6)
    got, scale = functional.rope_inv_freq(128, base=base, scaling=scaling)
    np.testing.assert_allclose(got, reference_yarn(128, 1e6, 4.0, 32768), rtol=1e-12)
    assert scale == pytest.approx(1.138629, abs=5e-7)


def test_hf_yarn_deepseek_style():
    params = {
        "beta_fast": 32,
        "beta_slow": 1,
        "factor": 40,
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
        "original_max_position_embeddings": 4096,
        "type": "yarn",
    }
    scaling = functional.rope_scaling_from_hf(params, max_position_embeddings=163840)
    got, scale = functional.rope_inv_freq(64, scaling=scaling)
    assert scale == 1.0
    np.testing.assert_allclose(got, reference_yarn(64, 1e4, 40.0, 4096), rtol=1e-12)


def test_hf_yarn_defaults_from_max_position_embeddings():
    # no factor: max / original; no original: max; beta 0 or missing: 32 / 1
    scaling = functional.rope_scaling_from_hf(
        {"rope_type": "yarn", "original_max_position_embeddings": 4096, "beta_fast": 0},
        max_position_embeddings=16384,
    )
    assert (scaling.factor, scaling.beta_fast, scaling.beta_slow) == (4.0, 32.0, 1.0)
    scaling = functional.rope_scaling_from_hf(
        {"rope_type": "yarn", "factor": 2.0, "truncate": False}, max_position_embeddings=2048
    )
    assert scaling.original_max_position_embeddings == 2048 and scaling.truncate is False


@pytest.mark.parametrize("seq_len, base", [(4096, 10000.0), (8192, 30527.74), (16384, 72195.86)])
def test_hf_dynamic(seq_len, base):
    scaling = functional.rope_scaling_from_hf(
        {"type": "dynamic", "factor": 2.0}, max_position_embeddings=4096
    )
    assert scaling == DynamicNTKScaling(factor=2.0, original_max_position_embeddings=4096)
    got, _ = functional.rope_inv_freq(128, scaling=scaling, seq_len=seq_len)
    np.testing.assert_allclose(got[1] ** (-64.0), base, atol=5e-3)


def test_hf_linear_ntk_and_default():
    assert functional.rope_scaling_from_hf({"type": "linear", "factor": 4.0}) == LinearScaling(4.0)
    assert functional.rope_scaling_from_hf({"rope_type": "ntk", "factor": 8}) == NTKScaling(8.0)
    assert functional.rope_scaling_from_hf({"rope_type": "default", "rope_theta": 1e6}) is None
    assert functional.rope_theta_from_hf(None) == 10000.0


@pytest.mark.parametrize("rope_type", ["longrope", "su"])
def test_hf_longrope_phi3_style(rope_type):
    """Phi-3: factors in the dict, original (4096) and max (131072) at the config's top level."""
    short, long = synthetic_factors(48)  # head dim 96
    params = {"type": rope_type, "short_factor": short, "long_factor": long}
    scaling = functional.rope_scaling_from_hf(
        params, max_position_embeddings=131072, original_max_position_embeddings=4096
    )
    assert isinstance(scaling, LongRoPEScaling)
    short_freq, scale = functional.rope_inv_freq(96, scaling=scaling, seq_len=4096)
    long_freq, _ = functional.rope_inv_freq(96, scaling=scaling, seq_len=4097)
    assert scale == pytest.approx(1.190238, abs=5e-7)
    np.testing.assert_allclose(short_freq, default_freqs(96, 1e4) / np.array(short), rtol=1e-12)
    np.testing.assert_allclose(long_freq, default_freqs(96, 1e4) / np.array(long), rtol=1e-12)


@pytest.mark.parametrize(
    "params, kwargs, match",
    [
        ({"rope_type": "mystery", "factor": 2.0}, {}, "unknown RoPE type 'mystery'.*llama3"),
        ({"factor": 2.0}, {}, "no 'rope_type'"),
        ({"type": "linear"}, {}, "needs the key 'factor'"),
        (
            {
                "rope_type": "llama3",
                "factor": 8.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192,
            },
            {},
            "needs the key 'low_freq_factor'",
        ),
        (
            {"rope_type": "yarn", "factor": 4.0},
            {},
            "needs the key 'original_max_position_embeddings'",
        ),
        (
            {"rope_type": "yarn", "original_max_position_embeddings": 4096},
            {},
            "needs the key 'factor'",
        ),
        ({"rope_type": "dynamic", "factor": 2.0}, {}, "original_max_position_embeddings"),
        # Config lengths are never cut to an integer.
        (
            {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096.7},
            {},
            "'yarn' needs original_max_position_embeddings to be a positive integer, got 4096.7",
        ),
        (
            {"rope_type": "dynamic", "factor": 2.0},
            {"max_position_embeddings": 2048.5},
            "'dynamic' needs max_position_embeddings to be a positive integer, got 2048.5",
        ),
        (
            {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": -8192,
            },
            {},
            "'llama3' needs original_max_position_embeddings to be a positive integer",
        ),
        ({"rope_type": "longrope", "short_factor": [1.0]}, {}, "needs the key 'long_factor'"),
        (
            {"rope_type": "longrope", "short_factor": [1.0], "long_factor": [2.0]},
            {"original_max_position_embeddings": 4096},
            "needs the key 'factor'",
        ),
    ],
)
def test_hf_errors_name_the_problem(params, kwargs, match):
    with pytest.raises(ValueError, match=match):
        functional.rope_scaling_from_hf(params, **kwargs)
