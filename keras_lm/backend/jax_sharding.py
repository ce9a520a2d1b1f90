"""Placing arrays on a Keras `DeviceMesh` with layouts Keras' `TensorLayout` cannot state
(one dimension split over several mesh axes)."""

import jax


def distribute(tensor, device_mesh, axes: tuple):
    """`tensor` placed on `device_mesh` with `axes` per dimension: a mesh axis name, a tuple
    of them (that dimension split over their product, the first outermost) or None."""
    spec = jax.sharding.PartitionSpec(*axes)
    return jax.device_put(tensor, jax.sharding.NamedSharding(device_mesh.backend_mesh, spec))
