#!/usr/bin/env bash
# The project's test command: lint, then the whole suite on JAX (the primary backend), all but
# the `slow` tests on torch, and the `tensorflow`-marked subset on TensorFlow when installed.
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check .
KERAS_BACKEND=jax python -m pytest -q -p no:cacheprovider --durations=10 tests
KERAS_BACKEND=torch python -m pytest -q -p no:cacheprovider --durations=10 -m "not slow" tests
if python -c "import tensorflow" >/dev/null 2>&1; then
  KERAS_BACKEND=tensorflow python -m pytest -q -p no:cacheprovider --durations=10 \
    -m "tensorflow and not slow" tests
fi
