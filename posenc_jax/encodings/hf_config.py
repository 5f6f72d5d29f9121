"""The rotary encoding of a Hugging Face model configuration, built in one call.

A LLaMA-style ``config.json`` states its RoPE in a handful of keys: ``rope_theta``,
``rope_scaling`` (or, in newer files, ``rope_parameters``, which may also hold the base),
``max_position_embeddings``, ``head_dim`` (or ``hidden_size / num_attention_heads``),
``partial_rotary_factor`` and, for Phi-3, a top-level ``original_max_position_embeddings``.
:func:`posenc_jax.functional.rope_scaling_from_hf` turns the scaling dict into a scaling
object; this module maps that object's type to the registered encoding that applies it.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

from posenc_jax.encodings import rotary
from posenc_jax.encodings.registry import get
from posenc_jax.functional import rope_scaling
from posenc_jax.functional.rope import rope_inv_freq

# The one place that says which registered encoding applies which scaling method. Each
# encoding takes the scaling dataclass's fields as hyperparameters of the same names.
_ENCODING_OF_SCALING: dict[type | None, type[rotary.RoPE]] = {
    type(None): rotary.RoPE,
    rope_scaling.LinearScaling: rotary.LinearRoPE,
    rope_scaling.NTKScaling: rotary.NTKRoPE,
    rope_scaling.DynamicNTKScaling: rotary.DynamicNTKRoPE,
    rope_scaling.YaRNScaling: rotary.YaRNRoPE,
    rope_scaling.Llama3Scaling: rotary.Llama3RoPE,
    rope_scaling.LongRoPEScaling: rotary.LongRoPE,
}


def _as_dict(config: Any) -> Mapping[str, Any]:
    if isinstance(config, Mapping):
        return config
    if hasattr(config, "to_dict"):  # a transformers PretrainedConfig
        return config.to_dict()
    raise ValueError(
        f"expected a model configuration dict (the contents of config.json), got {config!r}."
    )


def hf_head_dim(config: Mapping[str, Any]) -> int:
    """The attention head dimension of a Hugging Face config.

    ``head_dim`` when the config states it (Gemma, Qwen3, Mistral-Nemo decouple it from the
    width), else ``hidden_size // num_attention_heads`` as Hugging Face computes it.

    Args:
      config: the model configuration dict.

    Returns:
      The head dimension K.

    Raises:
      ValueError: when neither ``head_dim`` nor both ``hidden_size`` and
        ``num_attention_heads`` are present.
    """
    config = _as_dict(config)
    if config.get("head_dim") is not None:
        return int(config["head_dim"])
    hidden, heads = config.get("hidden_size"), config.get("num_attention_heads")
    if hidden is None or not heads:
        raise ValueError(
            "the config states no 'head_dim' and lacks 'hidden_size' / 'num_attention_heads' "
            f"to derive it from; got keys {sorted(config)}."
        )
    return int(hidden) // int(heads)


def _is_nested(params: Any) -> bool:
    """Whether a RoPE dict holds one dict per layer type."""
    return (
        isinstance(params, Mapping)
        and bool(params)
        and all(isinstance(v, Mapping) for v in params.values())
    )


def _gemma3_flat_as_nested(
    config: Mapping[str, Any], scaling: Mapping[str, Any] | None
) -> dict[str, Mapping[str, Any]]:
    """Gemma 3's flat configs as one RoPE dict per layer type: global layers take
    ``rope_theta`` and ``rope_scaling``, sliding-window layers plain RoPE of base
    ``rope_local_base_freq`` (Hugging Face's ``Gemma3TextModel.rotary_emb_local``)."""
    full = dict(scaling or {"rope_type": "default"})
    if config.get("rope_theta") is not None:
        full.setdefault("rope_theta", config["rope_theta"])
    sliding = {"rope_type": "default", "rope_theta": config["rope_local_base_freq"]}
    return {"full_attention": full, "sliding_attention": sliding}


def _rope_params(config: Mapping[str, Any], layer_type: str | None) -> Mapping[str, Any] | None:
    """The RoPE dict of the config (``rope_parameters`` first), for one layer type if nested."""
    params = config.get("rope_parameters")
    if params is None:
        params = config.get("rope_scaling")
    if config.get("rope_local_base_freq") is not None and not _is_nested(params):
        params = _gemma3_flat_as_nested(config, params)
    if _is_nested(params):
        # Models that mix attention kinds (Gemma 3) give one RoPE dict per layer type.
        if layer_type not in params:
            raise ValueError(
                f"the config has one RoPE dict per layer type ({', '.join(sorted(params))}); "
                f"pass layer_type= one of them, got {layer_type!r}."
            )
        return params[layer_type]
    if layer_type is not None:
        raise ValueError(
            f"layer_type={layer_type!r} was given, but the config has a single RoPE dict, not "
            "one per layer type; leave layer_type=None."
        )
    return params


def rope_from_hf_config(
    config: Mapping[str, Any],
    *,
    layer_type: str | None = None,
    layout: str = "half",
) -> rotary.RoPE:
    """The registered rotary encoding that reproduces a Hugging Face model's RoPE.

    Reads ``rope_theta``, ``rope_scaling`` / ``rope_parameters``, ``max_position_embeddings``,
    ``original_max_position_embeddings`` (top level, Phi-3), ``partial_rotary_factor`` and
    the head dimension, and returns ``RoPE`` or the scaled variant matching the scaling
    type ("linear", "dynamic", "yarn", "llama3", "longrope", ...). Its frequencies are
    ``rope_inv_freq(int(head_dim * partial_rotary_factor), base=rope_theta_from_hf(...),
    scaling=rope_scaling_from_hf(...))``. The configuration is checked against the head
    dimension now, so a wrong one fails here rather than inside a model.

    Use it with the head dimension of the same config (:func:`hf_head_dim`)::

        from posenc_jax.encodings.hf_config import hf_head_dim

        encoding = pj.encodings.rope_from_hf_config(config)
        attention = pj.attention.MultiHeadAttention(
            num_heads=config["num_attention_heads"],
            num_kv_heads=config["num_key_value_heads"],
            head_dim=hf_head_dim(config), causal=True, encoding=encoding)

    Args:
      config: the model configuration dict (``config.json``), or an object with
        ``to_dict()`` such as a ``transformers`` config.
      layer_type: for configs that give one RoPE dict per layer type (Gemma 3's
        "full_attention" / "sliding_attention", nested in ``rope_parameters`` or, in older
        files, a top-level ``rope_local_base_freq`` for the sliding layers), which one to
        build.
      layout: "half" (Hugging Face's ``rotate_half``, the layout of every LLaMA-style model
        there) or "interleaved" (GPT-J-style checkpoints).

    Returns:
      A :class:`~posenc_jax.encodings.rotary.RoPE` (or subclass) instance.

    Raises:
      ValueError: for a missing head dimension, an unknown RoPE type or missing key (from
        :func:`~posenc_jax.functional.rope_scaling_from_hf`), or a rotated dimension or
        per-frequency factor list that does not fit the head dimension.

    References:
      Hugging Face transformers, ``modeling_rope_utils.py`` (``ROPE_INIT_FUNCTIONS``); the
      papers of each scaling method are cited by the encoding classes.
    """
    config = _as_dict(config)
    params = _rope_params(config, layer_type)
    scaling = None
    if params is not None:
        scaling = rope_scaling.rope_scaling_from_hf(
            params,
            max_position_embeddings=config.get("max_position_embeddings"),
            original_max_position_embeddings=config.get("original_max_position_embeddings"),
        )
    base = rope_scaling.rope_theta_from_hf(params, rope_theta=config.get("rope_theta"))
    rotary_fraction = (params or {}).get("partial_rotary_factor")
    if rotary_fraction is None:
        rotary_fraction = config.get("partial_rotary_factor", 1.0)
    rotary_fraction = float(rotary_fraction)
    if not 0.0 < rotary_fraction <= 1.0:
        raise ValueError(
            f"partial_rotary_factor must be in (0, 1] (the rotated fraction of each head), "
            f"got {rotary_fraction!r}."
        )

    head_dim = hf_head_dim(config)
    rotary_dim = int(head_dim * rotary_fraction)
    # Fails now on an odd rotated dimension or a factor list of the wrong length.
    rope_inv_freq(rotary_dim, base=base, scaling=scaling)

    encoding_class = _ENCODING_OF_SCALING.get(type(scaling))
    if encoding_class is None:
        raise ValueError(
            f"no registered encoding applies {type(scaling).__name__}; add it to "
            "_ENCODING_OF_SCALING in posenc_jax/encodings/hf_config.py."
        )
    fields = {}
    if scaling is not None:
        fields = {f.name: getattr(scaling, f.name) for f in dataclasses.fields(scaling)}
    return get(
        encoding_class.registry_name,
        base=base,
        rotary_fraction=rotary_fraction,
        layout=layout,
        **fields,
    )
