"""The package's structure: no import cycle, layers import only layers above them, and one
function decides which attention backend runs (every refusal comes from it).

The imports are read from the source (``ast``), every ``import`` statement counted,
including those inside functions: an import put in a function to dodge a cycle is still
a cycle.
"""

import ast
import os

import jax
import jax.numpy as jnp
import pytest

import posenc_jax as pj
import posenc_jax.attention.core as core
import posenc_jax.models.transformer as transformer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "posenc_jax")

#: DESIGN.md's layers, top first; a module may import its own layer and those before it.
LAYERS = ("functional", "encodings", "attention", "models", "nnx", "data", "train", "analysis")


def _modules() -> dict[str, str]:
    modules = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                modules[module.removesuffix(".__init__")] = path
    return modules


def _imports(path: str, modules: dict[str, str]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in modules else node.module)
    return {name for name in found if name in modules}


def _graph():
    modules = _modules()
    return {name: _imports(path, modules) for name, path in modules.items()}


def test_no_import_cycle_in_the_package():
    graph = _graph()
    state = {}

    def visit(node, trail):
        state[node] = "open"
        for child in sorted(graph[node]):
            if child == node:
                continue
            if state.get(child) == "open":
                cycle = trail[trail.index(child) :] + [child]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if child not in state:
                visit(child, trail + [child])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert len(graph) > 40  # the walk saw the package


def test_the_attention_modules_import_no_module_above_them():
    """ops <- backends (dense, chunked <- fused) <- router <- core <- modules."""
    order = ["ops", "dense", "chunked", "fused", "router", "core", "multi_head", "multi_token"]
    graph = _graph()
    for index, name in enumerate(order):
        imported = {
            m.split(".")[-1] for m in graph[f"posenc_jax.attention.{name}"] if ".attention." in m
        }
        above = imported & set(order[index:]) - {name}
        assert not above, f"attention.{name} imports {sorted(above)}"


def test_each_layer_imports_only_the_layers_above_it():
    graph = _graph()
    for module, imported in graph.items():
        parts = module.split(".")
        if len(parts) < 2 or parts[1] not in LAYERS:
            continue
        allowed = set(LAYERS[: LAYERS.index(parts[1]) + 1])
        for other in imported:
            layer = other.split(".")[1] if other.count(".") else None
            assert (
                layer is None or layer.startswith("_") or layer in allowed or layer == ("typing")
            ), f"{module} imports {other}"


#: Calls no backend or no forced backend can run, each made through a different door:
#: the core function, the multi-head module, the Multi-Token module and the model config.
_REFUSALS = [
    ("core", {"implementation": "flash"}),
    ("core", {"implementation": "chunked", "contextual": True}),
    ("core", {"implementation": "jax", "bias": True}),
    ("core", {"implementation": "cudnn"}),
    ("mha", {"encoding": "shaw", "block_size": 2}),
    ("mha", {"encoding": "cope", "implementation": "jax"}),
    ("mta", {"implementation": "chunked"}),
    ("config", {"attention_implementation": "flash"}),
    ("config", {"attention_block_size": 0}),
]


def _call(door: str, request_: dict) -> None:
    """Makes the call ``request_`` describes through ``door``."""
    kwargs = dict(request_)
    x = jnp.ones((1, 4, 8), jnp.float32)
    if door == "core":
        q = jnp.ones((1, 4, 2, 8), jnp.float32)
        if kwargs.pop("contextual", False):
            kwargs["contextual"] = pj.encodings.Contextual(logits=lambda logits, *a: logits)
        if kwargs.pop("bias", False):
            kwargs["bias_fn"] = lambda q_positions, k_positions: jnp.zeros((2, 4, 4))
        pj.attention.dot_product_attention(q, q, q, **kwargs)
    elif door == "mha":
        encoding = pj.encodings.get(kwargs.pop("encoding"))
        layer = pj.attention.MultiHeadAttention(
            num_heads=2, causal=True, encoding=encoding, **kwargs
        )
        layer.init(jax.random.key(0), x)
    elif door == "mta":
        layer = pj.attention.MultiTokenAttention(num_heads=2, causal=True, **kwargs)
        layer.init(jax.random.key(0), x)
    else:
        pj.models.TransformerConfig(vocab_size=5, **kwargs)


@pytest.mark.parametrize(("door", "request_"), _REFUSALS)
def test_every_refusal_comes_from_the_router(monkeypatch, door, request_):
    """Each refusal is raised inside ``router.choose_implementation`` (or the request check
    it calls): replacing both with stand-ins that refuse with a marker makes every door
    raise the marker instead."""
    marker = "refused by the router"

    def refuse(*args, **kwargs):
        raise ValueError(marker)

    monkeypatch.setattr(core, "choose_implementation", refuse)
    monkeypatch.setattr(transformer, "check_request", refuse)
    with pytest.raises(ValueError, match=marker):
        _call(door, request_)


@pytest.mark.parametrize(("door", "request_"), _REFUSALS)
def test_the_router_refuses_those_calls_itself(door, request_):
    """Without the stand-ins the same calls fail, with the router's own messages."""
    with pytest.raises(ValueError) as error:
        _call(door, request_)
    messages = [
        "valid: auto, dense, chunked",
        "needs_dense",
        "has a position bias",
        "needs an NVIDIA GPU",
        "block_size must be a positive integer",
        "run dense only",
        "has a contextual term",
    ]
    assert any(m in str(error.value) for m in messages), str(error.value)
