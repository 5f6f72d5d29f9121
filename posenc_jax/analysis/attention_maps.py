"""Attention weights of every multi-head attention layer of a Transformer.

The attention modules return only their outputs, so the weights are recomputed: the model
runs once under :func:`flax.linen.intercept_methods`, which records for each
:class:`~posenc_jax.attention.MultiHeadAttention` the queries and keys as they reach the dot
product (after the encoding's ``rotate`` hook), the encoding's bias and contextual terms,
its positions and masks; the weights then follow from the function the dense attention
backend forms them with (:func:`posenc_jax.attention.dense.dense_weights`), with the
encoding's decay (as the separable bias ``c_i - c_j``), the layer's sink logits and its
stick-breaking rule. A test checks that these weights times the layer's values reproduce
the layer's own attention output.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from posenc_jax._checks import as_batched_positions
from posenc_jax.attention.dense import dense_weights
from posenc_jax.attention.multi_head import MultiHeadAttention
from posenc_jax.attention.ops import as_window, temperature_factor
from posenc_jax.encodings.base import PositionalEncoding
from posenc_jax.functional.decay import cumulative_log_decay
from posenc_jax.models.transformer import Transformer, TransformerConfig
from posenc_jax.typing import Array


def _layer_path(module: nn.Module) -> str:
    return "/".join(module.path)


class _Recorder:
    """Collects, per attention layer, what its dot product is computed from.

    The encoding's hooks are attributed to the attention layer running them, not to the
    encoding's parent: an encoding shared across layers (``share_encoding_across_layers``)
    belongs to the stack, yet each layer calls it."""

    def __init__(self):
        self.layers: dict[str, dict[str, Any]] = {}
        self._running: str | None = None  # the path of the attention layer being run

    def __call__(self, next_fun, args, kwargs, context):
        module, method = context.module, context.method_name
        if isinstance(module, MultiHeadAttention) and method == "__call__":
            path, outer = _layer_path(module), self._running
            self._running = path
            try:
                out = next_fun(*args, **kwargs)
            finally:
                self._running = outer
            self.layers.setdefault(path, {}).update(
                module=module,
                x=args[0],
                context=args[1] if len(args) > 1 else kwargs.get("context"),
                call_kwargs=dict(kwargs),
            )
            if module.attention_sink:
                self.layers[path]["sink_logits"] = module.get_variable("params", "sink_logits")
            return out
        out = next_fun(*args, **kwargs)
        if self._running is None:
            return out
        record = self.layers.setdefault(self._running, {})
        own_projection = isinstance(module, nn.DenseGeneral) and isinstance(
            module.parent, MultiHeadAttention
        )
        if own_projection and module.name in ("query", "key", "value"):
            record[module.name] = out
        elif own_projection and module.name == "out":
            record["attention_output"] = args[0]
        elif isinstance(module, PositionalEncoding) and method == "rotate":
            record["query"], record["key"] = out
        elif isinstance(module, PositionalEncoding) and method in (
            "bias_fn",
            "contextual",
            "decay",
        ):
            record[method] = out
        return out


def _weights(record: dict[str, Any]) -> Array:
    """Attention weights ``[B, H, L, S]`` of one recorded layer, as its dense path forms
    them."""
    module: MultiHeadAttention = record["module"]
    q, k = record["query"], record["key"]
    kwargs = record["call_kwargs"]
    batch, q_len, num_heads, head_dim = q.shape
    k_len = k.shape[1]
    self_attention = record["context"] is None
    q_positions = as_batched_positions(kwargs.get("q_positions"), batch, q_len, "q_positions")
    k_positions = kwargs.get("k_positions")
    if k_positions is None and self_attention:
        k_positions = q_positions
    k_positions = as_batched_positions(k_positions, batch, k_len, "k_positions")
    padding_mask = kwargs.get("padding_mask")
    if padding_mask is not None:
        padding_mask = padding_mask.astype(jnp.bool_)
    window = as_window(module.window)
    logit_factor = None
    if module.temperature is not None:
        logit_factor = temperature_factor(
            module.temperature,
            q_positions,
            k_positions,
            causal=module.causal,
            padding_mask=padding_mask,
            window=window,
        )
    separable_bias = None
    if record.get("decay") is not None:  # self-attention over one sequence, no cache
        c = cumulative_log_decay(record["decay"], padding_mask)
        separable_bias = (c, c)
    return dense_weights(
        q,
        k,
        separable_bias=separable_bias,
        sink_logits=record.get("sink_logits"),
        stick_breaking=module.stick_breaking,
        bias_fn=record.get("bias_fn"),
        mask=kwargs.get("mask"),
        causal=module.causal,
        q_positions=q_positions,
        k_positions=k_positions,
        scale=head_dim**-0.5,
        logit_factor=logit_factor,
        padding_mask=padding_mask,
        window=window,
        contextual=record.get("contextual"),
    )


def attention_weights(
    config: TransformerConfig,
    params: Any,
    tokens: Array,
    positions: Array | None = None,
    *,
    padding_mask: Array | None = None,
    source: Array | None = None,
    source_positions: Array | None = None,
    return_records: bool = False,
):
    """The attention weights of every multi-head attention layer of a Transformer.

    Args:
      config: the model's configuration (multi-head or stick-breaking attention).
      params: its parameters (``variables["params"]``).
      tokens: ``[B, L]`` decoder (or encoder-only) tokens.
      positions: ``[B, L]`` or ``[L]``; default ``arange``.
      padding_mask: ``[B, L]``, True on real tokens; None when all are real.
      source: ``[B, S]`` encoder tokens of an encoder-decoder model.
      source_positions: their positions.
      return_records: also return, per layer, the recorded values ``value [B, S, G, K]``
        and ``attention_output [B, L, H, K]`` (the layer's own output before its output
        projection), which tests use to check the weights.

    Returns:
      ``{layer path: float32 weights [B, H, L, S]}``, e.g. ``"encoder/layer_0/self_attention"``,
      ``"decoder/layer_1/cross_attention"``; rows sum to 1 (0 for a fully masked row; less
      than 1 with a sink logit or stick-breaking).
      With ``return_records``, a pair ``(weights, records)``.

    Raises:
      ValueError: if the model uses multi-token attention (its convolutions change the
        weights after the softmax; they are not recomputed here) or decoding mode.

    References:
      Vaswani et al., "Attention Is All You Need", NeurIPS 2017 (Eq. 1 and the attention
      visualizations of its appendix).
    """
    kinds = {config.layer_spec(i).attention or config.attention for i in range(config.num_layers)}
    if "multi_token" in kinds:
        raise ValueError(
            "attention_weights supports attention='multi_head' and 'stick_breaking', got "
            "'multi_token': multi-token attention convolves the weights, which this analysis "
            "does not redo."
        )
    if getattr(config, "decode", False):
        raise ValueError(
            "attention_weights runs the whole sequence at once; pass a config with "
            "decode=False (the key/value cache of decoding is not needed here)."
        )
    recorder = _Recorder()
    with nn.intercept_methods(recorder):
        Transformer(config).apply(
            {"params": params},
            tokens,
            positions,
            padding_mask=padding_mask,
            source=source,
            source_positions=source_positions,
        )
    weights = {path: np.asarray(_weights(record)) for path, record in recorder.layers.items()}
    if return_records:
        return weights, recorder.layers
    return weights
