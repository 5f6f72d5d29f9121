"""Language-model evaluation: windows, position buckets and bits per character.

References are numpy float64: log-softmax cross-entropy, ``bpc = nats / ln 2``, and a
bigram model whose loss over a text does not depend on how the text is cut into windows.
"""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from posenc_jax.train.lm_eval import (
    bucket_edges,
    bucket_metrics,
    evaluate_lm,
    lm_windows,
    position_bucket_sums,
)


def _nll(logits, targets):
    logits = np.asarray(logits, np.float64)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return -np.take_along_axis(log_probs, np.asarray(targets)[..., None], -1)[..., 0]


@pytest.mark.parametrize(("length", "num_buckets"), [(6, 3), (7, 3), (5, 5)])
def test_position_bucket_sums_against_numpy(rng, length, num_buckets):
    logits = rng.standard_normal((3, length, 5)).astype(np.float32)
    targets = rng.integers(0, 5, (3, length))
    weights = (rng.random((3, length)) < 0.7).astype(np.float32)
    got = position_bucket_sums(
        jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights), num_buckets
    )
    nll = _nll(logits, targets)
    edges = [math.ceil(b * length / num_buckets) for b in range(num_buckets + 1)]
    assert bucket_edges(length, num_buckets) == edges
    for b in range(num_buckets):
        part = slice(edges[b], edges[b + 1])
        np.testing.assert_allclose(got["tokens"][b], weights[:, part].sum())
        np.testing.assert_allclose(
            got["loss_sum"][b], (nll[:, part] * weights[:, part]).sum(), rtol=1e-5
        )


def test_uniform_prediction_costs_log2_vocabulary_bits():
    vocabulary, length = 7, 8
    sums = position_bucket_sums(
        jnp.zeros((2, length, vocabulary)),
        jnp.ones((2, length), jnp.int32),
        jnp.ones((2, length)),
        4,
    )
    metrics = bucket_metrics(sums, length)
    assert metrics["tokens"] == 2 * length
    np.testing.assert_allclose(metrics["bpc"], math.log2(vocabulary), rtol=1e-6)
    np.testing.assert_allclose(metrics["loss"], math.log(vocabulary), rtol=1e-6)
    np.testing.assert_allclose(metrics["bucket_bpc"], [math.log2(vocabulary)] * 4, rtol=1e-6)


def test_bucket_metrics_empty_buckets_and_errors():
    sums = {"loss_sum": np.array([0.0, 3.0]), "tokens": np.array([0.0, 2.0])}
    metrics = bucket_metrics(sums, 4)
    assert metrics["bucket_loss"][0] is None and metrics["bucket_bpc"][0] is None
    np.testing.assert_allclose(metrics["bucket_bpc"][1], 1.5 / math.log(2))
    assert metrics["bucket_edges"] == [0, 2, 4]
    with pytest.raises(ValueError, match="no target"):
        bucket_metrics({"loss_sum": np.zeros(2), "tokens": np.zeros(2)}, 4)
    with pytest.raises(ValueError, match="num_buckets"):
        position_bucket_sums(
            jnp.zeros((1, 3, 2)), jnp.zeros((1, 3), jnp.int32), jnp.ones((1, 3)), 4
        )


@pytest.mark.parametrize(
    ("size", "window", "stride"), [(21, 5, None), (23, 5, None), (20, 6, 4), (17, 4, 1)]
)
def test_windows_score_every_character_once(size, window, stride):
    ids = np.arange(100, 100 + size)
    windows = lm_windows(ids, window, stride=stride)
    inputs, targets, weights = windows["inputs"], windows["targets"], windows["weights"]
    assert inputs.shape == targets.shape == weights.shape and inputs.shape[1] == window
    np.testing.assert_array_equal(targets, inputs + 1)  # each target follows its input
    scored = np.zeros(size, int)
    np.add.at(scored, targets[weights > 0] - 100, 1)
    np.testing.assert_array_equal(scored, [0] + [1] * (size - 1))
    # After the first window, a scored character has at least window - stride of context.
    step = window if stride is None else stride
    positions = np.nonzero(weights[1:])[1]
    assert positions.min() >= window - step
    if stride is None and (size - 1) % window == 0:
        assert weights.all() and inputs.shape[0] == (size - 1) // window


def test_window_errors():
    with pytest.raises(ValueError, match="at least 6 characters"):
        lm_windows(np.arange(5), 5)
    with pytest.raises(ValueError, match="stride=6"):
        lm_windows(np.arange(50), 5, stride=6)
    with pytest.raises(ValueError, match="stride=0"):
        lm_windows(np.arange(50), 5, stride=0)


def _bigram_model(table):
    def logits_fn(inputs):
        return jnp.asarray(table, jnp.float32)[inputs]

    return logits_fn


@pytest.mark.parametrize("stride", [None, 3])
def test_evaluate_lm_bigram_model_against_numpy(rng, stride):
    vocabulary, size, window = 6, 41, 8
    ids = rng.integers(1, vocabulary, size)
    table = rng.standard_normal((vocabulary, vocabulary))
    # A bigram model's loss on a character depends only on the one before it, so every
    # windowing of the text must give the mean over all consecutive pairs.
    pair_nll = _nll(table[ids[:-1]], ids[1:])
    got = evaluate_lm(
        _bigram_model(table), ids, window=window, stride=stride, batch_size=3, num_buckets=4
    )
    assert got["tokens"] == size - 1
    np.testing.assert_allclose(got["loss"], pair_nll.mean(), rtol=1e-5)
    np.testing.assert_allclose(got["bpc"], pair_nll.mean() / np.log(2), rtol=1e-5)
    if stride is None:
        # 40 targets in 5 full windows: target j (1-based) sits at position (j - 1) % 8.
        assert got["windows"] == 5
        buckets = ((np.arange(size - 1) % window) * 4) // window
        for b in range(4):
            np.testing.assert_allclose(
                got["bucket_loss"][b], pair_nll[buckets == b].mean(), rtol=1e-5
            )
            assert got["bucket_tokens"][b] == np.sum(buckets == b)
    else:
        # Windows start at 0, 3, .., 30 and then 32 (aligned to the end). The first scores
        # all 8 positions (2 per bucket), the next ten their last 3 (positions 5 | 6, 7),
        # the last its final 2 (positions 6, 7).
        assert got["windows"] == 12
        assert got["bucket_tokens"] == [2, 2, 2 + 10, 2 + 20 + 2]


def test_evaluate_lm_batch_padding_changes_nothing(rng):
    ids = rng.integers(1, 5, 60)
    table = rng.standard_normal((5, 5))
    results = [
        evaluate_lm(_bigram_model(table), ids, window=7, stride=2, batch_size=b, num_buckets=7)
        for b in (1, 4, 64)
    ]
    for other in results[1:]:
        assert other["bucket_tokens"] == results[0]["bucket_tokens"]
        np.testing.assert_allclose(other["loss"], results[0]["loss"], rtol=1e-6)


def _tiny_lm_run(encoding="alibi"):
    import posenc_jax as pj
    from posenc_jax.data.char_lm import CharLM, CharVocabulary
    from posenc_jax.train import OptimizerConfig, RunSpec

    text = "abcabcabdabcacbabcabcab" * 3
    vocabulary = CharVocabulary.from_text(text)
    return RunSpec(
        model=pj.models.TransformerConfig(
            vocab_size=vocabulary.size,
            d_model=16,
            num_layers=1,
            num_heads=2,
            mlp_dim=32,
            encoding=pj.encodings.get(encoding),
        ),
        task=CharLM(corpus=text, vocabulary=vocabulary, held_out_corpus=text[:40]),
        train_length=4,
        batch_size=2,
        optimizer=OptimizerConfig(total_steps=1, warmup_steps=0),
    ), vocabulary.encode(text[5:50])


@pytest.mark.parametrize("stride", [None, 3])
def test_evaluate_lm_runs_is_evaluate_lm_of_each_seed(stride):
    """Every seed of stacked parameters scores as its own model does alone."""
    import jax

    from posenc_jax.train import evaluate_lm_runs, forward
    from posenc_jax.train.loop import compiled_init, run_keys

    spec, ids = _tiny_lm_run()
    params = compiled_init(spec)(run_keys([0, 1])).params
    got = evaluate_lm_runs(
        spec,
        params,
        ids,
        key=jax.random.key(0),
        window=8,
        stride=stride,
        batch_size=3,
        num_buckets=4,
    )
    assert len(got) == 2 and got[0]["bpc"] != got[1]["bpc"]
    for seed_index, result in enumerate(got):
        seed_params = jax.tree.map(lambda x, i=seed_index: x[i], params)
        alone = evaluate_lm(
            lambda inputs, p=seed_params: forward(
                spec.model, p, {"inputs": inputs}, {"positions": jnp.arange(inputs.shape[1])}
            ),
            ids,
            window=8,
            stride=stride,
            batch_size=3,
            num_buckets=4,
        )
        assert result["bucket_tokens"] == alone["bucket_tokens"]
        assert result["windows"] == alone["windows"] and result["tokens"] == len(ids) - 1
        np.testing.assert_allclose(result["bpc"], alone["bpc"], rtol=1e-5)
        np.testing.assert_allclose(result["bucket_bpc"], alone["bucket_bpc"], rtol=1e-5)


def test_non_finite_loss_is_an_error_naming_the_seed():
    import jax

    from posenc_jax.train import evaluate_lm_runs
    from posenc_jax.train.loop import compiled_init, run_keys

    spec, ids = _tiny_lm_run()
    params = compiled_init(spec)(run_keys([0, 1])).params
    broken = jax.tree.map(lambda x: x.at[1].set(jnp.nan), params)  # seed index 1 only
    with pytest.raises(FloatingPointError, match=r"window 8 gave a loss of nan.*seed index 1"):
        evaluate_lm_runs(
            spec, broken, ids, key=jax.random.key(0), window=8, batch_size=4, num_buckets=2
        )
    with pytest.raises(FloatingPointError, match="not finite"):
        bucket_metrics({"loss_sum": np.array([np.inf, 1.0]), "tokens": np.array([1.0, 1.0])}, 4)
