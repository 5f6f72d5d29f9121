"""Rotary encodings: RoPE, its long-context scalings, xPos, p-RoPE, FoPE, PoPE (``rotate``).

Every encoding here rotates queries ``[B, L, H, K]`` and keys ``[B, S, G, K]`` by their
positions and adds nothing elsewhere (PoPE also widens them to ``2K``). The math lives in
:mod:`posenc_jax.functional` (``rope``, ``rope_scaling``, ``fope``, ``pope``); these
modules choose the frequencies and parameters.

Current length. Dynamic NTK and LongRoPE depend on the current length, taken as the
largest query or key position + 1 over the whole batch (Hugging Face's
``max(position_ids) + 1``), not from an array shape: positions are data, and randomized,
offset or cached positions make the shape the wrong length. When the hook context marks
padding, each example uses its own length instead (its largest real position + 1), so a
padded example is rotated exactly as it is unpadded. With concrete positions the length is
a Python int and the frequencies are float64 constants; under ``jit`` it is a traced
scalar (no recompilation per length) and the frequencies are computed from it in float64
on the host.
One consequence: these two are not causal in the length. A full forward pass rotates every
token with the frequencies of the whole sequence, while decoding with a key/value cache
rotates each key once, when it is written, with the frequencies of that step (Hugging
Face's cache does the same). Once the length passes the original context, a decoding
step's logits differ from those of a full pass over the same prefix.

Attention scale. YaRN and LongRoPE multiply both rotated queries and keys by their
attention scale, as Hugging Face multiplies cos and sin, so the logits are multiplied by
its square.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from posenc_jax._checks import is_concrete
from posenc_jax.encodings.base import PositionalEncoding
from posenc_jax.encodings.parameters import Dims, Parameter, Specs
from posenc_jax.encodings.registry import register
from posenc_jax.functional import fope as fope_math
from posenc_jax.functional import pope as pope_math
from posenc_jax.functional import rope as rope_math
from posenc_jax.functional import rope_scaling
from posenc_jax.typing import Array


def _current_length(q_positions: Array, k_positions: Array) -> int | Array:
    """Largest position + 1 over queries and keys; a Python int when the values are known."""
    if is_concrete(q_positions) and is_concrete(k_positions):
        # np.asarray first: a jnp reduction inside jit would be traced even on known values.
        return int(max(np.max(np.asarray(q_positions)), np.max(np.asarray(k_positions)))) + 1
    return jnp.maximum(jnp.max(q_positions), jnp.max(k_positions)) + 1


class _Rotary(PositionalEncoding):
    """Shared ``rotate`` hook: subclasses choose the frequencies and the amplitude."""

    layout: str = "half"

    def _frequencies(self, head_dim: int, q_positions: Array, k_positions: Array, *, length):
        """``(inv_freq [d/2], attention_scale)`` for heads of ``head_dim`` features at the
        current ``length`` (None: the largest position + 1, read from the positions)."""
        raise NotImplementedError

    def _depends_on_length(self, head_dim: int) -> bool:
        """Whether the frequencies follow the current length (dynamic NTK, LongRoPE)."""
        return False

    def rotate_with(
        self, params, q: Array, k: Array, q_positions: Array, k_positions: Array, *, context=None
    ):
        if q.shape[-1] != k.shape[-1]:
            raise ValueError(
                f"queries and keys need the same head dimension to be rotated, got "
                f"{q.shape[-1]} and {k.shape[-1]}."
            )
        lengths = None if context is None else context.example_lengths()
        if lengths is not None and self._depends_on_length(q.shape[-1]):
            # Each example at its own length: one row at a time, with that row's length.
            def rotate_row(q_row, k_row, q_row_positions, k_row_positions, length):
                return self._rotate_at(
                    q_row[None], k_row[None], q_row_positions[None], k_row_positions[None], length
                )

            q, k = jax.vmap(rotate_row)(q, k, q_positions, k_positions, lengths)
            return q[:, 0], k[:, 0]
        return self._rotate_at(q, k, q_positions, k_positions, None)

    def _rotate_at(self, q, k, q_positions, k_positions, length):
        """Rotates at ``length`` (the current length; None: from the positions)."""
        inv_freq, attention_scale = self._frequencies(
            q.shape[-1], q_positions, k_positions, length=length
        )
        q_scale, k_scale = self._amplitudes(
            inv_freq, attention_scale, q_positions, k_positions, q.dtype
        )
        q = rope_math.apply_rope(q, q_positions, inv_freq, layout=self.layout, scale=q_scale)
        k = rope_math.apply_rope(k, k_positions, inv_freq, layout=self.layout, scale=k_scale)
        return q, k

    def _amplitudes(self, inv_freq, attention_scale, q_positions, k_positions, dtype):
        """Factors on the rotated queries and keys (stored in ``dtype``): the attention
        scale on both by default."""
        return attention_scale, attention_scale


@register("rope")
class RoPE(_Rotary):
    """Rotary position embedding; subclasses add the long-context scalings.

    Attributes:
      base: wavelength base (``rope_theta``).
      layout: "half" (GPT-NeoX / LLaMA) or "interleaved" (RoFormer / GPT-J).
      rotary_fraction: fraction of each head's features that are rotated (GPT-NeoX
        ``rotary_pct``); the rotated dimension ``int(K * rotary_fraction)`` must be even,
        and the frequencies use it as the exponent's denominator.

    References:
      Su, Lu, Pan, Murtadha, Wen, Liu, "RoFormer: Enhanced Transformer with Rotary Position
      Embedding", arXiv 2104.09864, 2021.
    """

    base: float = 10000.0
    rotary_fraction: float = 1.0

    def _scaling(self, rotary_dim: int) -> rope_scaling.RopeScaling | None:
        """The scaling method for ``rotary_dim`` rotated features; None for plain RoPE."""
        return None

    def _rotary_dim(self, head_dim: int) -> int:
        if not 0.0 < self.rotary_fraction <= 1.0:
            raise ValueError(f"rotary_fraction must be in (0, 1], got {self.rotary_fraction!r}.")
        rotary_dim = int(head_dim * self.rotary_fraction)
        if rotary_dim <= 0 or rotary_dim % 2:
            raise ValueError(
                f"rotated dimension int({head_dim} * rotary_fraction {self.rotary_fraction}) = "
                f"{rotary_dim} must be a positive even number: RoPE rotates feature pairs."
            )
        return rotary_dim

    def _depends_on_length(self, head_dim: int) -> bool:
        scaling = self._scaling(self._rotary_dim(head_dim))
        return scaling is not None and scaling.depends_on_length

    def _frequencies(self, head_dim, q_positions, k_positions, *, length):
        rotary_dim = self._rotary_dim(head_dim)
        scaling = self._scaling(rotary_dim)
        seq_len = None
        if scaling is not None and scaling.depends_on_length:
            seq_len = _current_length(q_positions, k_positions) if length is None else length
            if not is_concrete(seq_len):
                # Known only when the program runs: float64 frequencies from the host.
                return rope_math.rope_turns_at_length(
                    rotary_dim, base=self.base, scaling=scaling, seq_len=seq_len
                )
        return rope_math.rope_inv_freq(rotary_dim, base=self.base, scaling=scaling, seq_len=seq_len)


@register("rope_pi")
class LinearRoPE(RoPE):
    """RoPE with Position Interpolation: frequencies divided by ``factor``.

    References:
      Chen, Wong, Chen, Tian, "Extending Context Window of Large Language Models via
      Positional Interpolation", arXiv 2306.15595, 2023.
    """

    factor: float = 4.0

    def _scaling(self, rotary_dim):
        return rope_scaling.LinearScaling(self.factor)


@register("rope_ntk")
class NTKRoPE(RoPE):
    """RoPE with NTK-aware base rescaling ``base * factor^(d/(d-2))``.

    References:
      bloc97, "NTK-Aware Scaled RoPE", r/LocalLLaMA, 2023.
    """

    factor: float = 4.0

    def _scaling(self, rotary_dim):
        return rope_scaling.NTKScaling(self.factor)


@register("rope_dynamic_ntk")
class DynamicNTKRoPE(RoPE):
    """RoPE whose NTK base grows with the current length beyond the original context.

    The current length is the largest position + 1 (see the module docstring).

    References:
      emozilla, "Dynamically Scaled RoPE", r/LocalLLaMA, 2023.
    """

    factor: float = 2.0
    original_max_position_embeddings: int = 2048

    def _scaling(self, rotary_dim):
        return rope_scaling.DynamicNTKScaling(self.factor, self.original_max_position_embeddings)


@register("rope_yarn")
class YaRNRoPE(RoPE):
    """RoPE with YaRN: NTK-by-parts frequencies and an attention temperature.

    References:
      Peng, Quesnelle, Fan, Shippole, "YaRN: Efficient Context Window Extension of Large
      Language Models", ICLR 2024, arXiv 2309.00071.
    """

    factor: float = 4.0
    original_max_position_embeddings: int = 2048
    beta_fast: float = rope_scaling.YARN_BETA_FAST
    beta_slow: float = rope_scaling.YARN_BETA_SLOW
    mscale: float | None = None
    mscale_all_dim: float | None = None
    attention_factor: float | None = None
    truncate: bool = True

    def _scaling(self, rotary_dim):
        return rope_scaling.YaRNScaling(
            factor=self.factor,
            original_max_position_embeddings=self.original_max_position_embeddings,
            beta_fast=self.beta_fast,
            beta_slow=self.beta_slow,
            mscale=self.mscale,
            mscale_all_dim=self.mscale_all_dim,
            attention_factor=self.attention_factor,
            truncate=self.truncate,
        )


@register("rope_llama3")
class Llama3RoPE(RoPE):
    """RoPE with Llama-3.1 frequency bands; the defaults are Llama 3.1's (base 500000).

    References:
      Llama Team, "The Llama 3 Herd of Models", arXiv 2407.21783, 2024.
    """

    base: float = 500000.0
    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192

    def _scaling(self, rotary_dim):
        return rope_scaling.Llama3Scaling(
            factor=self.factor,
            low_freq_factor=self.low_freq_factor,
            high_freq_factor=self.high_freq_factor,
            original_max_position_embeddings=self.original_max_position_embeddings,
        )


@register("rope_longrope")
class LongRoPE(RoPE):
    """RoPE with LongRoPE per-frequency factors, short or long by the current length.

    Attributes:
      short_factor: one divisor per frequency pair up to the original length; None means
        all ones (plain RoPE there).
      long_factor: one divisor per pair beyond it; None means ``factor`` for every pair
        (Position Interpolation), the baseline LongRoPE's search starts from.
      original_max_position_embeddings: the original length.
      factor: extension ratio; sets the attention scale ``sqrt(1 + ln(factor) / ln(L0))``.
      attention_factor: explicit attention scale.

    References:
      Ding et al., "LongRoPE: Extending LLM Context Window Beyond 2 Million Tokens",
      ICML 2024, arXiv 2402.13753.
    """

    short_factor: tuple[float, ...] | None = None
    long_factor: tuple[float, ...] | None = None
    original_max_position_embeddings: int = 2048
    factor: float = 4.0
    attention_factor: float | None = None

    def _scaling(self, rotary_dim):
        pairs = rotary_dim // 2
        return rope_scaling.LongRoPEScaling(
            short_factor=self.short_factor if self.short_factor is not None else (1.0,) * pairs,
            long_factor=self.long_factor
            if self.long_factor is not None
            else (self.factor,) * pairs,
            original_max_position_embeddings=self.original_max_position_embeddings,
            factor=self.factor,
            attention_factor=self.attention_factor,
        )


@register("xpos")
class XPos(RoPE):
    """xPos: RoPE with a per-frequency exponential decay ``zeta_t^((n - m) / scale_base)``.

    Defined for causal attention only: for a key after the query the factor grows instead
    of decaying (attention raises an error when used bidirectionally).

    References:
      Sun, Dong, Patra, Ma, Huang, Benhaim, Chaudhary, Song, Wei, "A Length-Extrapolatable
      Transformer", ACL 2023, arXiv 2212.10554.
    """

    causal_only = True

    scale_base: float = rope_math.XPOS_SCALE_BASE

    def _amplitudes(self, inv_freq, attention_scale, q_positions, k_positions, dtype):
        zeta = rope_math.xpos_zeta(2 * inv_freq.shape[-1])
        return rope_math.xpos_scales(
            q_positions, k_positions, zeta, scale_base=self.scale_base, dtype=dtype
        )


@register("p_rope")
class PRoPE(_Rotary):
    """p-RoPE: RoPE on the fraction ``p`` of highest frequencies, the rest never rotate.

    ``p = 1`` is RoPE and ``p = 0`` is NoPE; the paper finds ``p = 0.75`` best.

    Attributes:
      p: fraction of frequency pairs kept.
      base: wavelength base.
      layout: "half" (the paper's Gemma code) or "interleaved".

    References:
      Barbero, Vitvitskyi, Perivolaropoulos, Pascanu, Velickovic, "Round and Round We Go!
      What makes Rotary Positional Encodings useful?", ICLR 2025, arXiv 2410.06205.
    """

    p: float = 0.75
    base: float = 10000.0

    def _frequencies(self, head_dim, q_positions, k_positions, *, length):
        return rope_math.p_rope_inv_freq(head_dim, p=self.p, base=self.base), 1.0


@register("fope")
class FoPE(PositionalEncoding):
    """FoPE: each rotated pair's phase a fixed Fourier series over RoPE's trained frequencies.

    Queries and keys of head ``g`` at position ``n`` turn pair ``t`` by the factors
    ``C_t(n) = sum_f cos(w_f n) A_g[f, t]`` and ``S_t(n) = sum_f sin(w_f n) B_g[f, t]``
    instead of RoPE's ``cos(w_t n)``, ``sin(w_t n)``: the frequencies ``w_f`` are RoPE's
    without those below ``2 pi / train_length`` (zeroed: a frequency that never completes
    a period in training is never learned beyond it), ``A = I + a`` and ``B = I + b`` with
    small random ``a``, ``b`` per key/value head, fixed at initialization as in the
    official code, and drawn per layer (the seed with the layer index folded in). The
    first ``min(F, K / 4)`` pairs carry series; the rest carry no position (factors
    ``C = S = 1``, as the official code pads them). See
    :mod:`posenc_jax.functional.fope`. With ``gain=0`` it is RoPE at the kept
    frequencies, relative in position; with noise a logit depends on both positions.

    Attributes:
      train_length: L_train, the longest training sequence in tokens (the study sets it
        to its training length).
      base: RoPE's base.
      gain: the Xavier gain of the coefficients' noise (0.3, the official 60M models').
      seed: the coefficients' seed.

    References:
      Hua, Jiang, Lv, Zhang, Sun, Fan, Zhu, Qi, Ding, Zhou, "Fourier Position Embedding:
      Enhancing Attention's Periodic Extension for Length Generalization", ICML 2025,
      arXiv 2412.17739.
    """

    train_length: int = 512
    base: float = 10000.0
    gain: float = 0.3
    seed: int = 0

    def rotate_with(
        self, params, q: Array, k: Array, q_positions: Array, k_positions: Array, *, context=None
    ):
        head_dim = q.shape[-1]
        inv_freq = fope_math.fope_inv_freq(head_dim, train_length=self.train_length, base=self.base)
        series = fope_math.fope_num_series(head_dim, inv_freq.shape[0])
        layer = 0 if context is None or context.layer_index is None else context.layer_index
        cos_coefficients, sin_coefficients = fope_math.fope_coefficients(
            k.shape[-2], inv_freq.shape[0], series, gain=self.gain, seed=[self.seed, layer]
        )
        apply = functools.partial(
            fope_math.apply_fope,
            inv_freq=inv_freq,
            cos_coefficients=cos_coefficients,
            sin_coefficients=sin_coefficients,
        )
        return apply(q, q_positions), apply(k, k_positions)


@register("pope")
class PoPE(PositionalEncoding):
    """PoPE: magnitudes softplus(content), phases from position, a learned phase offset per head.

    Each of a head's ``K`` query and key features becomes a complex number of magnitude
    ``softplus(x_c)`` and phase ``p theta_c`` (``theta_c = base^(-c/K)``), keys with a
    learned per-head offset ``delta_c`` clamped to ``[-2 pi, 0]``, so that the logit is
    ``sum_c softplus(q_c) softplus(k_c) cos((t - s) theta_c - delta_c) / sqrt(K)``:
    content sets only magnitudes, position only phases, and the logit depends on the two
    positions through ``t - s`` alone. ``rotate`` returns queries and keys of ``2K``
    features ``[mu cos, mu sin]`` (the values keep ``K``); the queries carry ``sqrt(2)``
    so that the attention's ``1 / sqrt(2K)`` is the ``1 / sqrt(K)`` above, and the offset
    (on the queries' phase, an equivalent form) leaves grouped key heads shared. See
    :mod:`posenc_jax.functional.pope`.

    Attributes:
      base: the frequencies' base.
      learned_offset: learn ``delta`` (``[H, K]``, zeros at first as in x-transformers'
        ``polar_pos_emb``); False fixes it at 0.
      uniform_offset_init: start ``delta`` uniform in ``[-2 pi, 0]`` instead (the
        x-transformers option ``polar_bias_uniform_init``).

    References:
      Gopalakrishnan, Csordás, Schmidhuber, Mozer, "Decoupling the 'What' and 'Where' With
      Polar Coordinate Positional Embeddings", arXiv 2509.10534, 2025.
    """

    base: float = 10000.0
    learned_offset: bool = True
    uniform_offset_init: bool = False

    @nn.nowrap
    def rotated_width(self, head_dim: int) -> int:
        return 2 * head_dim

    def attention_parameters(self, dims: Dims) -> Specs:
        if not self.learned_offset:
            return {}

        def init(key, shape, dtype=jnp.float32):
            if self.uniform_offset_init:
                return jax.random.uniform(key, shape, dtype, -2 * np.pi, 0.0)
            return jnp.zeros(shape, dtype)

        return {"phase_offset": Parameter((dims.num_heads, dims.head_dim), init)}

    def rotate_with(
        self, params, q: Array, k: Array, q_positions: Array, k_positions: Array, *, context=None
    ):
        inv_freq = pope_math.pope_inv_freq(q.shape[-1], base=self.base)
        offset = None
        if self.learned_offset:
            offset = pope_math.clamp_phase_bias(params["phase_offset"])
        q = pope_math.apply_pope(
            q, q_positions, inv_freq, phase_bias=offset, scale=float(np.sqrt(2.0))
        )
        return q, pope_math.apply_pope(k, k_positions, inv_freq)
