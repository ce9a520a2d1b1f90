"""`import keras_lm` chooses a backend by itself and never needs TensorFlow."""

import os
import subprocess
import sys


def run(code, **env):
    environment = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    environment.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=environment, timeout=300)


def test_picks_jax_first_without_tensorflow():
    code = ("import sys, keras_lm, keras; print(keras.backend.backend()); "
            "print('tensorflow' in sys.modules)")
    out = run(code)
    assert out.returncode == 0, out.stderr
    backend, tf_loaded = out.stdout.split()
    assert backend == "jax"
    assert tf_loaded == "False"


def test_explicit_backend_wins():
    out = run("import keras_lm, keras; print(keras.backend.backend())", KERAS_BACKEND="torch")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "torch"
