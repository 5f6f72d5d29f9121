"""The README's commands and its Python example stay true."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme():
    with open(os.path.join(ROOT, "README.md")) as f:
        return f.read()


def test_the_first_two_commands_are_make_study_and_make_test():
    first_block = re.search(r"```bash\n(.*?)```", _readme(), re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.strip()]
    assert commands[:2] == ["make study", "make test"]


def test_python_example_runs():
    example = re.search(r"```python\n(.*?)```", _readme(), re.S).group(1)
    namespace = {}
    exec(compile(example, "README.md", "exec"), namespace)  # noqa: S102
    assert namespace["logits"].shape == (2, 16, 32)
    # NNX first, then linen, with the same encoding.
    assert namespace["nnx_logits"].shape == (2, 16, 32)
    assert example.index("pj.nnx.MultiHeadAttention") < example.index(
        "pj.attention.MultiHeadAttention"
    )


def test_layers_example_runs():
    """The second example: windows, a Hugging Face schedule, padding."""
    example = re.findall(r"```python\n(.*?)```", _readme(), re.S)[1]
    namespace = {}
    exec(compile(example, "README.md", "exec"), namespace)  # noqa: S102
    assert namespace["layers_logits"].shape == (2, 16, 256)
    kinds = [spec.window is not None for spec in namespace["config"].layers]
    assert kinds == [True] * 5 + [False]
