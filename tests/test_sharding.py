"""Training on 8 (fake CPU) devices equals training on one, for seed and batch sharding."""

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent(
    """
    import jax, numpy as np
    import posenc_jax as pj
    from posenc_jax.data import get_task
    from posenc_jax.train import OptimizerConfig, RunSpec, train
    from posenc_jax.train.sharding import make_mesh

    assert jax.device_count() == 8, jax.devices()
    spec = RunSpec(
        model=pj.models.TransformerConfig(vocab_size=10, d_model=16, num_layers=1, num_heads=2,
                                          mlp_dim=32, encoding=pj.encodings.get("sinusoidal")),
        task=get_task("copy"), train_length=4, batch_size=8,
        optimizer=OptimizerConfig(learning_rate=3e-3, total_steps=4, warmup_steps=1),
    )
    mesh = make_mesh()
    for seeds in ([0, 1, 2, 3, 4, 5, 6, 7], [5]):  # seeds sharded, then batch sharded
        sharded, _ = train(spec, seeds, mesh=mesh)
        single, _ = train(spec, seeds, mesh=make_mesh(1))
        leaf = jax.tree.leaves(sharded.params)[0]
        assert len(leaf.sharding.device_set) == 8, leaf.sharding
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6),
                     sharded.params, single.params)
    print("SHARDED_OK")
    """
)


def test_eight_device_training_equals_one_device():
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
    }
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SHARDED_OK" in result.stdout
