"""Rotary position embedding (RoPE) and its relatives: frequencies, angles, rotation.

Queries and keys are rotated pair by pair: pair ``t`` of a vector at position ``m`` turns
by ``m * theta_t``, so that ``<R(m) q, R(n) k>`` depends on ``m - n`` only (Su et al. 2021).

Two layouts decide which features form pair ``t`` of a rotated dimension ``d``:

* ``"half"`` (GPT-NeoX, Hugging Face LLaMA, Gemma): features ``t`` and ``t + d/2``.
* ``"interleaved"`` (RoFormer, GPT-J, Meta's LLaMA code): features ``2t`` and ``2t + 1``.

They are the same operator up to a fixed permutation of the head dimension. With partial
rotary, only the first ``d = 2 * len(inv_freq)`` features are rotated (GPT-NeoX
``rotary_pct``, Hugging Face ``partial_rotary_factor``) and the rest pass through.

Angles are never computed in the input dtype: bfloat16 cannot even hold the position 257.
They are reduced modulo one turn in integer fixed point (see :func:`rope_angles`), so they
stay exact to ~1e-6 rad at any int32 position, where a plain float32 ``m * theta`` is off
by up to 0.06 rad at position 10^6.
"""

import math
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from posenc_jax._checks import check_base, check_int32_positions, check_values, is_concrete
from posenc_jax.functional.rope_scaling import RopeScaling
from posenc_jax.typing import Array

LAYOUTS = ("half", "interleaved")

# xPos (Sun et al. 2022, Eq. 10): zeta_t = (2t/d + gamma) / (1 + gamma) with gamma = 0.4.
XPOS_GAMMA = 0.4
XPOS_SCALE_BASE = 512.0
# The xPos factors are kept below (the dtype's largest value) / this, so that queries and
# keys with components up to 256, rotated (a pair's component grows by up to sqrt(2)) and
# multiplied by zeta^(n/s) and zeta^(-m/s), stay finite.
_XPOS_VALUE_HEADROOM = 256.0 * math.sqrt(2.0)


def _check_rotary_dim(head_dim: int, what: str = "rotated dimension") -> None:
    if not (isinstance(head_dim, int | np.integer) and head_dim > 0 and head_dim % 2 == 0):
        raise ValueError(
            f"RoPE rotates features in pairs: the {what} must be a positive even integer, "
            f"got {head_dim!r}. Use an even head dimension or a rotary fraction that gives one."
        )


def rope_inv_freq(
    head_dim: int,
    *,
    base: float = 10000.0,
    scaling: RopeScaling | None = None,
    seq_len: int | Array | None = None,
) -> tuple[np.ndarray | Array, float]:
    """RoPE inverse frequencies ``theta_t = base^(-2t/d)``, optionally scaled.

    Args:
      head_dim: the rotated dimension ``d`` (the head dimension, or its rotated part with
        partial rotary); a positive even integer.
      base: the wavelength base (10000 in RoFormer, 500000 in Llama 3; ``rope_theta``).
      scaling: a :mod:`~posenc_jax.functional.rope_scaling` method, or None for plain RoPE.
      seq_len: the current length (largest position + 1), used by the methods that depend
        on it (dynamic NTK, LongRoPE); None means the original context. May be a traced
        scalar.

    Returns:
      ``(inv_freq, attention_scale)``. ``inv_freq`` has shape ``[head_dim // 2]``: a
      float64 NumPy array when every input is static (the frequencies are constants of the
      model; keeping them in float64 lets :func:`rope_angles` stay exact at large
      positions), a float32 jax Array when ``seq_len`` is traced. ``attention_scale`` is a
      float that multiplies both rotated queries and keys (so logits by its square); 1
      except for YaRN and LongRoPE.

    Raises:
      ValueError: for an odd or non-positive ``head_dim`` or a base <= 1.

    References:
      Su, Lu, Pan, Murtadha, Wen, Liu, "RoFormer: Enhanced Transformer with Rotary Position
      Embedding", arXiv 2104.09864, 2021, Eq. (15).
    """
    _check_rotary_dim(head_dim)
    check_base(base, "RoPE")
    if seq_len is not None and is_concrete(seq_len):
        length = float(np.asarray(seq_len))
        if not (length.is_integer() and length > 0):
            raise ValueError(
                f"seq_len must be a positive integer length (largest position + 1), got "
                f"{seq_len!r}."
            )
    inv_freq = base ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    if scaling is None:
        return inv_freq, 1.0
    if not isinstance(scaling, RopeScaling):
        raise ValueError(
            f"scaling must be a RopeScaling (e.g. YaRNScaling, or rope_scaling_from_hf(...)), "
            f"got {scaling!r}."
        )
    scaled, attention_scale = scaling.rescale(inv_freq, base=float(base), seq_len=seq_len)
    return scaled, float(attention_scale)


def p_rope_inv_freq(head_dim: int, *, p: float, base: float = 10000.0) -> np.ndarray:
    """p-RoPE: the ``int(p * head_dim / 2)`` highest RoPE frequencies, the rest set to 0.

    The exponent keeps the full ``head_dim`` as denominator (unlike partial rotary), so the
    kept pairs rotate exactly as in RoPE; the zeroed ones never rotate and carry content
    only. ``p = 1`` is RoPE, ``p = 0`` is NoPE.

    Args:
      head_dim: the head dimension, a positive even integer.
      p: the fraction of frequencies kept, in ``[0, 1]`` (0.75 is best in the paper).
      base: the RoPE base.

    Returns:
      float64 ``[head_dim // 2]``.

    References:
      Barbero, Vitvitskyi, Perivolaropoulos, Pascanu, Velickovic, "Round and Round We Go!
      What makes Rotary Positional Encodings useful?", ICLR 2025, arXiv 2410.06205,
      Section 6 and Appendix D.
    """
    if isinstance(p, bool) or not (isinstance(p, numbers.Real) and 0.0 <= p <= 1.0):
        raise ValueError(f"p-RoPE p must be a fraction in [0, 1], got {p!r}.")
    inv_freq, _ = rope_inv_freq(head_dim, base=base)
    kept = int(p * head_dim / 2)
    return np.where(np.arange(head_dim // 2) < kept, inv_freq, 0.0)


def _outer(positions: Array, per_pair: Array) -> Array:
    """``positions[..., None] * per_pair`` with the broadcast spelled out."""
    return positions[..., None] * per_pair.reshape((1,) * positions.ndim + (-1,))


class FixedPointTurns(NamedTuple):
    """Frequencies as turns per position, in units of 2^-32 turn: ``whole + fraction``.

    ``whole`` is a uint32 (the first 32 fractional bits of a turn) and ``fraction`` a
    float32 in [0, 1) of the same unit. :func:`rope_angles` and :func:`apply_rope` accept it
    wherever they accept ``inv_freq``; :func:`rope_turns_at_length` returns one.
    """

    whole: Array
    fraction: Array

    @property
    def shape(self) -> tuple[int, ...]:
        return self.whole.shape


def _split_turns(inv_freq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The float64 frequencies ``inv_freq`` as NumPy ``(whole uint32, fraction float32)``."""
    turns = np.asarray(inv_freq, np.float64) / (2 * np.pi)
    units = (turns - np.floor(turns)) * 2.0**32
    whole = np.floor(units)
    return whole.astype(np.uint32), (units - whole).astype(np.float32)


def _fixed_point_turns(inv_freq) -> FixedPointTurns:
    """Splits ``theta / (2 pi)`` turns per position into 2^-32-turn units.

    Static frequencies are split from float64; traced ones from their float32 value
    (exactly, but that value already carries float32's relative error).
    """
    if isinstance(inv_freq, FixedPointTurns):
        return inv_freq
    if is_concrete(inv_freq):
        whole, fraction = _split_turns(inv_freq)
        return FixedPointTurns(jnp.asarray(whole), jnp.asarray(fraction))
    turns = jnp.asarray(inv_freq, jnp.float32) / jnp.float32(2 * np.pi)
    units = (turns - jnp.floor(turns)) * jnp.float32(2.0**32)
    whole = jnp.floor(units)
    return FixedPointTurns(whole.astype(jnp.uint32), units - whole)


def rope_turns_at_length(
    head_dim: int, *, base: float, scaling: RopeScaling, seq_len: Array
) -> tuple[FixedPointTurns, float]:
    """``rope_inv_freq`` at a traced length, computed in float64 on the host.

    Length-dependent scalings (dynamic NTK, LongRoPE) under ``jit`` only know the length
    when the program runs. Computing their frequencies there in float32 carries a relative
    error of ~6e-8 into every angle: 0.06 rad at position 10^6. Here a host callback
    evaluates :func:`rope_inv_freq` with the length's value in float64 and returns the
    frequencies already split into fixed-point turns, so :func:`rope_angles` stays exact.
    Any length up to the original context gives the original frequencies for both methods,
    so lengths below 1 (negative positions) are read as 1.

    Returns:
      ``(turns [head_dim // 2], attention_scale)``; the scale does not depend on the length.
    """
    pairs = head_dim // 2

    def on_host(length):
        inv_freq, _ = rope_inv_freq(
            head_dim, base=base, scaling=scaling, seq_len=max(int(length), 1)
        )
        return _split_turns(inv_freq)

    whole, fraction = jax.pure_callback(
        on_host,
        (
            jax.ShapeDtypeStruct((pairs,), jnp.uint32),
            jax.ShapeDtypeStruct((pairs,), jnp.float32),
        ),
        jnp.asarray(seq_len, jnp.int32),
        vmap_method="sequential",
    )
    _, attention_scale = rope_inv_freq(head_dim, base=base, scaling=scaling)
    return FixedPointTurns(whole, fraction), attention_scale


def rope_angles(positions: Array, inv_freq) -> Array:
    """Rotation angles ``positions * inv_freq`` reduced to ``[-pi, pi]``, in float32.

    A float32 product ``m * theta`` carries the rounding of ``theta`` and of the product
    (together up to 0.06 rad near 10^6), and bfloat16 cannot even represent the position
    257. Here the turns per position ``theta / 2 pi`` are held as a 32-bit fixed-point
    fraction plus a float32 remainder: ``m * whole`` wraps modulo 2^32 in uint32
    arithmetic, which is exactly the reduction modulo one turn, and ``m * remainder`` is
    below half a turn. The result is within ~1e-6 rad of the exact angle for every int32
    position (positive or negative) when ``inv_freq`` is static (float64 NumPy, as
    :func:`rope_inv_freq` returns it) or :class:`FixedPointTurns` (from
    :func:`rope_turns_at_length`); traced float32 frequencies keep their own rounding.

    Args:
      positions: integer array ``[...]``.
      inv_freq: ``[P]`` frequencies (radians per position), or :class:`FixedPointTurns`.

    Returns:
      float32 ``[..., P]``.

    Raises:
      ValueError: if ``positions`` are not integers.
    """
    return _turns(positions, inv_freq) * jnp.float32(2 * np.pi)


def rope_cos_sin(positions: Array, inv_freq) -> tuple[Array, Array]:
    """``(cos, sin)`` of :func:`rope_angles`, float32 ``[..., P]`` each, to ~3e-7.

    Computed from the angle in turns with a quadrant reduction and polynomials on
    ``[-pi/4, pi/4]`` (Taylor to degree 9 for sine, 10 for cosine; truncation below 2e-9),
    which vectorize. XLA on CPU evaluates ``jnp.sin`` and ``jnp.cos`` with a scalar
    ``sincosf`` call per element, in every fusion that reads them; with these polynomials
    the study's RoPE training step at L 256 is ~8% faster (experiments/benchmarks/NOTES.md).

    Args:
      positions: integer array ``[...]``.
      inv_freq: ``[P]`` frequencies, or :class:`FixedPointTurns` (as for
        :func:`rope_angles`).

    Raises:
      ValueError: if ``positions`` are not integers.
    """
    turns = _turns(positions, inv_freq)  # [-1/2, 1/2]
    quadrant = jnp.round(turns * 4)  # the nearest multiple of a quarter turn
    x = (turns - quadrant * 0.25) * jnp.float32(2 * np.pi)  # [-pi/4, pi/4]
    x2 = x * x
    sin_x = x * _polynomial(x2, [1.0, -1 / 6, 1 / 120, -1 / 5040, 1 / 362880])
    cos_x = _polynomial(x2, [1.0, -1 / 2, 1 / 24, -1 / 720, 1 / 40320, -1 / 3628800])
    # angle = x + quadrant * pi / 2
    quadrant = quadrant.astype(jnp.int32) % 4
    odd = quadrant % 2 == 1
    sin = jnp.where(odd, cos_x, sin_x) * jnp.where(quadrant >= 2, -1.0, 1.0)
    cos = jnp.where(odd, sin_x, cos_x) * jnp.where((quadrant == 1) | (quadrant == 2), -1.0, 1.0)
    return cos, sin


def _polynomial(x: Array, coefficients: list[float]) -> Array:
    """``sum_i coefficients[i] x^i`` by Horner's rule, in float32."""
    result = jnp.full_like(x, coefficients[-1])
    for c in reversed(coefficients[:-1]):
        result = result * x + jnp.float32(c)
    return result


def _turns(positions: Array, inv_freq) -> Array:
    """``positions * inv_freq / (2 pi)`` reduced to ``[-1/2, 1/2]`` turns, float32 ``[..., P]``
    (the fixed-point reduction of :func:`rope_angles`)."""
    check_int32_positions(positions, "RoPE positions")
    positions = jnp.asarray(positions)
    if not jnp.issubdtype(positions.dtype, jnp.integer):
        raise ValueError(
            f"RoPE positions must be an integer array, got dtype {positions.dtype}; scale the "
            "frequencies (e.g. LinearScaling) instead of passing fractional positions."
        )
    positions = positions.astype(jnp.int32)
    whole, fraction = _fixed_point_turns(inv_freq)
    # uint32 products keep the low 32 bits, i.e. the product modulo whole turns; the
    # bitcast makes negative positions wrap the same way.
    wrapped = _outer(jax.lax.bitcast_convert_type(positions, jnp.uint32), whole)
    signed_units = jax.lax.bitcast_convert_type(wrapped, jnp.int32).astype(jnp.float32)
    units = signed_units + _outer(positions.astype(jnp.float32), fraction)
    turns = units * jnp.float32(2.0**-32)
    return turns - jnp.round(turns)


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown RoPE layout {layout!r}; valid layouts: {', '.join(LAYOUTS)}.")


def apply_rope(
    x: Array,
    positions: Array,
    inv_freq,
    *,
    layout: str = "half",
    scale: float | Array = 1.0,
) -> Array:
    """Rotates ``x [..., L, H, K]`` at integer ``positions [..., L]`` by RoPE.

    Pair ``t`` of the first ``d = 2 * len(inv_freq)`` features turns by
    ``positions * inv_freq[t]``; features ``d..K`` pass through unchanged (partial rotary).
    The rotation is computed in float32 and returned in ``x.dtype``.

    Args:
      x: queries or keys ``[..., L, H, K]``.
      positions: integer positions broadcastable to ``[..., L]``.
      inv_freq: ``[d/2]`` frequencies, ``d <= K``; from :func:`rope_inv_freq`.
      layout: "half" (pairs ``(t, t + d/2)``, GPT-NeoX / LLaMA) or "interleaved" (pairs
        ``(2t, 2t + 1)``, GPT-J / RoFormer).
      scale: multiplies the rotated features: a float (YaRN / LongRoPE attention scale, as
        Hugging Face multiplies cos and sin) or an array broadcastable to ``[..., L, d/2]``
        (xPos, per position and pair). Pass-through features are not scaled.

    Returns:
      Rotated ``x``, same shape and dtype.

    Raises:
      ValueError: for an unknown layout, more rotated features than ``K``, or positions
        that do not match ``x``.

    References:
      Su et al., "RoFormer", arXiv 2104.09864, 2021, Eq. (34); Black et al., "GPT-NeoX-20B",
      2022 (half layout and partial rotary); Wang and Komatsuzaki, GPT-J-6B, 2021
      (interleaved layout).
    """
    _check_layout(layout)
    if x.ndim < 3:
        raise ValueError(f"apply_rope expects x [..., L, H, K], got shape {x.shape}.")
    pairs = inv_freq.shape[-1]
    rotated_dim = 2 * pairs
    if rotated_dim > x.shape[-1]:
        raise ValueError(
            f"inv_freq has {pairs} pairs ({rotated_dim} rotated features) but x has only "
            f"{x.shape[-1]} features per head."
        )
    positions = jnp.asarray(positions)
    try:
        positions = jnp.broadcast_to(positions, x.shape[:-2])
    except ValueError as error:
        raise ValueError(
            f"positions of shape {positions.shape} do not match x [..., L, H, K] = {x.shape}; "
            f"expected {x.shape[:-2]}."
        ) from error
    cos, sin = rope_cos_sin(positions, inv_freq)  # [..., L, P]
    scale = jnp.asarray(scale, jnp.float32)
    if scale.ndim:
        scale = jnp.broadcast_to(scale, cos.shape)
    cos, sin = cos * scale, sin * scale
    # A head axis: [..., L, 1, P].
    return rotate_pairs(x, cos[..., None, :], sin[..., None, :], layout=layout)


def rotate_pairs(x: Array, cos: Array, sin: Array, *, layout: str = "half") -> Array:
    """Turns each feature pair ``(a, b)`` of ``x [..., L, H, K]`` to
    ``(a cos - b sin, b cos + a sin)``: RoPE's rotation, given its factors.

    Args:
      x: queries or keys ``[..., L, H, K]``.
      cos: float32 ``[..., L, H or 1, P]``, one factor per pair (``P <= K / 2``); plain
        RoPE's are ``cos(p theta_t)``, FoPE's Fourier series.
      sin: the same shape as ``cos``.
      layout: "half" (pairs ``(t, t + P)``) or "interleaved" (pairs ``(2t, 2t + 1)``);
        features ``2P..K`` pass through unchanged.

    Returns:
      ``x`` with its first ``2P`` features rotated (in float32), same shape and dtype.
    """
    _check_layout(layout)
    pairs = cos.shape[-1]
    rotated_dim = 2 * pairs
    rotated = x[..., :rotated_dim].astype(jnp.float32)
    # x * cos + swap(x) * sin, with swap(a, b) = (-b, a) on every pair and each factor
    # repeated over its pair's two features. swap is a product with a fixed matrix of
    # 0 and +-1 (exact at HIGHEST precision): its gradient is another such product,
    # where the slices and concatenations of the pairs made a backward pass five times
    # the forward on CPU (L 256, batch 16: 8.0 ms fwd + bwd per layer against 3.4).
    if layout == "half":
        cos, sin = (jnp.concatenate([f, f], axis=-1) for f in (cos, sin))
    else:
        cos, sin = (jnp.repeat(f, 2, axis=-1) for f in (cos, sin))
    swapped = jnp.matmul(rotated, _pair_swap(pairs, layout), precision=jax.lax.Precision.HIGHEST)
    rotated = rotated * cos + swapped * sin
    return jnp.concatenate([rotated.astype(x.dtype), x[..., rotated_dim:]], axis=-1)


def _pair_swap(pairs: int, layout: str) -> np.ndarray:
    """float32 ``[2P, 2P]`` ``S`` with ``(x S)`` mapping each pair ``(a, b)`` of ``x`` to
    ``(-b, a)``, the pairs of ``layout``."""
    first = np.arange(pairs) if layout == "half" else 2 * np.arange(pairs)
    second = first + (pairs if layout == "half" else 1)
    swap = np.zeros((2 * pairs, 2 * pairs), np.float32)
    swap[second, first] = -1.0  # output a's slot takes -b
    swap[first, second] = 1.0  # output b's slot takes a
    return swap


def xpos_zeta(head_dim: int, *, gamma: float = XPOS_GAMMA) -> np.ndarray:
    """xPos per-pair scale bases ``zeta_t = (2t/d + gamma) / (1 + gamma)``, float64 ``[d/2]``.

    With ``gamma = 0.4``: ``zeta_0 = 0.2857`` (the fastest pair decays fastest) rising to
    ``(2 - 2/d + 0.4) / 1.4`` just below 1.

    References:
      Sun, Dong, Patra, Ma, Huang, Benhaim, Chaudhary, Song, Wei, "A Length-Extrapolatable
      Transformer", ACL 2023, arXiv 2212.10554, Section 3.2.
    """
    _check_rotary_dim(head_dim)
    return (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim + gamma) / (1 + gamma)


def xpos_scales(
    q_positions: Array,
    k_positions: Array,
    zeta: np.ndarray,
    *,
    scale_base: float = XPOS_SCALE_BASE,
    dtype: jnp.dtype = jnp.float32,
) -> tuple[Array, Array]:
    """xPos amplitudes: queries ``zeta^(n / s)``, keys ``zeta^(-m / s)``, float32.

    Their product in ``q . k`` is ``zeta_t^((n - m) / s)``: for a causal query (``n >= m``)
    an exponential decay with distance, slowest for the low frequencies. The factors are
    taken from position 0, not re-centred per call as the reference code does: a key/value
    cache filled by earlier calls then stays consistent with later queries. The price is a
    range limit past which a scaled key (of magnitude up to 256) would leave the range of
    the ``dtype`` it is stored in: position 33,852 for s = 512 in float32 (33,851 in bfloat16),
    2,124 in float16. It is reported as an error.

    Args:
      q_positions: integer ``[..., L]``.
      k_positions: integer ``[..., S]``.
      zeta: ``[d/2]`` from :func:`xpos_zeta`.
      scale_base: ``s``, 512 in the paper.
      dtype: the dtype the scaled queries and keys are stored in; it sets the range limit.

    Returns:
      ``(q_scale [..., L, d/2], k_scale [..., S, d/2])``, to pass as ``scale`` to
      :func:`apply_rope`.

    Raises:
      ValueError: if a position is beyond the range limit (at trace time for concrete
        positions, when run otherwise).

    References:
      Sun et al., "A Length-Extrapolatable Transformer", ACL 2023, arXiv 2212.10554,
      Eq. (10); torchscale ``xpos_relative_position.py``.
    """
    if not (math.isfinite(scale_base) and scale_base > 0):
        raise ValueError(f"xPos scale_base must be a finite positive number, got {scale_base!r}.")
    q_positions = jnp.asarray(q_positions).astype(jnp.int32)
    k_positions = jnp.asarray(k_positions).astype(jnp.int32)
    log_zeta = np.log(np.asarray(zeta, np.float64))
    # Beyond this position, zeta^(-m / s) exceeds the dtype's largest value / the headroom.
    dtype = jnp.dtype(dtype)
    max_log_scale = np.log(float(jnp.finfo(dtype).max) / _XPOS_VALUE_HEADROOM)
    limit = int(max_log_scale * scale_base / np.max(np.abs(log_zeta)))
    # No per-call centring: keys cached by earlier calls and the queries of later calls
    # must carry factors of the same origin, so the origin is position 0.
    q_offsets, k_offsets = q_positions, k_positions
    _check_xpos_offsets(q_offsets, k_offsets, limit, scale_base, dtype)
    per_pair = jnp.asarray(log_zeta / scale_base, jnp.float32)
    q_scale = jnp.exp(_outer(q_offsets.astype(jnp.float32), per_pair))
    k_scale = jnp.exp(-_outer(k_offsets.astype(jnp.float32), per_pair))
    return q_scale, k_scale


def _check_xpos_offsets(
    q_offsets: Array, k_offsets: Array, limit: int, scale_base: float, dtype: jnp.dtype
) -> None:
    narrow = jnp.finfo(dtype).max < jnp.finfo(jnp.float32).max

    def explain(q_far, k_far):
        return (
            f"xPos position {max(int(q_far), int(k_far))} is too large: "
            f"zeta^(-position/{scale_base:g}) leaves {dtype.name}'s range beyond {limit}. Use "
            "a larger scale_base or shorter sequences (the paper attends blockwise for long "
            "inputs)" + (", or compute in bfloat16 or float32." if narrow else ".")
        )

    if q_offsets.size == 0 or k_offsets.size == 0:
        return
    check_values(
        lambda q_far, k_far: (q_far > limit) | (k_far > limit),
        explain,
        jnp.max(jnp.abs(q_offsets)),
        jnp.max(jnp.abs(k_offsets)),
    )
