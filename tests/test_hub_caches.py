"""`hf://` and `kaggle://` handles through `huggingface_hub` and `kagglehub` themselves, on
caches filled here and with the libraries' offline switches on (no network is touched), in a
fresh process so the switches are read as users set them."""

import json
import os
import shutil
import subprocess
import sys

import pytest

import keras_lm

pytest.importorskip("huggingface_hub")
pytest.importorskip("kagglehub")

FIXTURES = os.path.join(os.path.dirname(__file__), "data", "keras_hub")
COMMIT = "0123456789abcdef0123456789abcdef01234567"

SCRIPT = r"""
import json, sys
import numpy as np, keras
import keras_lm
from keras_lm.presets.resolve import PresetUnavailableError

expected = np.load(sys.argv[1])
ids, mask = expected["token_ids"], expected["padding_mask"]
out = {}
for handle in ("hf://keras-lm-tests/tiny-gpt2", "kaggle://keras/gpt2/keras/gpt2_tiny/2"):
    lm = keras_lm.models.CausalLM.from_preset(handle)
    logits = keras.ops.convert_to_numpy(lm({"token_ids": ids, "padding_mask": mask}))
    out[handle] = float(np.abs(logits - expected["logits"])[mask].max())
for handle in ("hf://keras-lm-tests/not-cached", "kaggle://keras/gpt2/keras/gpt2_tiny/3"):
    try:
        keras_lm.models.CausalLM.from_preset(handle)
        out[handle] = "loaded"
    except PresetUnavailableError as error:
        out[handle] = str(error)
print("RESULT " + json.dumps(out))
"""


def _fill_hf_cache(root, tmp_path):
    lm = keras_lm.models.CausalLM.from_preset(os.path.join(FIXTURES, "gpt2"))
    lm.export_to_transformers(str(tmp_path / "export"))
    repo = root / "models--keras-lm-tests--tiny-gpt2"
    shutil.copytree(tmp_path / "export", repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)


def _fill_kaggle_cache(root):
    variation = root / "models" / "keras" / "gpt2" / "keras" / "gpt2_tiny"
    shutil.copytree(os.path.join(FIXTURES, "gpt2"), variation / "2")
    (variation / "2.complete").write_text("")


def test_hub_handles_load_from_prefilled_offline_caches(tmp_path):
    hf_cache, kaggle_cache = tmp_path / "hf", tmp_path / "kaggle"
    _fill_hf_cache(hf_cache, tmp_path)
    _fill_kaggle_cache(kaggle_cache)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(hf_cache),
               KAGGLEHUB_CACHE=str(kaggle_cache), KAGGLE_USERNAME="nobody", KAGGLE_KEY="none",
               NO_PROXY="*", HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")
    result = subprocess.run([sys.executable, "-c", SCRIPT, os.path.join(FIXTURES, "gpt2.npz")],
                            env=env, capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, result.stderr[-3000:]
    out = json.loads(lines[0][len("RESULT "):])
    assert out["hf://keras-lm-tests/tiny-gpt2"] < 1e-4
    assert out["kaggle://keras/gpt2/keras/gpt2_tiny/2"] < 1e-4
    assert "not in the local Hugging Face cache" in out["hf://keras-lm-tests/not-cached"]
    assert "not in the local kagglehub cache" in out["kaggle://keras/gpt2/keras/gpt2_tiny/3"]
