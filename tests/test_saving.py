"""Saving a preset never loses a file: other files stay, the old preset survives any failure
(injected at each step, or a killed process), and nothing hidden is left behind."""

import os
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import keras_lm
from keras_lm.cli import main
from keras_lm.presets import safe_write


def _snapshot(folder):
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


@pytest.fixture
def two_models(gpt2_lm):
    """The fixture model and a copy whose weights differ (so old and new presets differ)."""
    import keras

    other = keras_lm.models.GPT2CausalLM.from_config(gpt2_lm.get_config())
    keras.utils.set_random_seed(7)
    other.backbone.set_weights([np.random.normal(size=w.shape).astype(w.dtype)
                                for w in gpt2_lm.backbone.get_weights()])
    return gpt2_lm, other


def test_a_folder_with_other_files_is_refused_and_kept(gpt2_lm, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text("{}")
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError, match="notes.txt") as error:
        gpt2_lm.save_to_preset(str(tmp_path))
    assert "overwrite=True" in str(error.value)
    assert _snapshot(tmp_path) == before
    assert sorted(os.listdir(tmp_path)) == ["data", "notes.txt"]  # nothing hidden left


def test_overwrite_writes_next_to_other_files_and_keeps_them(gpt2_lm, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "config.json.bak").write_text("also mine")
    gpt2_lm.save_to_preset(str(tmp_path), overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert (tmp_path / "config.json.bak").read_text() == "also mine"
    assert keras_lm.models.CausalLM.from_preset(str(tmp_path)) is not None
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]
    assert not [n for n in os.listdir(tmp_path.parent) if "keras_lm" in n]


def test_saving_into_the_working_directory_keeps_its_files(gpt2_lm, tmp_path, monkeypatch):
    (tmp_path / "script.py").write_text("print(1)")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="script.py"):
        gpt2_lm.save_to_preset(".")
    assert (tmp_path / "script.py").read_text() == "print(1)"


def test_resaving_a_preset_replaces_it_whole(two_models, tmp_path):
    first, second = two_models
    target = tmp_path / "preset"
    first.save_to_preset(str(target))
    second.save_to_preset(str(target))
    reloaded = keras_lm.models.CausalLM.from_preset(str(target))
    for a, b in zip(reloaded.backbone.get_weights(), second.backbone.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert sorted(os.listdir(tmp_path)) == ["preset"]


def test_a_backbone_saved_over_a_task_preset_removes_stale_task_files(gpt2_lm, tmp_path):
    gpt2_lm.save_to_preset(str(tmp_path / "p"))
    gpt2_lm.backbone.save_to_preset(str(tmp_path / "p"))
    assert sorted(os.listdir(tmp_path / "p")) == ["config.json", "metadata.json",
                                                  "model.weights.h5"]


def test_saved_files_follow_the_umask(gpt2_lm, tmp_path):
    old = os.umask(0o022)
    try:
        gpt2_lm.save_to_preset(str(tmp_path / "p"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "p").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(tmp_path / "p" / "assets").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(tmp_path / "p" / "config.json").st_mode) == 0o644


@pytest.mark.parametrize("step", ["link", "replace-1", "replace-3", "replace-last", "remove"])
def test_a_failure_at_any_step_keeps_the_old_preset(two_models, tmp_path, monkeypatch, step):
    first, second = two_models
    target = tmp_path / "preset"
    first.save_to_preset(str(target))
    if step == "remove":  # old files to remove: the new save writes no tokenizer
        second = second.backbone
    before = _snapshot(target)
    calls = {"replace": 0}
    real_replace, real_link, real_remove = os.replace, os.link, os.remove
    moved_in = len([f for f in before if f != "task.json"]) if step == "replace-last" else None

    def replace(src, dst):
        if "keras_lm-staging" in str(src):
            calls["replace"] += 1
            limit = {"replace-1": 1, "replace-3": 3}.get(step, moved_in)
            if calls["replace"] == limit:
                raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    def link(src, dst):
        if step == "link":
            raise OSError(28, "No space left on device")
        return real_link(src, dst)

    def remove(path):
        if step == "remove" and str(target) in str(path) and "keras_lm" not in str(path):
            raise OSError(13, "Permission denied")
        return real_remove(path)

    monkeypatch.setattr(safe_write.os, "replace", replace)
    monkeypatch.setattr(safe_write.os, "link", link)
    monkeypatch.setattr(safe_write.shutil, "copy2", link)
    monkeypatch.setattr(safe_write.os, "remove", remove)
    with pytest.raises(ValueError, match="Cannot write a preset"):
        second.save_to_preset(str(target))
    monkeypatch.undo()
    assert _snapshot(target) == before
    assert sorted(os.listdir(tmp_path)) == ["preset"]  # no hidden leftovers


KILLED_SAVE = textwrap.dedent("""
    import os, signal, sys
    import keras_lm
    from keras_lm.presets import safe_write
    lm = keras_lm.models.CausalLM.from_preset(sys.argv[1])
    real_replace, moved = os.replace, []
    def replace(src, dst):
        if "keras_lm-staging" in str(src):
            moved.append(dst)
            if len(moved) == 6:  # the new weights are in, the task files not yet
                os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst)
    safe_write.os.replace = replace
    lm.save_to_preset(sys.argv[2])
""")


@pytest.mark.slow  # a second process; the saving logic is the same on every backend
def test_a_killed_save_leaves_the_old_preset_loadable(two_models, tmp_path):
    first, second = two_models
    source, target = tmp_path / "source", tmp_path / "preset"
    second.save_to_preset(str(source))
    first.save_to_preset(str(target))
    before = _snapshot(target)
    script = tmp_path / "killed_save.py"
    script.write_text(KILLED_SAVE)
    done = subprocess.run([sys.executable, str(script), str(source), str(target)],
                          capture_output=True, timeout=300, env=dict(os.environ))
    assert done.returncode == -9, done.stderr.decode()[-2000:]
    assert _snapshot(target) != before  # the kill left new and old files mixed ...
    with pytest.warns(UserWarning, match="interrupted"):
        lm = keras_lm.models.CausalLM.from_preset(str(target))  # ... until the next load
    assert _snapshot(target) == before
    for a, b in zip(lm.backbone.get_weights(), first.backbone.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert sorted(os.listdir(tmp_path)) == ["killed_save.py", "preset", "source"]


def test_convert_refuses_to_write_into_its_source(hf_gpt2, tmp_path, capsys):
    import shutil

    path = tmp_path / "hf"
    shutil.copytree(hf_gpt2[0], path)
    before = _snapshot(path)
    assert main(["convert", str(path), str(path)]) == 2
    assert main(["convert", str(path), str(path / "native")]) == 2
    err = capsys.readouterr().err
    assert "is the source or inside it" in err and "Traceback" not in err
    assert _snapshot(path) == before


def test_convert_into_a_folder_of_other_files_needs_overwrite(hf_gpt2, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    assert main(["convert", hf_gpt2[0], str(tmp_path / "out")]) == 2
    assert "keep.txt" in capsys.readouterr().err
    assert main(["convert", hf_gpt2[0], str(tmp_path / "out"), "--overwrite"]) == 0
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    assert keras_lm.models.CausalLM.from_preset(str(tmp_path / "out")) is not None
