#!/usr/bin/env bash
# The project's test command: lint, then the suite on JAX and on torch.
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check .
KERAS_BACKEND=jax python -m pytest -q -p no:cacheprovider --durations=10 tests
KERAS_BACKEND=torch python -m pytest -q -p no:cacheprovider --durations=10 tests
if python -c "import tensorflow" >/dev/null 2>&1; then
  KERAS_BACKEND=tensorflow python -m pytest -q -p no:cacheprovider --durations=10 -m tensorflow tests
fi
