"""Writes the small Sphinx object inventories (``*.inv``) that the docs site links through.

The build must work offline (no network on CI), so instead of downloading each project's
``objects.inv`` at build time we keep a minimal one per project in this folder: the names that
equijax's docstrings and signatures actually reference, mapped to the URL patterns of each
project's published documentation (autosummary pages for JAX and NumPy, the API-reference pages of
Flax, Optax and Orbax, the Python library reference). The files use the standard Sphinx inventory
format (version 2, zlib-compressed), so ``sphobjinv convert plain jax.inv -`` reads them, and a
real downloaded ``objects.inv`` can replace any of them.

Regenerate after adding a name: ``python docs/inventories/make_inventories.py``. The base URLs
are in ``docs/hooks/site.py`` (``INVENTORIES``); the URIs here are relative to them.
"""

from __future__ import annotations

import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Objects: (name, role, uri). A ``$`` in the uri stands for the name; it is expanded when the file
# is written (Sphinx itself only expands a trailing ``$``).
_JAX_AUTOSUMMARY = [
    "jax.jit", "jax.vmap", "jax.grad", "jax.value_and_grad", "jax.devices", "jax.device_count",
    "jax.local_devices", "jax.device_put", "jax.process_count", "jax.process_index",
    "jax.make_mesh", "jax.make_array_from_process_local_data", "jax.checkpoint", "jax.eval_shape",
    "jax.distributed.initialize", "jax.lax.scan", "jax.lax.map", "jax.lax.cond", "jax.lax.select",
    "jax.lax.stop_gradient", "jax.lax.top_k", "jax.nn.log_softmax", "jax.nn.softmax",
    "jax.nn.logsumexp", "jax.random.key", "jax.random.PRNGKey", "jax.random.split",
    "jax.random.key_data", "jax.random.wrap_key_data", "jax.random.categorical",
    "jax.numpy.asarray", "jax.numpy.mean", "jax.numpy.where",
    "jax.numpy.rot90", "jax.numpy.flip", "jax.tree_util.tree_map", "jax.tree.map",
    "jax.experimental.multihost_utils.process_allgather", "jax.export.export",
]  # fmt: skip
JAX = (
    [(n, "function", "_autosummary/$.html#$") for n in _JAX_AUTOSUMMARY]
    + [
        ("jax.Array", "class", "_autosummary/jax.Array.html#jax.Array"),
        ("jax.typing.ArrayLike", "data", "jax.typing.html#jax.typing.ArrayLike"),
        ("jax.typing.DTypeLike", "data", "jax.typing.html#jax.typing.DTypeLike"),
        ("jax.sharding.Sharding", "class", "jax.sharding.html#$"),
        ("jax.sharding.NamedSharding", "class", "jax.sharding.html#$"),
        ("jax.sharding.PartitionSpec", "class", "jax.sharding.html#$"),
        ("jax.sharding.Mesh", "class", "jax.sharding.html#$"),
        ("jax.sharding.AxisType", "class", "jax.sharding.html#$"),
    ]
    + [
        (m, "module", f"{m}.html#module-{m}")
        for m in (
            "jax",
            "jax.numpy",
            "jax.lax",
            "jax.nn",
            "jax.random",
            "jax.sharding",
            "jax.distributed",
            "jax.tree_util",
            "jax.typing",
            "jax.experimental.multihost_utils",
        )
    ]
)

_LINEN = "api_reference/flax.linen"
_NNX = "api_reference/flax.nnx"
FLAX = [
    ("flax.linen", "module", f"{_LINEN}/index.html#module-flax.linen"),
    ("flax.linen.Module", "class", f"{_LINEN}/module.html#$"),
    ("flax.linen.Module.apply", "method", f"{_LINEN}/module.html#$"),
    ("flax.linen.Module.init", "method", f"{_LINEN}/module.html#$"),
    ("flax.linen.Dense", "class", f"{_LINEN}/layers.html#$"),
    ("flax.linen.Conv", "class", f"{_LINEN}/layers.html#$"),
    ("flax.linen.BatchNorm", "class", f"{_LINEN}/layers.html#$"),
    ("flax.linen.LayerNorm", "class", f"{_LINEN}/layers.html#$"),
    ("flax.linen.Dropout", "class", f"{_LINEN}/layers.html#$"),
    ("flax.linen.Embed", "class", f"{_LINEN}/layers.html#$"),
    ("flax.linen.scan", "function", f"{_LINEN}/transformations.html#$"),
    ("flax.linen.vmap", "function", f"{_LINEN}/transformations.html#$"),
    ("flax.nnx", "module", f"{_NNX}/index.html#module-flax.nnx"),
    ("flax.nnx.Module", "class", f"{_NNX}/module.html#$"),
    ("flax.nnx.Rngs", "class", f"{_NNX}/rnglib.html#$"),
    ("flax.nnx.Param", "class", f"{_NNX}/variables.html#$"),
    ("flax.nnx.Variable", "class", f"{_NNX}/variables.html#$"),
    ("flax.nnx.BatchStat", "class", f"{_NNX}/variables.html#$"),
    ("flax.nnx.Optimizer", "class", f"{_NNX}/training/optimizer.html#$"),
    ("flax.nnx.jit", "function", f"{_NNX}/transforms.html#$"),
    ("flax.nnx.vmap", "function", f"{_NNX}/transforms.html#$"),
    ("flax.nnx.grad", "function", f"{_NNX}/transforms.html#$"),
    ("flax.nnx.value_and_grad", "function", f"{_NNX}/transforms.html#$"),
    ("flax.nnx.split", "function", f"{_NNX}/graph.html#$"),
    ("flax.nnx.merge", "function", f"{_NNX}/graph.html#$"),
    ("flax.nnx.state", "function", f"{_NNX}/graph.html#$"),
    ("flax.nnx.Linear", "class", f"{_NNX}/nn/linear.html#$"),
    ("flax.nnx.Conv", "class", f"{_NNX}/nn/linear.html#$"),
    ("flax.nnx.BatchNorm", "class", f"{_NNX}/nn/normalization.html#$"),
    ("flax.nnx.Dropout", "class", f"{_NNX}/nn/stochastic.html#$"),
    ("flax.nnx.bridge.ToNNX", "class", f"{_NNX}/bridge.html#$"),
    ("flax.nnx.bridge.ToLinen", "class", f"{_NNX}/bridge.html#$"),
    ("flax.struct.dataclass", "function", "api_reference/flax.struct.html#$"),
    ("flax.serialization.msgpack_restore", "function", "api_reference/flax.serialization.html#$"),
    ("flax.serialization.from_bytes", "function", "api_reference/flax.serialization.html#$"),
    ("flax.core.FrozenDict", "class", "api_reference/flax.core.frozen_dict.html#$"),
]

OPTAX = [
    ("optax", "module", "api/index.html"),
    ("optax.GradientTransformation", "class", "api/transformations.html#$"),
    ("optax.OptState", "data", "api/transformations.html#$"),
    ("optax.Params", "data", "api/transformations.html#$"),
    ("optax.adam", "function", "api/optimizers.html#$"),
    ("optax.adamw", "function", "api/optimizers.html#$"),
    ("optax.sgd", "function", "api/optimizers.html#$"),
    ("optax.chain", "function", "api/combining_optimizers.html#$"),
    ("optax.clip_by_global_norm", "function", "api/transformations.html#$"),
    ("optax.apply_updates", "function", "api/apply_updates.html#$"),
    ("optax.softmax_cross_entropy", "function", "api/losses.html#$"),
    ("optax.softmax_cross_entropy_with_integer_labels", "function", "api/losses.html#$"),
    ("optax.huber_loss", "function", "api/losses.html#$"),
    ("optax.MultiSteps", "class", "api/optimizer_wrappers.html#$"),
]

_CKPT = "api_reference/checkpoint"
ORBAX = [
    ("orbax.checkpoint", "module", f"{_CKPT}.html"),
    ("orbax.checkpoint.CheckpointManager", "class", f"{_CKPT}.checkpoint_manager.html#$"),
    ("orbax.checkpoint.CheckpointManagerOptions", "class", f"{_CKPT}.checkpoint_manager.html#$"),
    ("orbax.checkpoint.args.StandardSave", "class", f"{_CKPT}.args.html#$"),
    ("orbax.checkpoint.args.StandardRestore", "class", f"{_CKPT}.args.html#$"),
    ("orbax.checkpoint.args.Composite", "class", f"{_CKPT}.args.html#$"),
    ("orbax.checkpoint.StandardCheckpointer", "class", f"{_CKPT}.checkpointers.html#$"),
    ("orbax.checkpoint.PyTreeCheckpointer", "class", f"{_CKPT}.checkpointers.html#$"),
]

NUMPY = [
    ("numpy", "module", "reference/index.html#module-numpy"),
    ("numpy.ndarray", "class", "reference/generated/$.html#$"),
    ("numpy.asarray", "function", "reference/generated/$.html#$"),
    ("numpy.float32", "class", "reference/arrays.scalars.html#$"),
    ("numpy.int32", "class", "reference/arrays.scalars.html#$"),
    ("numpy.uint8", "class", "reference/arrays.scalars.html#$"),
    ("numpy.random.Generator", "class", "reference/random/generator.html#$"),
    ("numpy.random.default_rng", "function", "reference/random/generator.html#$"),
    ("numpy.typing.ArrayLike", "data", "reference/typing.html#$"),
]

_EXC = [
    "ValueError", "TypeError", "KeyError", "RuntimeError", "FutureWarning", "DeprecationWarning",
    "UserWarning", "NotImplementedError", "FileNotFoundError", "OSError", "IndexError",
    "AttributeError", "ImportError", "Exception",
]  # fmt: skip
PYTHON = [(n, "exception", "library/exceptions.html#$") for n in _EXC] + [
    ("functools.wraps", "function", "library/functools.html#$"),
    ("functools.partial", "function", "library/functools.html#$"),
    ("warnings.warn", "function", "library/warnings.html#$"),
    ("inspect.signature", "function", "library/inspect.html#$"),
    ("pathlib.Path", "class", "library/pathlib.html#$"),
    ("importlib.resources", "module", "library/importlib.resources.html#module-$"),
    ("os.PathLike", "class", "library/os.html#$"),
    ("logging", "module", "library/logging.html#module-$"),
    ("json", "module", "library/json.html#module-$"),
    ("dataclasses.dataclass", "function", "library/dataclasses.html#$"),
    ("typing.Any", "data", "library/typing.html#$"),
    ("typing.NamedTuple", "class", "library/typing.html#$"),
    ("typing.Literal", "data", "library/typing.html#$"),
    ("typing.Protocol", "class", "library/typing.html#$"),
    ("collections.abc.Callable", "class", "library/collections.abc.html#$"),
    ("collections.abc.Sequence", "class", "library/collections.abc.html#$"),
    ("collections.abc.Mapping", "class", "library/collections.abc.html#$"),
    ("collections.abc.Iterator", "class", "library/collections.abc.html#$"),
    ("collections.abc.Iterable", "class", "library/collections.abc.html#$"),
]

PROJECTS = {
    "python": ("Python", "3", PYTHON),
    "jax": ("JAX", "latest", JAX),
    "flax": ("Flax", "latest", FLAX),
    "optax": ("Optax", "latest", OPTAX),
    "orbax": ("Orbax", "latest", ORBAX),
    "numpy": ("NumPy", "stable", NUMPY),
}


def inventory_bytes(project: str, version: str, objects: list[tuple[str, str, str]]) -> bytes:
    """A Sphinx version-2 ``objects.inv``: a plain header, then zlib-compressed object lines."""
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        f"# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    lines = "".join(
        f"{name} py:{role} 1 {uri.replace('$', name)} -\n"
        for name, role, uri in sorted(set(objects))
    )
    return header.encode() + zlib.compress(lines.encode())


def main() -> None:
    for stem, (project, version, objects) in PROJECTS.items():
        (HERE / f"{stem}.inv").write_bytes(inventory_bytes(project, version, objects))


if __name__ == "__main__":
    main()
