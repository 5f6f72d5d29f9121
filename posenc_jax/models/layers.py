"""Layer specs: what one layer of a Transformer stack is, so that layers can differ.

Production models mix layers: RoPE with chunked local attention on three layers of four
and NoPE with full attention on the fourth (Llama 4), five sliding-window layers with
their own RoPE base to one global layer (Gemma 3), NoPE every fourth layer (SmolLM3),
RoPE only on sliding-window layers (Cohere Command A). A :class:`LayerSpec` says, for one
layer, which encoding its attention calls, its window, its attention kind and
temperature; a model is a sequence of them (``TransformerConfig.layers``), built by hand
or by a named schedule (:mod:`posenc_jax.models.schedules`).

What stays model-wide: positions are sampled once per model (the model encoding's
``sample_positions``) and the ``embed`` hook runs once, at the input, with the model's
encoding; a layer spec chooses only what enters inside attention.
"""

import dataclasses

from posenc_jax.attention.multi_token import MTAConfig
from posenc_jax.attention.ops import Window, as_window
from posenc_jax.attention.temperature import AttentionTemperature
from posenc_jax.encodings.base import PositionalEncoding

#: "multi_head" (softmax), "multi_token" (Multi-Token Attention), "stick_breaking"
#: (multi-head attention with stick-breaking weights instead of a softmax).
ATTENTION_KINDS = ("multi_head", "multi_token", "stick_breaking")


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One layer's attention: encoding, window, kind and their options.

    Every field left None takes the model's setting (``TransformerConfig``), so
    ``LayerSpec()`` is the layer the config describes.

    Attributes:
      encoding: the encoding whose ``rotate``, ``bias_fn`` and ``contextual`` hooks this
        layer's self-attention calls (``posenc_jax.encodings.get("nope")`` for a layer
        without position); None: the model's encoding.
      window: a :class:`~posenc_jax.attention.Window` or an int (sliding window of that
        many keys); None: full attention.
      attention: "multi_head", "multi_token" or "stick_breaking"; None: the model's.
      mta: the layer's :class:`~posenc_jax.attention.MTAConfig`; None: the model's.
      temperature: the layer's :class:`~posenc_jax.attention.AttentionTemperature`;
        None: the model's (``attention_temperature``).
      attention_sink: whether the layer's softmax has a learned sink logit per head;
        None: the model's (``attention_sink``).
    """

    encoding: PositionalEncoding | None = None
    window: Window | int | None = None
    attention: str | None = None
    mta: MTAConfig | None = None
    temperature: AttentionTemperature | None = None
    attention_sink: bool | None = None

    def __post_init__(self):
        if self.encoding is not None and not isinstance(self.encoding, PositionalEncoding):
            raise ValueError(
                f"LayerSpec encoding must be a PositionalEncoding or None (the model's), got "
                f"{self.encoding!r}."
            )
        object.__setattr__(self, "window", as_window(self.window))
        if self.attention is not None and self.attention not in ATTENTION_KINDS:
            raise ValueError(
                f"LayerSpec attention={self.attention!r}; valid: {', '.join(ATTENTION_KINDS)} "
                "or None (the model's)."
            )

    def describe(self) -> str:
        """A short label: encoding name, window, kind (e.g. ``rope/sliding 1024``)."""
        name = "model encoding"
        if self.encoding is not None:
            name = getattr(type(self.encoding), "registry_name", type(self.encoding).__name__)
        parts = [name]
        if self.window is not None:
            parts.append(f"{self.window.kind} {self.window.size}")
        if self.attention is not None:
            parts.append(self.attention)
        if self.temperature is not None:
            parts.append(f"temperature {self.temperature.kind}")
        if self.attention_sink:
            parts.append("sink")
        return "/".join(parts)
