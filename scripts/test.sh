#!/usr/bin/env bash
# The project's test command: lint, then the whole suite on JAX (the primary backend), all but
# the `slow` tests on torch, the `tensorflow`-marked subset on TensorFlow when installed, and
# the distribution tests on 8 virtual CPU devices in a process of their own. Two pytest
# workers per run (pytest-xdist): most of a test's time is single-threaded compiling.
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check .
PYTEST=(python -m pytest -q -p no:cacheprovider --durations=25 -n 2 --dist loadfile)
KERAS_BACKEND=jax "${PYTEST[@]}" --ignore=tests/distributed tests
KERAS_BACKEND=torch "${PYTEST[@]}" --ignore=tests/distributed -m "not slow" tests
if python -c "import tensorflow" >/dev/null 2>&1; then
  KERAS_BACKEND=tensorflow "${PYTEST[@]}" --ignore=tests/distributed -m "tensorflow and not slow" tests
fi
XLA_FLAGS=--xla_force_host_platform_device_count=8 KERAS_BACKEND=jax \
  python -m pytest -q -p no:cacheprovider tests/distributed
