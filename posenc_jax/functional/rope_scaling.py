"""RoPE scaling methods: how published models change the rotary frequencies for long context.

Each method is a small frozen dataclass accepted by
:func:`posenc_jax.functional.rope_inv_freq`. Its :meth:`~RopeScaling.rescale` maps the
default frequencies ``theta_t = base^(-2t/d)`` (``d`` the rotated dimension) to the scaled
ones and returns the *attention scale* that multiplies the rotated queries **and** keys (as
Hugging Face multiplies its cos/sin tables), so the logits are multiplied by its square.

The conventions are those of the reference implementations, so that a configuration taken
from a published model gives that model's frequencies:

* :class:`LinearScaling` -- Position Interpolation (Chen et al. 2023).
* :class:`NTKScaling` -- NTK-aware base rescaling (bloc97 2023).
* :class:`DynamicNTKScaling` -- NTK-aware rescaling from the current length (emozilla 2023).
* :class:`YaRNScaling` -- YaRN, "NTK-by-parts" plus attention temperature (Peng et al. 2023).
* :class:`Llama3Scaling` -- the Llama-3.1 wavelength bands (Meta 2024).
* :class:`LongRoPEScaling` -- per-frequency searched factors (Ding et al. 2024).

:func:`rope_scaling_from_hf` reads a Hugging Face ``rope_scaling`` / ``rope_parameters``
dict and :func:`rope_theta_from_hf` its base.

Frequencies are computed in float64 NumPy whenever the inputs are static (they are
constants of the model). Only the methods that depend on the current length
(``depends_on_length``) can receive a traced ``seq_len``; they then return float32.
"""

import dataclasses
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import jax.numpy as jnp
import numpy as np

from posenc_jax._checks import is_concrete
from posenc_jax.typing import Array

# YaRN's ramp bounds in rotations over the original context (Peng et al. 2023, Section 3.2:
# alpha = 1, beta = 32 for LLaMA); the reference code calls them beta_slow and beta_fast.
YARN_BETA_FAST = 32.0
YARN_BETA_SLOW = 1.0


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """Base class of the scaling methods.

    Attributes:
      depends_on_length: whether :meth:`rescale` uses ``seq_len`` (the current length,
        largest position + 1). Encodings compute that length only when this is True.
    """

    depends_on_length: ClassVar[bool] = False

    def rescale(
        self, inv_freq: np.ndarray, *, base: float, seq_len: Any = None
    ) -> tuple[np.ndarray | Array, float]:
        """Maps the default frequencies to the scaled ones.

        Args:
          inv_freq: float64 ``[d/2]``, the default ``base^(-2t/d)``.
          base: the RoPE base the default frequencies were computed with.
          seq_len: the current length (an int, a traced scalar, or None for the original
            length); used only when ``depends_on_length``.

        Returns:
          ``(inv_freq, attention_scale)``: the scaled frequencies ``[d/2]`` and the float
          that multiplies both the rotated queries and keys.
        """
        raise NotImplementedError


def _check_factor(method: str, factor: float) -> None:
    if not (isinstance(factor, numbers.Real) and math.isfinite(factor) and factor >= 1.0):
        raise ValueError(
            f"{method} factor must be a finite number >= 1 (the context extension ratio), "
            f"got {factor!r}."
        )


def _check_optional_positive(method: str, name: str, value: float | None, zero_ok=False) -> None:
    """None, or a finite number > 0 (>= 0 with ``zero_ok``)."""
    if value is None:
        return
    valid = isinstance(value, numbers.Real) and not isinstance(value, bool)
    valid = valid and math.isfinite(value) and (value >= 0 if zero_ok else value > 0)
    if not valid:
        bound = ">= 0" if zero_ok else "> 0"
        raise ValueError(f"{method} {name} must be a finite number {bound}, got {value!r}.")


def _check_length(method: str, name: str, value: int) -> None:
    if not (isinstance(value, int | np.integer) and value > 0):
        raise ValueError(f"{method} {name} must be a positive integer, got {value!r}.")


def _rotary_dim(inv_freq: np.ndarray) -> int:
    return 2 * inv_freq.shape[-1]


def _pair_index(inv_freq: np.ndarray) -> np.ndarray:
    return np.arange(inv_freq.shape[-1], dtype=np.float64)


@dataclasses.dataclass(frozen=True)
class LinearScaling(RopeScaling):
    """Position Interpolation: every frequency divided by ``factor``.

    Equivalent to feeding positions ``m / factor``: a model trained on ``L`` positions sees
    ``factor * L`` positions inside its trained angle range. Hugging Face type "linear".

    Attributes:
      factor: the context extension ratio ``s >= 1``.

    References:
      Chen, Wong, Chen, Tian, "Extending Context Window of Large Language Models via
      Positional Interpolation", arXiv 2306.15595, 2023, Eq. (4).
    """

    factor: float

    def __post_init__(self):
        _check_factor("linear (Position Interpolation)", self.factor)

    def rescale(self, inv_freq, *, base, seq_len=None):
        return inv_freq / self.factor, 1.0


@dataclasses.dataclass(frozen=True)
class NTKScaling(RopeScaling):
    """NTK-aware scaling: the base becomes ``base * factor^(d / (d - 2))``.

    The highest frequency is unchanged and the lowest is divided by exactly ``factor``.

    Attributes:
      factor: the extension ratio (``alpha`` in the original post), ``>= 1``.

    References:
      bloc97, "NTK-Aware Scaled RoPE allows LLaMA models to have extended (8k+) context
      size without any fine-tuning", r/LocalLLaMA, 2023; Peng et al., "YaRN", ICLR 2024,
      Section 3.1 (Eq. 16).
    """

    factor: float

    def __post_init__(self):
        _check_factor("NTK-aware", self.factor)

    def rescale(self, inv_freq, *, base, seq_len=None):
        dim = _rotary_dim(inv_freq)
        _check_ntk_dim("NTK-aware", dim)
        # base' ^ (-2t/d) = base^(-2t/d) * factor^(-2t/(d-2))
        return inv_freq * self.factor ** (-2.0 * _pair_index(inv_freq) / (dim - 2)), 1.0


def _check_ntk_dim(method: str, dim: int) -> None:
    if dim <= 2:
        raise ValueError(
            f"{method} rescales the base by factor^(d/(d-2)); it needs a rotated dimension "
            f"d > 2, got {dim}."
        )


@dataclasses.dataclass(frozen=True)
class DynamicNTKScaling(RopeScaling):
    """NTK-aware scaling whose strength follows the current length.

    ``base' = base * (factor * n / L0 - (factor - 1))^(d / (d - 2))`` with
    ``n = max(seq_len, L0)`` (the Hugging Face "dynamic" formula): nothing changes up to
    the original length ``L0``, and the base grows with the length beyond it.

    Hugging Face keeps the largest length seen so far between calls; this function is
    stateless: the length is the one passed in.

    Attributes:
      factor: ``>= 1``.
      original_max_position_embeddings: ``L0``, the trained context (Hugging Face uses the
        config's ``max_position_embeddings``).

    References:
      emozilla, "Dynamically Scaled RoPE further increases performance of long context
      LLaMA with zero fine-tuning", r/LocalLLaMA, 2023; Peng et al., "YaRN", ICLR 2024,
      Section 3.3.
    """

    factor: float
    original_max_position_embeddings: int

    depends_on_length: ClassVar[bool] = True

    def __post_init__(self):
        _check_factor("dynamic NTK", self.factor)
        _check_length(
            "dynamic NTK", "original_max_position_embeddings", self.original_max_position_embeddings
        )

    def rescale(self, inv_freq, *, base, seq_len=None):
        dim = _rotary_dim(inv_freq)
        _check_ntk_dim("dynamic NTK", dim)
        original = self.original_max_position_embeddings
        exponent = -2.0 * _pair_index(inv_freq) / (dim - 2)
        if seq_len is None or is_concrete(seq_len):
            length = original if seq_len is None else max(int(seq_len), original)
            ratio = self.factor * length / original - (self.factor - 1.0)
            return inv_freq * ratio**exponent, 1.0
        length = jnp.maximum(jnp.asarray(seq_len, jnp.float32), float(original))
        ratio = self.factor * length / original - (self.factor - 1.0)
        return jnp.asarray(inv_freq, jnp.float32) * ratio ** jnp.asarray(exponent, jnp.float32), 1.0


def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    """YaRN's attention temperature ``0.1 * mscale * ln(scale) + 1`` (1 for ``scale <= 1``).

    With ``mscale = 1`` this is the paper's ``sqrt(1/t) = 0.1 ln(s) + 1``. DeepSeek-V2/V3
    also multiply their softmax scale by ``yarn_mscale(factor, mscale_all_dim) ** 2``,
    outside the rotation; that factor is not part of :class:`YaRNScaling`'s attention scale.

    References:
      Peng, Quesnelle, Fan, Shippole, "YaRN: Efficient Context Window Extension of Large
      Language Models", ICLR 2024, arXiv 2309.00071, Eq. (22).
    """
    if scale <= 1.0:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


def yarn_correction_range(
    dim: int,
    base: float,
    original_max_position_embeddings: int,
    *,
    beta_fast: float = YARN_BETA_FAST,
    beta_slow: float = YARN_BETA_SLOW,
    truncate: bool = True,
) -> tuple[float, float]:
    """The pair indices where YaRN's ramp starts and ends.

    Pair ``t`` turns ``L0 / (2 pi base^(2t/d))`` times over the original context ``L0``;
    solving for the ``t`` that turns ``beta`` times gives
    ``t(beta) = d ln(L0 / (2 pi beta)) / (2 ln base)``. Pairs below ``t(beta_fast)`` keep
    their frequency, pairs above ``t(beta_slow)`` are interpolated.

    Args:
      dim: the rotated dimension ``d``.
      base: the RoPE base.
      original_max_position_embeddings: ``L0``.
      beta_fast: rotations where interpolation starts (32).
      beta_slow: rotations where it is complete (1).
      truncate: round the bounds outward to integers (floor, ceil) as the reference code
        does; newer Hugging Face configs may set it False.

    Returns:
      ``(low, high)``, clipped to ``[0, d - 1]``.

    References:
      Peng et al., "YaRN", ICLR 2024, Section 3.2 and the official code
      (jquesnelle/yarn, ``find_correction_range``).
    """

    def pair_turning(rotations: float) -> float:
        return (
            dim
            * math.log(original_max_position_embeddings / (rotations * 2 * math.pi))
            / (2 * math.log(base))
        )

    low, high = pair_turning(beta_fast), pair_turning(beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    return max(low, 0), min(high, dim - 1)


@dataclasses.dataclass(frozen=True)
class YaRNScaling(RopeScaling):
    """YaRN: NTK-by-parts interpolation and an attention temperature.

    With ``(low, high)`` from :func:`yarn_correction_range` and the ramp
    ``r_t = clip((t - low) / (high - low), 0, 1)``, the frequencies are
    ``theta'_t = (1 - r_t) theta_t + r_t theta_t / factor``: fast pairs (many turns over
    the original context) keep their frequency, slow pairs are interpolated. The ramp is
    linear in the pair index between the rounded bounds, as in the official code and
    Hugging Face (the paper writes it linear in the number of rotations).

    The attention scale is ``attention_factor`` if given; else
    ``yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim)`` when both
    ``mscale`` and ``mscale_all_dim`` are set and nonzero (DeepSeek); else
    ``0.1 ln(factor) + 1``. It multiplies both queries and keys, so the logits are
    multiplied by its square (the paper's ``1/t``).

    Attributes:
      factor: the extension ratio ``s >= 1``.
      original_max_position_embeddings: ``L0``, the context the model was trained on.
      beta_fast: 32 in the paper.
      beta_slow: 1 in the paper.
      mscale: optional DeepSeek numerator coefficient.
      mscale_all_dim: optional DeepSeek denominator coefficient.
      attention_factor: explicit attention scale; overrides the formulas above.
      truncate: integer ramp bounds (True, the reference code).

    References:
      Peng, Quesnelle, Fan, Shippole, "YaRN: Efficient Context Window Extension of Large
      Language Models", ICLR 2024, arXiv 2309.00071, Sections 3.2-3.4.
    """

    factor: float
    original_max_position_embeddings: int
    beta_fast: float = YARN_BETA_FAST
    beta_slow: float = YARN_BETA_SLOW
    mscale: float | None = None
    mscale_all_dim: float | None = None
    attention_factor: float | None = None
    truncate: bool = True

    def __post_init__(self):
        _check_factor("YaRN", self.factor)
        _check_length(
            "YaRN", "original_max_position_embeddings", self.original_max_position_embeddings
        )
        if not self.beta_fast > self.beta_slow > 0:
            raise ValueError(
                f"YaRN needs beta_fast > beta_slow > 0 (rotations; 32 and 1 in the paper), got "
                f"beta_fast={self.beta_fast}, beta_slow={self.beta_slow}."
            )
        _check_optional_positive("YaRN", "attention_factor", self.attention_factor)
        # DeepSeek's coefficients: 0.1 m ln(s) + 1 stays >= 1 for m >= 0.
        _check_optional_positive("YaRN", "mscale", self.mscale, zero_ok=True)
        _check_optional_positive("YaRN", "mscale_all_dim", self.mscale_all_dim, zero_ok=True)

    @property
    def attention_scale(self) -> float:
        """The factor on both queries and keys (logits get its square)."""
        if self.attention_factor is not None:
            return float(self.attention_factor)
        if self.mscale and self.mscale_all_dim:
            return yarn_mscale(self.factor, self.mscale) / yarn_mscale(
                self.factor, self.mscale_all_dim
            )
        return yarn_mscale(self.factor)

    def rescale(self, inv_freq, *, base, seq_len=None):
        low, high = yarn_correction_range(
            _rotary_dim(inv_freq),
            base,
            self.original_max_position_embeddings,
            beta_fast=self.beta_fast,
            beta_slow=self.beta_slow,
            truncate=self.truncate,
        )
        if high == low:
            high = low + 1e-3  # the reference code's guard against a zero-width ramp
        interpolated = np.clip((_pair_index(inv_freq) - low) / (high - low), 0.0, 1.0)
        scaled = (1.0 - interpolated) * inv_freq + interpolated * inv_freq / self.factor
        return scaled, self.attention_scale


@dataclasses.dataclass(frozen=True)
class Llama3Scaling(RopeScaling):
    """Llama-3.1: keep short wavelengths, divide long ones, blend the band in between.

    With wavelength ``lambda_t = 2 pi / theta_t``, ``low_wl = L0 / low_freq_factor`` and
    ``high_wl = L0 / high_freq_factor``: ``lambda < high_wl`` keeps ``theta``;
    ``lambda > low_wl`` gives ``theta / factor``; in between
    ``(1 - g) theta / factor + g theta`` with ``g = (L0 / lambda - low) / (high - low)``.
    Meta's values: factor 8, low 1, high 4, ``L0 = 8192`` (with base 500000). Attention
    scale 1.

    Attributes:
      factor: divisor of the low frequencies, ``>= 1``.
      low_freq_factor: ``L0 / low_freq_factor`` is the longest kept-blended wavelength.
      high_freq_factor: ``L0 / high_freq_factor`` is the shortest; must exceed
        ``low_freq_factor``.
      original_max_position_embeddings: ``L0``.

    References:
      Llama Team, "The Llama 3 Herd of Models", arXiv 2407.21783, 2024; meta-llama
      llama-models ``models/llama3/model.py::apply_scaling``.
    """

    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192

    def __post_init__(self):
        _check_factor("Llama-3", self.factor)
        _check_length(
            "Llama-3", "original_max_position_embeddings", self.original_max_position_embeddings
        )
        if not self.high_freq_factor > self.low_freq_factor > 0:
            raise ValueError(
                "Llama-3 scaling needs high_freq_factor > low_freq_factor > 0 (4 and 1 in "
                f"Llama 3.1), got high_freq_factor={self.high_freq_factor}, "
                f"low_freq_factor={self.low_freq_factor}."
            )

    def rescale(self, inv_freq, *, base, seq_len=None):
        original = self.original_max_position_embeddings
        wavelength = 2 * math.pi / inv_freq
        blend = (original / wavelength - self.low_freq_factor) / (
            self.high_freq_factor - self.low_freq_factor
        )
        blended = (1 - blend) * inv_freq / self.factor + blend * inv_freq
        scaled = np.where(
            wavelength > original / self.low_freq_factor, inv_freq / self.factor, blended
        )
        scaled = np.where(wavelength < original / self.high_freq_factor, inv_freq, scaled)
        return scaled, 1.0


@dataclasses.dataclass(frozen=True)
class LongRoPEScaling(RopeScaling):
    """LongRoPE: searched per-frequency divisors, one set for short and one for long inputs.

    ``theta'_t = theta_t / lambda_t`` with ``lambda = short_factor`` while the current
    length is at most ``L0`` (and when it is unknown) and ``lambda = long_factor`` beyond.
    The attention scale is ``attention_factor`` if given, else
    ``sqrt(1 + ln(factor) / ln(L0))`` (1 for ``factor <= 1``). Hugging Face type
    "longrope" (Phi-3); the paper's un-interpolated first ``n^`` positions are not part of
    that convention and not implemented.

    Attributes:
      short_factor: ``d/2`` divisors used up to ``L0``.
      long_factor: ``d/2`` divisors used beyond ``L0``.
      original_max_position_embeddings: ``L0``.
      factor: the extension ratio (extended context / ``L0``) that sets the attention
        scale.
      attention_factor: explicit attention scale.

    References:
      Ding, Zhang, Zhang, Xu, Shang, Xu, Yang, Yang, "LongRoPE: Extending LLM Context
      Window Beyond 2 Million Tokens", ICML 2024, arXiv 2402.13753.
    """

    short_factor: Sequence[float]
    long_factor: Sequence[float]
    original_max_position_embeddings: int
    factor: float = 1.0
    attention_factor: float | None = None

    depends_on_length: ClassVar[bool] = True

    def __post_init__(self):
        for name in ("short_factor", "long_factor"):
            values = tuple(float(v) for v in getattr(self, name))
            if not values or not all(math.isfinite(v) and v > 0 for v in values):
                raise ValueError(
                    f"LongRoPE {name} must be a non-empty list of positive numbers (one per "
                    f"frequency pair), got {getattr(self, name)!r}."
                )
            object.__setattr__(self, name, values)
        if len(self.short_factor) != len(self.long_factor):
            raise ValueError(
                f"LongRoPE short_factor has {len(self.short_factor)} entries and long_factor "
                f"{len(self.long_factor)}; both need one per frequency pair."
            )
        _check_length(
            "LongRoPE", "original_max_position_embeddings", self.original_max_position_embeddings
        )
        if not (math.isfinite(self.factor) and self.factor > 0):
            raise ValueError(f"LongRoPE factor must be positive, got {self.factor!r}.")
        _check_optional_positive("LongRoPE", "attention_factor", self.attention_factor)

    @property
    def attention_scale(self) -> float:
        """The factor on both queries and keys (logits get its square)."""
        if self.attention_factor is not None:
            return float(self.attention_factor)
        if self.factor <= 1.0:
            return 1.0
        return math.sqrt(
            1 + math.log(self.factor) / math.log(self.original_max_position_embeddings)
        )

    def rescale(self, inv_freq, *, base, seq_len=None):
        if len(self.short_factor) != inv_freq.shape[-1]:
            raise ValueError(
                f"LongRoPE has {len(self.short_factor)} factors but the rotated dimension "
                f"{_rotary_dim(inv_freq)} has {inv_freq.shape[-1]} frequency pairs; give one "
                "factor per pair (rotated dimension / 2)."
            )
        short = inv_freq / np.asarray(self.short_factor)
        long = inv_freq / np.asarray(self.long_factor)
        original = self.original_max_position_embeddings
        if seq_len is None or is_concrete(seq_len):
            use_long = seq_len is not None and int(seq_len) > original
            return (long if use_long else short), self.attention_scale
        chosen = jnp.where(
            jnp.asarray(seq_len) > original,
            jnp.asarray(long, jnp.float32),
            jnp.asarray(short, jnp.float32),
        )
        return chosen, self.attention_scale


# --- Hugging Face configuration dicts --------------------------------------------------

_HF_TYPES = ("default", "linear", "dynamic", "ntk", "yarn", "llama3", "longrope")
# Early Phi-3 checkpoints named LongRoPE "su"; Hugging Face maps it to "longrope".
_HF_ALIASES = {"su": "longrope"}


def _hf_type(rope_params: Mapping[str, Any]) -> str:
    if not isinstance(rope_params, Mapping):
        raise ValueError(
            f"expected a Hugging Face rope_scaling / rope_parameters dict, got {rope_params!r}."
        )
    rope_type = rope_params.get("rope_type", rope_params.get("type"))
    if rope_type is None:
        raise ValueError(
            "the RoPE dict has no 'rope_type' (or legacy 'type') key; valid types: "
            f"{', '.join(_HF_TYPES)}. Got keys {sorted(rope_params)}."
        )
    rope_type = _HF_ALIASES.get(rope_type, rope_type)
    if rope_type not in _HF_TYPES:
        raise ValueError(
            f"unknown RoPE type {rope_type!r} in 'rope_type'; valid types: {', '.join(_HF_TYPES)}."
        )
    return rope_type


def _required(rope_params: Mapping[str, Any], key: str, rope_type: str, hint: str = "") -> Any:
    value = rope_params.get(key)
    if value is None:
        raise ValueError(
            f"RoPE type {rope_type!r} needs the key {key!r}, which is missing from the dict "
            f"(keys: {sorted(rope_params)}){hint}."
        )
    return value


def _as_length(value: Any, key: str, rope_type: str) -> int:
    """A config length as an int; a fractional or non-positive one is an error, not cut."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        valid = False
    else:
        valid = math.isfinite(value) and float(value).is_integer() and value > 0
    if not valid:
        raise ValueError(
            f"RoPE type {rope_type!r} needs {key} to be a positive integer, got {value!r}."
        )
    return int(value)


def _original_length(
    rope_params: Mapping[str, Any],
    rope_type: str,
    *fallbacks: int | None,
) -> int:
    """``original_max_position_embeddings`` from the dict, else the first fallback given."""
    for value in (rope_params.get("original_max_position_embeddings"), *fallbacks):
        if value is not None:
            return _as_length(value, "original_max_position_embeddings", rope_type)
    return _required(
        rope_params,
        "original_max_position_embeddings",
        rope_type,
        "; pass max_position_embeddings= (the model config's) to use it instead",
    )


def rope_scaling_from_hf(
    rope_params: Mapping[str, Any],
    *,
    max_position_embeddings: int | None = None,
    original_max_position_embeddings: int | None = None,
) -> RopeScaling | None:
    """The scaling object matching a Hugging Face ``rope_scaling`` / ``rope_parameters`` dict.

    ``rope_inv_freq(head_dim * partial_rotary_factor, base=rope_theta_from_hf(d),
    scaling=rope_scaling_from_hf(d, max_position_embeddings=...), seq_len=L)`` gives the
    inverse frequencies and attention factor of Hugging Face's ``ROPE_INIT_FUNCTIONS`` for
    that config (up to float32 rounding, which Hugging Face applies and this package does
    not).

    Conventions, per type (``rope_type``, or legacy ``type``):

    * "default" -> None (plain RoPE).
    * "linear" -> :class:`LinearScaling` (``factor``).
    * "ntk" -> :class:`NTKScaling` (``factor``; only in some Hugging Face versions).
    * "dynamic" -> :class:`DynamicNTKScaling` (``factor``); the original length is the
      config's ``max_position_embeddings`` (as Hugging Face does), else the dict's
      ``original_max_position_embeddings``.
    * "yarn" -> :class:`YaRNScaling` (``factor``, ``original_max_position_embeddings``
      defaulting to ``max_position_embeddings``, ``beta_fast`` / ``beta_slow`` defaulting
      to 32 / 1 when missing or 0, ``mscale``, ``mscale_all_dim``, ``attention_factor``,
      ``truncate``). A missing ``factor`` is
      ``max_position_embeddings / original_max_position_embeddings``.
    * "llama3" -> :class:`Llama3Scaling` (``factor``, ``low_freq_factor``,
      ``high_freq_factor``, ``original_max_position_embeddings``, all required).
    * "longrope" (or early Phi-3's "su") -> :class:`LongRoPEScaling` (``short_factor``,
      ``long_factor``, ``attention_factor``). Phi-3 keeps ``original_max_position_embeddings``
      at the top level of its config: pass it as the keyword. A missing ``factor`` is
      ``max_position_embeddings / original_max_position_embeddings``.

    Keys that do not concern the type (``rope_theta``, ``partial_rotary_factor``, ...) are
    ignored.

    Args:
      rope_params: the dict.
      max_position_embeddings: the model config's ``max_position_embeddings``.
      original_max_position_embeddings: a top-level ``original_max_position_embeddings``
        (Phi-3); the dict's own key takes precedence.

    Returns:
      A :class:`RopeScaling`, or None for "default".

    Raises:
      ValueError: for an unknown type, a missing required key (the message names it), or
        values the method does not accept.
    """
    rope_type = _hf_type(rope_params)
    if rope_type == "default":
        return None
    if rope_type == "linear":
        return LinearScaling(float(_required(rope_params, "factor", rope_type)))
    if rope_type == "ntk":
        return NTKScaling(float(_required(rope_params, "factor", rope_type)))
    if rope_type == "dynamic":
        # Hugging Face's dynamic NTK reads the config's max_position_embeddings, not the
        # dict's original_max_position_embeddings; the latter is only a fallback here.
        original = max_position_embeddings
        if original is None:
            original = _original_length(rope_params, rope_type)
        return DynamicNTKScaling(
            factor=float(_required(rope_params, "factor", rope_type)),
            original_max_position_embeddings=_as_length(
                original, "max_position_embeddings", rope_type
            ),
        )
    if rope_type == "yarn":
        original = _original_length(rope_params, rope_type, max_position_embeddings)
        factor = rope_params.get("factor")
        if factor is None:
            if max_position_embeddings is None:
                _required(rope_params, "factor", rope_type, " (or pass max_position_embeddings=)")
            factor = max_position_embeddings / original
        return YaRNScaling(
            factor=float(factor),
            original_max_position_embeddings=original,
            beta_fast=float(rope_params.get("beta_fast") or YARN_BETA_FAST),
            beta_slow=float(rope_params.get("beta_slow") or YARN_BETA_SLOW),
            mscale=rope_params.get("mscale"),
            mscale_all_dim=rope_params.get("mscale_all_dim"),
            attention_factor=rope_params.get("attention_factor"),
            truncate=bool(rope_params.get("truncate", True)),
        )
    if rope_type == "llama3":
        return Llama3Scaling(
            factor=float(_required(rope_params, "factor", rope_type)),
            low_freq_factor=float(_required(rope_params, "low_freq_factor", rope_type)),
            high_freq_factor=float(_required(rope_params, "high_freq_factor", rope_type)),
            original_max_position_embeddings=_as_length(
                _required(rope_params, "original_max_position_embeddings", rope_type),
                "original_max_position_embeddings",
                rope_type,
            ),
        )
    # longrope
    short_factor = _required(rope_params, "short_factor", rope_type)
    long_factor = _required(rope_params, "long_factor", rope_type)
    original = _original_length(
        rope_params, rope_type, original_max_position_embeddings, max_position_embeddings
    )
    factor = rope_params.get("factor")
    if factor is None:
        if max_position_embeddings is None:
            _required(rope_params, "factor", rope_type, " (or pass max_position_embeddings=)")
        factor = max_position_embeddings / original
    return LongRoPEScaling(
        short_factor=short_factor,
        long_factor=long_factor,
        original_max_position_embeddings=original,
        factor=float(factor),
        attention_factor=rope_params.get("attention_factor"),
    )


def rope_theta_from_hf(
    rope_params: Mapping[str, Any] | None,
    *,
    rope_theta: float | None = None,
    default: float = 10000.0,
) -> float:
    """The RoPE base of a Hugging Face config.

    Newer configs keep ``rope_theta`` inside ``rope_parameters``; older ones keep it at the
    top level (pass it as ``rope_theta``); models without either use 10000.

    Args:
      rope_params: a ``rope_parameters`` / ``rope_scaling`` dict, or None.
      rope_theta: the config's top-level ``rope_theta``, if any.
      default: the base when neither has one.

    Returns:
      The base as a float.
    """
    if rope_params is not None and rope_params.get("rope_theta") is not None:
        return float(rope_params["rope_theta"])
    if rope_theta is not None:
        return float(rope_theta)
    return float(default)
