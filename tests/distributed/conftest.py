"""Distribution tests need 8 devices: run them in their own process with
`XLA_FLAGS=--xla_force_host_platform_device_count=8 KERAS_BACKEND=jax` (scripts/test.sh does);
in any other process they are skipped."""

import os
import sys

import keras
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))  # tests/families.py


def pytest_collection_modifyitems(config, items):
    reason = None
    if keras.backend.backend() != "jax":
        reason = "Keras distribution runs on JAX"
    else:
        import jax

        if jax.device_count() < 8:
            reason = ("needs 8 devices: XLA_FLAGS=--xla_force_host_platform_device_count=8 "
                      "in a process of its own")
    if reason:
        for item in items:
            if "distributed" in str(item.fspath):
                item.add_marker(pytest.mark.skip(reason=reason))
