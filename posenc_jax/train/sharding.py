"""Data parallelism with ``jax.jit`` and ``NamedSharding`` over a ``jax.make_mesh`` mesh.

The same training code runs on 1 CPU, 1 GPU or the 8 cores of a TPU (the successor of
``pmap``): when the seeds divide evenly over the devices, each device trains its own seeds
(no communication at all); otherwise every seed's batch is split over the devices and the
gradients are reduced by XLA.
"""

import dataclasses

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh named "data" over the first ``num_devices`` devices (default: all)."""
    available = jax.device_count()
    num_devices = available if num_devices is None else num_devices
    if not 1 <= num_devices <= available:
        raise ValueError(f"num_devices={num_devices}, but {available} device(s) are available.")
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
    """

    state: NamedSharding
    batch: NamedSharding | None


def placement(mesh: Mesh, *, num_seeds: int, batch_size: int) -> Placement:
    """Shards seeds when they divide over the devices, else the batch.

    Raises:
      ValueError: if neither the seeds nor the batch divide over the devices.
    """
    devices = mesh.shape[DATA_AXIS]
    if num_seeds % devices == 0:
        return Placement(NamedSharding(mesh, PartitionSpec(DATA_AXIS)), None)
    if batch_size % devices == 0:
        return Placement(
            NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec(DATA_AXIS))
        )
    raise ValueError(
        f"cannot split {num_seeds} seed(s) or a batch of {batch_size} over {devices} devices: "
        "make the number of seeds or the batch size a multiple of the device count."
    )


def initialize_distributed() -> None:
    """Joins a multi-host job (TPU pods, multi-node GPU) when JAX finds one; no-op otherwise."""
    try:
        jax.distributed.initialize()
    except (RuntimeError, ValueError) as error:
        if "already" not in str(error).lower() and jax.process_count() > 1:
            raise
