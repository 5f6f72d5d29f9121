"""Pure ``jax.numpy`` math of every encoding: no Flax, usable from any JAX code."""

from posenc_jax.functional.absolute import integer_positions, normalized_positions
from posenc_jax.functional.alibi import alibi_bias, alibi_slopes
from posenc_jax.functional.cope import cope_logits, cope_positions
from posenc_jax.functional.decay import (
    cable_log_decay,
    cumulative_log_decay,
    decay_time_bias,
    log_forget_gate,
)
from posenc_jax.functional.distance import absolute_distance, relative_positions
from posenc_jax.functional.fire import fire_mlp, fire_normalized_distance
from posenc_jax.functional.fope import (
    apply_fope,
    fope_coefficients,
    fope_inv_freq,
    fope_num_series,
)
from posenc_jax.functional.kerple import kerple_log_bias, kerple_power_bias
from posenc_jax.functional.pope import apply_pope, clamp_phase_bias, pope_inv_freq
from posenc_jax.functional.random_positions import random_subset_positions
from posenc_jax.functional.rope import (
    FixedPointTurns,
    apply_rope,
    p_rope_inv_freq,
    rope_angles,
    rope_cos_sin,
    rope_inv_freq,
    rope_turns_at_length,
    rotate_pairs,
    xpos_scales,
    xpos_zeta,
)
from posenc_jax.functional.rope_scaling import (
    DynamicNTKScaling,
    LinearScaling,
    Llama3Scaling,
    LongRoPEScaling,
    NTKScaling,
    RopeScaling,
    YaRNScaling,
    rope_scaling_from_hf,
    rope_theta_from_hf,
    yarn_correction_range,
    yarn_mscale,
)
from posenc_jax.functional.sandwich import sandwich_bias
from posenc_jax.functional.shaw import shaw_key_logits, shaw_relative_index, shaw_value_outputs
from posenc_jax.functional.sinusoidal import sinusoidal, sinusoidal_inv_freq
from posenc_jax.functional.t5 import t5_relative_bucket
from posenc_jax.functional.task_positions import abacus_positions, coupled_positions
from posenc_jax.functional.transformer_xl import transformer_xl_logits

__all__ = [
    "abacus_positions",
    "coupled_positions",
    "absolute_distance",
    "alibi_bias",
    "alibi_slopes",
    "cope_logits",
    "cope_positions",
    "cable_log_decay",
    "cumulative_log_decay",
    "decay_time_bias",
    "log_forget_gate",
    "fire_mlp",
    "fire_normalized_distance",
    "integer_positions",
    "kerple_log_bias",
    "kerple_power_bias",
    "normalized_positions",
    "relative_positions",
    "apply_fope",
    "apply_pope",
    "apply_rope",
    "clamp_phase_bias",
    "pope_inv_freq",
    "fope_coefficients",
    "fope_inv_freq",
    "fope_num_series",
    "rotate_pairs",
    "p_rope_inv_freq",
    "rope_angles",
    "rope_cos_sin",
    "rope_inv_freq",
    "rope_turns_at_length",
    "FixedPointTurns",
    "xpos_scales",
    "xpos_zeta",
    "DynamicNTKScaling",
    "LinearScaling",
    "Llama3Scaling",
    "LongRoPEScaling",
    "NTKScaling",
    "RopeScaling",
    "YaRNScaling",
    "rope_scaling_from_hf",
    "rope_theta_from_hf",
    "yarn_correction_range",
    "yarn_mscale",
    "random_subset_positions",
    "sandwich_bias",
    "shaw_key_logits",
    "shaw_relative_index",
    "shaw_value_outputs",
    "sinusoidal",
    "sinusoidal_inv_freq",
    "t5_relative_bucket",
    "transformer_xl_logits",
]
