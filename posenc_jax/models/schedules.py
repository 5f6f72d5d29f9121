"""Named layer schedules: the per-layer patterns of production models, as layer specs.

(And one research model's: :func:`stick_breaking`, stick-breaking attention without
position in every layer.)

Each function returns one :class:`~posenc_jax.models.layers.LayerSpec` per layer, for
``TransformerConfig(layers=...)``; its docstring cites the configuration it follows.
:func:`from_hf_config` builds the schedule of a Hugging Face config dict (Llama 4,
Gemma 3, SmolLM3, Cohere2 / Command A), reading its own fields (``layer_types``,
``no_rope_layers``, windows, per-layer-type RoPE bases).

Two models are written with a 1-based habit in their configs: a pattern "every fourth
layer" means the layers whose 0-based index i has ``(i + 1) % 4 == 0`` (3, 7, 11, ...).
"""

from collections.abc import Callable, Mapping
from typing import Any

from posenc_jax._checks import check_positive_int
from posenc_jax.attention.ops import Window
from posenc_jax.attention.temperature import AttentionTemperature
from posenc_jax.encodings.base import PositionalEncoding
from posenc_jax.encodings.hf_config import rope_from_hf_config
from posenc_jax.encodings.registry import get
from posenc_jax.models.layers import LayerSpec

Schedule = tuple[LayerSpec, ...]


def _every(num_layers: int, interval: int) -> list[bool]:
    """Per layer, whether ``(i + 1) % interval == 0`` (the last layer of each group)."""
    check_positive_int(num_layers, "num_layers")
    check_positive_int(interval, "interval")
    return [(i + 1) % interval == 0 for i in range(num_layers)]


def llama4_irope(
    num_layers: int,
    *,
    chunk_size: int = 8192,
    nope_interval: int = 4,
    rope: PositionalEncoding | None = None,
    floor_scale: int = 8192,
    attn_scale: float = 0.1,
) -> Schedule:
    """Llama 4's iRoPE: RoPE with chunked local attention on three layers of four; every
    fourth layer NoPE with full attention and a query temperature.

    Layer i uses RoPE iff ``(i + 1) % nope_interval != 0`` (Hugging Face's default
    ``no_rope_layers``); RoPE layers attend keys in their block of ``chunk_size``
    positions (``attention_chunk_size``), NoPE layers every key, with the logits scaled by
    ``1 + attn_scale * ln(1 + floor((p + 1) / floor_scale))`` (``attn_temperature_tuning``).
    Llama 4's L2 norm of the rotated queries and keys (``use_qk_norm``) is not part of a
    layer spec.

    Args:
      num_layers: the stack's layers.
      chunk_size: keys per local block (8192).
      nope_interval: one NoPE layer in this many (4).
      rope: the RoPE layers' encoding (default RoPE of base 500,000, Llama 4's).
      floor_scale, attn_scale: the NoPE layers' temperature (8192, 0.1).

    References:
      Meta, Llama 4 (Hugging Face ``configuration_llama4.py``: ``no_rope_layer_interval``
      4, ``attention_chunk_size`` 8192, ``floor_scale`` 8192, ``attn_scale`` 0.1,
      ``rope_theta`` 500000; ``modeling_llama4.py``).
    """
    rope = rope or get("rope", base=500000.0)
    temperature = AttentionTemperature("log_floor", floor_scale=floor_scale, scale=attn_scale)
    return tuple(
        LayerSpec(encoding=get("nope"), temperature=temperature)
        if nope
        else LayerSpec(encoding=rope, window=Window(chunk_size, "chunked"))
        for nope in _every(num_layers, nope_interval)
    )


def gemma3(
    num_layers: int,
    *,
    sliding_window: int = 1024,
    pattern: int = 6,
    local_base: float = 10000.0,
    global_base: float = 1_000_000.0,
) -> Schedule:
    """Gemma 3: five sliding-window layers to one global layer, a RoPE base per kind.

    Layer i is global (full attention, RoPE of ``global_base``) iff ``(i + 1) % pattern ==
    0``, so the first layer is local; local layers attend a sliding window of
    ``sliding_window`` keys with RoPE of ``local_base``. Long-context Gemma 3 models also
    scale the global layers' RoPE (linearly by 8): build those from their config with
    :func:`from_hf_config`.

    References:
      Gemma Team, "Gemma 3 Technical Report", arXiv 2503.19786, 2025; Hugging Face
      ``configuration_gemma3.py`` (``sliding_window_pattern`` 6, ``layer_types``,
      ``rope_local_base_freq`` 10000, ``rope_theta`` 1e6; released configs use a window
      of 1024).
    """
    local = LayerSpec(encoding=get("rope", base=local_base), window=Window(sliding_window))
    full = LayerSpec(encoding=get("rope", base=global_base))
    return tuple(full if is_global else local for is_global in _every(num_layers, pattern))


def smollm3(num_layers: int, *, nope_interval: int = 4, base: float = 2_000_000.0) -> Schedule:
    """SmolLM3: NoPE on every fourth layer, RoPE elsewhere, full attention everywhere.

    Layer i is NoPE iff ``(i + 1) % nope_interval == 0``.

    References:
      Hugging Face, SmolLM3 (``configuration_smollm3.py``: ``no_rope_layer_interval`` 4,
      ``no_rope_layers`` 1 = RoPE, ``rope_theta`` 2e6); Yang et al., "Rope to Nope and
      Back Again: A New Hybrid Attention Strategy", arXiv 2501.18795, 2025.
    """
    rope = get("rope", base=base)
    return tuple(
        LayerSpec(encoding=get("nope") if nope else rope)
        for nope in _every(num_layers, nope_interval)
    )


def command_a(
    num_layers: int, *, sliding_window: int = 4096, pattern: int = 4, base: float = 10000.0
) -> Schedule:
    """Cohere Command A (Cohere2): RoPE only on sliding-window layers, NoPE full attention
    on every fourth.

    Layer i slides iff ``(i + 1) % pattern != 0``; sliding layers rotate with interleaved
    RoPE (Cohere rotates feature pairs ``(2t, 2t + 1)``) of ``base``, full layers carry no
    position. A released model's base is in its config: build it with
    :func:`from_hf_config`.

    References:
      Cohere, "Command A: An Enterprise-Ready Large Language Model", arXiv 2504.00698,
      2025; Hugging Face ``modular_cohere2.py`` (``sliding_window_pattern`` 4,
      ``sliding_window`` 4096, RoPE on sliding layers only); Yang et al., arXiv 2501.18795
      (RNoPE-SWA).
    """
    rope = get("rope", base=base, layout="interleaved")
    return tuple(
        LayerSpec(encoding=get("nope"))
        if full
        else LayerSpec(encoding=rope, window=Window(sliding_window))
        for full in _every(num_layers, pattern)
    )


def stick_breaking(num_layers: int) -> Schedule:
    """Stick-breaking attention in every layer and no positional encoding: the models of
    Tan et al., whose stick-breaking replaces softmax + RoPE. The rule's options are the
    model's (``TransformerConfig.stick_breaking``).

    References:
      Tan, Yang, Courville, Panda & Shen, "Scaling Stick-Breaking Attention: An Efficient
      Implementation and In-depth Study", ICLR 2025 (arXiv 2410.17980).
    """
    check_positive_int(num_layers, "num_layers")
    return tuple(
        LayerSpec(encoding=get("nope"), attention="stick_breaking") for _ in range(num_layers)
    )


#: The named schedules, by name (``get_schedule``).
SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "llama4_irope": llama4_irope,
    "gemma3": gemma3,
    "smollm3": smollm3,
    "command_a": command_a,
    "stick_breaking": stick_breaking,
}


def get_schedule(name: str, num_layers: int, **kwargs) -> Schedule:
    """The schedule registered as ``name`` for ``num_layers`` layers; ValueError naming
    the valid ones otherwise."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; valid: {', '.join(sorted(SCHEDULES))}.")
    return SCHEDULES[name](num_layers, **kwargs)


def from_hf_config(config: Mapping[str, Any]) -> Schedule:
    """The layer schedule of a Hugging Face model config dict.

    Supported ``model_type``: "llama4" / "llama4_text", "gemma3" / "gemma3_text",
    "smollm3", "cohere2". A multimodal config's ``text_config`` is read. Per-layer lists
    in the config (``layer_types``, ``no_rope_layers``) take precedence over the patterns
    that generate them, and RoPE comes from the config through
    :func:`~posenc_jax.encodings.rope_from_hf_config` (per layer type where the config
    has one RoPE dict per type).

    Raises:
      ValueError: for another model type (the message lists the supported ones), or a
        config missing what its type needs.
    """
    config = dict(config.to_dict() if hasattr(config, "to_dict") else config)
    if isinstance(config.get("text_config"), Mapping):
        config = {**config["text_config"], "model_type": config["text_config"].get(
            "model_type", config.get("model_type"))}  # fmt: skip
    model_type = config.get("model_type")
    num_layers = config.get("num_hidden_layers")
    if model_type not in _FROM_HF:
        raise ValueError(
            f"no layer schedule for model_type={model_type!r}; supported: "
            f"{', '.join(sorted(_FROM_HF))}."
        )
    if num_layers is None:
        raise ValueError("the config has no 'num_hidden_layers'.")
    return _FROM_HF[model_type](config, int(num_layers))


def _uses_rope(config: Mapping[str, Any], num_layers: int, interval_key: str) -> list[bool]:
    """Per layer, RoPE or not: ``no_rope_layers`` (1 = RoPE, despite the name) when given,
    else every layer but each ``(i + 1) % interval == 0``."""
    flags = config.get("no_rope_layers")
    if flags:
        return [bool(flag) for flag in flags[:num_layers]]
    return [not nope for nope in _every(num_layers, int(config.get(interval_key, 4)))]


def _llama4(config, num_layers) -> Schedule:
    rope = rope_from_hf_config(config)
    chunk = config.get("attention_chunk_size", 8192)
    temperature = None
    if config.get("attn_temperature_tuning", True):
        temperature = AttentionTemperature(
            "log_floor",
            floor_scale=int(config.get("floor_scale", 8192)),
            scale=float(config.get("attn_scale", 0.1)),
        )
    return tuple(
        LayerSpec(encoding=rope, window=None if chunk is None else Window(int(chunk), "chunked"))
        if uses_rope
        else LayerSpec(encoding=get("nope"), temperature=temperature)
        for uses_rope in _uses_rope(config, num_layers, "no_rope_layer_interval")
    )


def _layer_types(config, num_layers, pattern_key, default_pattern) -> list[str]:
    types = config.get("layer_types")
    if types:
        return list(types[:num_layers])
    pattern = int(config.get(pattern_key) or default_pattern)
    return [
        "full_attention" if full else "sliding_attention" for full in _every(num_layers, pattern)
    ]


def _gemma3(config, num_layers) -> Schedule:
    window = int(config.get("sliding_window") or 4096)
    local = rope_from_hf_config(config, layer_type="sliding_attention")
    full = rope_from_hf_config(config, layer_type="full_attention")
    return tuple(
        LayerSpec(encoding=local, window=Window(window))
        if kind == "sliding_attention"
        else LayerSpec(encoding=full)
        for kind in _layer_types(config, num_layers, "sliding_window_pattern", 6)
    )


def _smollm3(config, num_layers) -> Schedule:
    rope = rope_from_hf_config(config)
    return tuple(
        LayerSpec(encoding=rope if uses_rope else get("nope"))
        for uses_rope in _uses_rope(config, num_layers, "no_rope_layer_interval")
    )


def _cohere2(config, num_layers) -> Schedule:
    window = int(config.get("sliding_window") or 4096)
    rope = rope_from_hf_config(config, layout="interleaved")
    return tuple(
        LayerSpec(encoding=rope, window=Window(window))
        if kind == "sliding_attention"
        else LayerSpec(encoding=get("nope"))
        for kind in _layer_types(config, num_layers, "sliding_window_pattern", 4)
    )


_FROM_HF = {
    "llama4": _llama4,
    "llama4_text": _llama4,
    "gemma3": _gemma3,
    "gemma3_text": _gemma3,
    "smollm3": _smollm3,
    "cohere2": _cohere2,
}
