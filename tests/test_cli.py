"""The `keras-lm` command line."""

import os

import keras

import keras_lm
from keras_lm.cli import main


def test_generate_from_a_preset(gpt2_preset, capsys):
    assert main(["generate", "the quick", "i want", "--preset", gpt2_preset,
                 "--max-length", "12", "--sampler", "greedy"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("the quick")


def test_generate_with_the_demo_model(capsys):
    assert main(["generate", "keras is", "--preset", "demo", "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out.startswith("keras is")


def test_bad_preset_is_a_clear_error(capsys):
    assert main(["generate", "x", "--preset", "./missing/preset"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_convert_and_presets(hf_gpt2, tmp_path, capsys):
    path, _ = hf_gpt2
    assert main(["convert", path, str(tmp_path / "native")]) == 0
    assert isinstance(keras_lm.models.CausalLM.from_preset(str(tmp_path / "native")),
                      keras_lm.models.GPT2CausalLM)
    assert main(["presets"]) == 0
    assert "gpt2_base_en" in capsys.readouterr().out


def test_convert_to_every_format(tmp_path, capsys, monkeypatch):
    import json
    import sys

    import numpy as np

    source = os.path.join(os.path.dirname(__file__), "data", "keras_hub", "qwen")
    expected = np.load(source + ".npz")
    inputs = {"token_ids": expected["token_ids"], "padding_mask": expected["padding_mask"]}
    mask = expected["padding_mask"]
    assert main(["convert", source, str(tmp_path / "hf"), "--to", "hf"]) == 0
    assert json.load(open(tmp_path / "hf" / "config.json"))["model_type"] == "qwen2"
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "kh")]) == 0
    assert json.load(open(tmp_path / "kh" / "config.json"))["registered_name"] == \
        "keras_hub>QwenBackbone"
    capsys.readouterr()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # the bar shows on terminals
    assert main(["convert", str(tmp_path / "kh"), str(tmp_path / "m.keras"), "--to", "keras"]) == 0
    assert "Converting: 2/2" in capsys.readouterr().err
    monkeypatch.undo()
    for lm in (keras_lm.models.CausalLM.from_preset(str(tmp_path / "kh")),
               keras.saving.load_model(str(tmp_path / "m.keras"))):
        logits = keras.ops.convert_to_numpy(lm(inputs))
        np.testing.assert_allclose(logits[mask], expected["logits"][mask], atol=1e-4)
    assert main(["convert", source, str(tmp_path / "m.keras"), "--to", "keras"]) == 2
    assert main(["convert", source, str(tmp_path / "out"), "--to", "keras"]) == 2
    assert "ends in .keras" in capsys.readouterr().err


def test_stream_and_stop(gpt2_preset, capsys):
    assert main(["generate", "the quick", "--preset", gpt2_preset, "--max-length", "16",
                 "--sampler", "greedy"]) == 0
    full = capsys.readouterr().out.rstrip("\n")
    assert main(["generate", "the quick", "--preset", gpt2_preset, "--max-length", "16",
                 "--sampler", "greedy", "--stream"]) == 0
    assert capsys.readouterr().out.rstrip("\n") == full
    completion = full[len("the quick"):]
    assert len(completion) >= 4, f"greedy completion too short to test stops: {full!r}"
    stop = completion[2:4]
    assert main(["generate", "the quick", "--preset", gpt2_preset, "--max-length", "16",
                 "--sampler", "greedy", "--stop", stop]) == 0
    out = capsys.readouterr().out.rstrip("\n")
    assert out.endswith(stop) and len(out) <= len(full)


def test_jax_compilation_cache_is_kept_between_runs(gpt2_preset, tmp_path):
    import os
    import subprocess
    import sys

    import keras
    import pytest

    if keras.backend.backend() != "jax":
        pytest.skip("a JAX feature")
    cache = tmp_path / "compile-cache"
    env = {**os.environ, "KERAS_BACKEND": "jax", "KERAS_LM_COMPILE_CACHE": str(cache)}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # the test session's own cache (conftest)
    command = [sys.executable, "-m", "keras_lm.cli", "generate", "the quick", "--preset",
               gpt2_preset, "--max-length", "12", "--sampler", "greedy"]
    first = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    stored = sorted(p.name for p in cache.iterdir())
    assert any(name.startswith("jit__traced") for name in stored)  # prefill and decode chunk
    second = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    assert second.stdout == first.stdout
    assert sorted(p.name for p in cache.iterdir()) == stored  # reused, nothing recompiled


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("keras-lm: error: ")
    return err


def test_bad_arguments_are_one_line_errors(gpt2_preset, capsys):
    assert main(["generate", "the", "--preset", gpt2_preset, "--max-length", "0"]) == 2
    assert "max_length" in _one_line_error(capsys)
    assert main(["generate", "the quick brown fox", "--preset", gpt2_preset,
                 "--max-length", "2"]) == 2
    assert "shorter than the longest prompt" in _one_line_error(capsys)
    assert main(["generate", "the", "--preset", gpt2_preset, "--sampler", "nucleus"]) == 2
    assert "nucleus" in _one_line_error(capsys)


def test_an_unwritable_destination_is_a_one_line_error(hf_gpt2, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert main(["convert", hf_gpt2[0], str(blocker / "native")]) == 2
    assert "a_file" in _one_line_error(capsys)
    assert blocker.read_text() == "not a folder"


def test_an_unusable_compile_cache_is_a_warning(gpt2_preset, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "cache_file"
    blocker.write_text("")
    monkeypatch.setenv("KERAS_LM_COMPILE_CACHE", str(blocker / "jax"))
    assert main(["generate", "the quick", "--preset", gpt2_preset, "--max-length", "8"]) == 0
    assert "compile cache" in capsys.readouterr().err


def test_an_unexpected_error_says_it_is_a_bug(gpt2_preset, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("something internal")

    monkeypatch.setattr(keras_lm.models.CausalLM, "generate", broken)
    assert main(["generate", "the", "--preset", gpt2_preset]) == 1
    err = capsys.readouterr().err
    assert "This is a bug; please report it" in err and "something internal" in err


def test_score_prints_log_probs_and_the_perplexity(gpt2_preset, tmp_path, capsys):
    import math

    import numpy as np

    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumped over the lazy dog")
    assert main(["score", str(text), "--preset", gpt2_preset, "--window", "4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    log_probs = [float(line.rsplit("\t", 1)[1]) for line in lines[:-1]]
    lm = keras_lm.models.CausalLM.from_preset(gpt2_preset)
    ids = lm.preprocessor.prompt_rows(["the quick brown fox jumped over the lazy dog"])[0]
    assert len(log_probs) == len(ids) - 1 and all(lp < 0 for lp in log_probs)
    # The first window's scores equal one forward pass over those tokens.
    import keras

    logits = keras.ops.convert_to_numpy(lm.score(ids[None, :3]))[0].astype("float64")
    expected = [logits[i, ids[i + 1]] - np.log(np.exp(logits[i]).sum()) for i in range(2)]
    np.testing.assert_allclose(log_probs[:2], expected, atol=1e-4)
    perplexity = float(lines[-1].split()[1])
    assert math.isclose(perplexity, math.exp(-np.mean(log_probs)), rel_tol=1e-3)


def test_score_errors_are_one_line(gpt2_preset, tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe not utf-8")
    assert main(["score", str(bad), "--preset", gpt2_preset]) == 2
    assert "not UTF-8" in capsys.readouterr().err
    assert main(["score", str(tmp_path / "missing.txt"), "--preset", gpt2_preset]) == 2


def test_chat_session(monkeypatch, capsys):
    import io

    source = os.path.join(os.path.dirname(__file__), "data", "keras_hub", "qwen")
    seen = []
    original = keras_lm.models.CausalLM.chat

    def recording_chat(self, messages, **kwargs):
        seen.append([dict(m) for m in messages])
        if messages[-1]["content"] == "interrupt me":
            def interrupted():
                yield "partial"
                raise KeyboardInterrupt
            return interrupted()
        return original(self, messages, **kwargs)

    monkeypatch.setattr(keras_lm.models.CausalLM, "chat", recording_chat)
    monkeypatch.setattr("sys.stdin", io.StringIO(
        "hello\ninterrupt me\n/system Be brief.\nagain\n/bogus\n/reset\nfresh\n/exit\n"))
    assert main(["chat", "--preset", source, "--max-new-tokens", "3", "--sampler",
                 "greedy"]) == 0
    out, err = capsys.readouterr()
    assert "partial [stopped]" in out
    assert "[conversation cleared]" in err and "unknown command /bogus" in err
    assert [m["role"] for m in seen[0]] == ["user"]
    assert seen[1][-1]["content"] == "interrupt me" and seen[1][1]["role"] == "assistant"
    assert seen[2][0] == {"role": "system", "content": "Be brief."}  # set mid-conversation
    assert seen[2][-2] == {"role": "assistant", "content": "partial"}  # kept when stopped
    assert seen[3] == [{"role": "system", "content": "Be brief."},
                       {"role": "user", "content": "fresh"}]  # /reset keeps the system
    assert main(["chat", "--preset", os.path.join(os.path.dirname(__file__), "data",
                                                  "keras_hub", "gpt2")]) == 2
    assert "no chat template" in capsys.readouterr().err
