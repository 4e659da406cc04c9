"""Data parallelism with JAX's own sharding: a batch split over the local devices, the model
replicated.

``explain`` keeps a sharded batch sharded: give it a ``jax.Array`` whose batch axis is split over
a ``Mesh`` (``shard_batch`` makes one) and the validation runs as jitted reductions on the devices
(no gather to one device), the classifier, targets and option arrays are replicated on the same
mesh, and the one compiled program is partitioned by XLA (GSPMD): each device explains its share
of the images. Results equal the one-device ones within float rounding, the stochastic methods
included: ``jax_threefry_partitionable`` (on by default in jax 0.10) makes every random draw
independent of how the batch is split. A method's ``chunk_size`` then bounds the images each
device sees in one pass: ``explain`` multiplies it by the number of devices of the batch's mesh.

Across processes and hosts (``initialize``, a wrapper of ``jax.distributed.initialize``) the unit
of work is a batch: process ``i`` of ``P`` takes batches ``i, i + P, i + 2P, ...``
(``process_share``), shards each over its own local devices, and writes its own part files;
``barrier`` waits for all of them before one process merges. No array spans processes, so a run
needs no cross-host collectives but the barrier, and its files do not depend on ``P``.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mnistxai.util.errors import InputError

DATA_AXIS = "data"
# the environment a launcher sets for each process (the flags of the scripts win); the first is
# jax.distributed's own
COORDINATOR_ENV, NUM_PROCESSES_ENV, PROCESS_ID_ENV = (
    "JAX_COORDINATOR_ADDRESS",
    "MNISTXAI_NUM_PROCESSES",
    "MNISTXAI_PROCESS_ID",
)


def initialize(
    coordinator: Optional[str] = None,
    num_processes: Optional[int] = None,
    process_id: Optional[int] = None,
) -> tuple[int, int]:
    """Join a run of ``num_processes`` processes (``jax.distributed.initialize``); returns
    (this process's index, the process count).

    Each argument defaults to its environment variable (``JAX_COORDINATOR_ADDRESS``, e.g.
    ``10.0.0.1:8476``, the address of process 0; ``MNISTXAI_NUM_PROCESSES``;
    ``MNISTXAI_PROCESS_ID``). One process (the default) initializes nothing. Call it before any
    other JAX work. CPU processes talk through gloo, JAX's default CPU collectives.
    """
    coordinator = coordinator or os.environ.get(COORDINATOR_ENV)
    num_processes = _int_setting(num_processes, NUM_PROCESSES_ENV, "--num-processes", 1)
    process_id = _int_setting(process_id, PROCESS_ID_ENV, "--process-id", 0)
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise InputError(
            f"--process-id must be in 0..{num_processes - 1} and --num-processes >= 1, "
            f"got {process_id} of {num_processes}"
        )
    if num_processes == 1:
        return 0, 1
    if not coordinator:
        raise InputError(
            f"{num_processes} processes need a coordinator: --coordinator HOST:PORT "
            f"(or {COORDINATOR_ENV}), the address of process 0"
        )
    jax.distributed.initialize(coordinator, num_processes, process_id)
    return jax.process_index(), jax.process_count()


def add_process_flags(parser) -> None:
    """The flags of a run of several processes (``mnistxai.parallel.initialize``)."""
    group = parser.add_argument_group("several processes or hosts (jax.distributed)")
    group.add_argument(
        "--coordinator", default=None, help="HOST:PORT of process 0 ($JAX_COORDINATOR_ADDRESS)"
    )
    group.add_argument(
        "--num-processes", type=int, default=None, help="($MNISTXAI_NUM_PROCESSES; default 1)"
    )
    group.add_argument(
        "--process-id", type=int, default=None, help="0..N-1 ($MNISTXAI_PROCESS_ID; default 0)"
    )


def initialize_from_args(args) -> tuple[int, int]:
    """``initialize`` with the flags of ``add_process_flags``."""
    return initialize(args.coordinator, args.num_processes, args.process_id)


def _int_setting(value, env: str, flag: str, default: int) -> int:
    if value is not None:
        return int(value)
    text = os.environ.get(env)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise InputError(f"{env}={text!r} is not an integer ({flag})") from None


def process_share(count: int) -> range:
    """The indices ``0 <= i < count`` of the work units (batches) this process does."""
    return range(jax.process_index(), count, jax.process_count())


def barrier(name: str) -> None:
    """Wait until every process of the run gets here (nothing to wait for with one)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def describe() -> dict:
    """The devices and processes a program runs on, for its records and start-up line."""
    return {
        "backend": jax.default_backend(),
        "device_kind": jax.local_devices()[0].device_kind,
        "local_devices": jax.local_device_count(),
        "processes": jax.process_count(),
    }


def peak_device_memory_mb() -> Optional[float]:
    """The most memory any local device has held so far (MB), where the backend counts it (GPU,
    TPU); None on CPU."""
    peaks = [(d.memory_stats() or {}).get("peak_bytes_in_use") for d in jax.local_devices()]
    peaks = [p for p in peaks if p is not None]
    return round(max(peaks) / 2**20, 1) if peaks else None


def local_data_mesh() -> Optional[Mesh]:
    """``data_mesh()`` over this process's devices, or None when it has only one."""
    return data_mesh() if jax.local_device_count() > 1 else None


def training_mesh(batch_size: int) -> Optional[Mesh]:
    """The mesh a training step's batch is split over, or None for one device.

    One process: as many local devices as divide ``batch_size`` (split evenly, with no padding
    that would change the loss). Several: every device of every process, ``batch_size`` (the
    global batch) must divide by their count."""
    if jax.process_count() > 1:
        if batch_size % jax.device_count():
            raise InputError(
                f"--batch-size {batch_size} must divide by the {jax.device_count()} devices of "
                f"the {jax.process_count()} processes (each step's batch is split over all)"
            )
        return data_mesh(jax.devices())
    count = max(d for d in range(1, jax.local_device_count() + 1) if batch_size % d == 0)
    return data_mesh(jax.local_devices()[:count]) if count > 1 else None


def data_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """A 1-D ``Mesh`` named ``"data"`` over ``devices`` (default: this process's local ones)."""
    devices = list(jax.local_devices() if devices is None else devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def padded_size(n: int, mesh: Mesh) -> int:
    """``n`` rounded up to a multiple of the mesh's device count."""
    d = mesh.devices.size
    return -(-n // d) * d


def shard_batch(batch, mesh: Optional[Mesh] = None) -> jax.Array:
    """``batch`` (N, ...) as a ``jax.Array`` split along axis 0 over ``mesh`` (default
    ``data_mesh()``). N must divide by the device count: ``pad_batch`` first when it does not."""
    mesh = data_mesh() if mesh is None else mesh
    batch = np.asarray(batch)
    if batch.shape[0] % mesh.devices.size:
        raise ValueError(
            f"a batch of {batch.shape[0]} does not split over {mesh.devices.size} devices: "
            f"pad it to {padded_size(batch.shape[0], mesh)} (mnistxai.parallel.pad_batch)"
        )
    return jax.device_put(batch, NamedSharding(mesh, PartitionSpec(DATA_AXIS)))


def pad_batch(batch, size: int):
    """Pad axis 0 to ``size`` by repeating the last row (padded rows are explained and dropped):
    a ``jax.Array`` (random keys too) stays one, anything else becomes a NumPy array."""
    if isinstance(batch, jax.Array):
        import jax.numpy as xp
    else:
        xp, batch = np, np.asarray(batch)
    if len(batch) == size:
        return batch
    return xp.concatenate([batch, xp.repeat(batch[-1:], size - len(batch), axis=0)])


def batch_mesh(x) -> Optional[Mesh]:
    """The mesh ``x`` is split over along axis 0, or None for an array on one device (or not a
    ``jax.Array``)."""
    if not isinstance(x, jax.Array):
        return None
    sharding = x.sharding
    if not isinstance(sharding, NamedSharding) or len(sharding.device_set) < 2:
        return None
    return sharding.mesh


def replicate(tree, mesh: Mesh):
    """Every array leaf of ``tree`` copied to each device of ``mesh``. A mesh that spans
    processes needs the same ``tree`` in each (e.g. made from the same seed)."""
    return _put(tree, NamedSharding(mesh, PartitionSpec()))


def split_like(tree, mesh: Mesh):
    """Every array leaf of ``tree`` split along axis 0 over ``mesh``. Over a mesh that spans
    processes each process passes the whole (global) arrays and puts only its devices' rows."""
    return _put(tree, NamedSharding(mesh, PartitionSpec(DATA_AXIS)))


def _put(tree, sharding: NamedSharding):
    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)

    def put(leaf):  # device_put cannot place a device array on other processes' devices
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(
                put(jax.random.key_data(leaf)), impl=jax.random.key_impl(leaf)
            )
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)


def local_copy(tree):
    """A tree replicated over a mesh that spans processes, as this process's copy on one of its
    devices (for work each process does alone: evaluation, figures); other trees as they are."""

    def local(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return leaf.addressable_data(0)
        return leaf

    return jax.tree.map(local, tree)
