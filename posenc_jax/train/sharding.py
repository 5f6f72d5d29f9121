"""Data parallelism with ``jax.jit`` and ``NamedSharding`` over a ``jax.make_mesh`` mesh.

The same training code runs on 1 CPU, 1 GPU, the 8 cores of a TPU or every device of a
multi-host job (the successor of ``pmap``): when the seeds divide evenly over the
devices, each device trains its own seeds; otherwise every seed's batch is split over the
devices and the gradients are reduced by XLA. In a job of several processes an array may
live partly on other hosts; :func:`to_host` is the one way the package reads one.
"""

import dataclasses

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh named "data" over the first ``num_devices`` devices (default: all).

    In a job of several processes the mesh spans every device of every process (a mesh
    leaving out some would leave their processes without work in the collectives).
    """
    available = jax.device_count()
    num_devices = available if num_devices is None else num_devices
    if not 1 <= num_devices <= available:
        raise ValueError(f"num_devices={num_devices}, but {available} device(s) are available.")
    if jax.process_count() > 1 and num_devices != available:
        raise ValueError(
            f"num_devices={num_devices}, but a job of {jax.process_count()} processes trains "
            f"on all its {available} devices; leave num_devices out."
        )
    return jax.make_mesh(
        (num_devices,),
        (DATA_AXIS,),
        axis_types=(jax.sharding.AxisType.Auto,),
        devices=jax.devices()[:num_devices],
    )


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a vmapped run lives: the sharding of its stacked state and of each batch.

    Attributes:
      state: sharding of every stacked leaf (leading axis = seed) and of the run keys.
      batch: sharding constraint of one seed's batch inside the step, or None.
      replicated: a copy on every device: a step's metrics, which every process reads.
    """

    state: NamedSharding
    batch: NamedSharding | None
    replicated: NamedSharding


def placement(mesh: Mesh, *, num_seeds: int, batch_size: int) -> Placement:
    """Shards seeds when they divide over the devices, else the batch.

    Raises:
      ValueError: if neither the seeds nor the batch divide over the devices.
    """
    devices = mesh.shape[DATA_AXIS]
    replicated = NamedSharding(mesh, PartitionSpec())
    if num_seeds % devices == 0:
        return Placement(NamedSharding(mesh, PartitionSpec(DATA_AXIS)), None, replicated)
    if batch_size % devices == 0:
        return Placement(replicated, NamedSharding(mesh, PartitionSpec(DATA_AXIS)), replicated)
    raise ValueError(
        f"cannot split {num_seeds} seed(s) or a batch of {batch_size} over {devices} devices: "
        "make the number of seeds or the batch size a multiple of the device count."
    )


def to_host(tree):
    """NumPy copies of every leaf, whole, on every process.

    A leaf split over the devices of several processes is gathered from all of them: a
    collective, so every process of the job must call this at the same point with the same
    tree. Other leaves (on this process's devices, or replicated) are copied locally.
    """

    def fetch(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            if leaf.is_fully_replicated:
                return np.asarray(leaf.addressable_data(0))
            return multihost_utils.process_allgather(leaf, tiled=True)
        return np.asarray(leaf)

    return jax.tree.map(fetch, tree)
