"""Replace the files of a preset folder without losing anything.

A save is written complete into a hidden staging folder next to the destination. Then a
journal folder takes hard links of the preset files about to be replaced, and only then are
the new files moved in, one `os.replace` each. Any failure moves the old files back; a killed
process leaves the journal, and the next save or load of that folder restores the old copy.
Files of the destination that are not preset files are never touched.
"""

import json
import os
import shutil
import tempfile
import warnings

MARKER = ".keras_lm_journal"  # names a hidden folder as ours (safe to remove)
JOURNAL = "journal.json"
STAGING = "keras_lm-staging-"
PREVIOUS = "keras_lm-previous-"


def relative_files(root: str) -> list[str]:
    """Paths of the files under `root`, relative to it, sorted."""
    out = []
    for folder, _, files in os.walk(root):
        out += [os.path.relpath(os.path.join(folder, f), root) for f in files]
    return sorted(out)


def _hidden_sibling(destination: str, kind: str) -> str:
    parent, name = os.path.split(destination)
    folder = tempfile.mkdtemp(prefix=f".{name}.{kind}", dir=parent)
    open(os.path.join(folder, MARKER), "w").close()
    return folder


def _remove_ours(folder: str) -> None:
    """Remove a hidden staging or journal folder, only if it carries our marker."""
    if os.path.isfile(os.path.join(folder, MARKER)):
        shutil.rmtree(folder, ignore_errors=True)


def staging_folder(destination: str) -> str:
    """A fresh hidden folder next to `destination` to write a save into."""
    return _hidden_sibling(destination, STAGING)


def discard(folder: str) -> None:
    _remove_ours(folder)


def _leftovers(destination: str, kind: str) -> list[str]:
    parent, name = os.path.split(destination)
    try:
        entries = sorted(os.listdir(parent))
    except OSError:  # no parent, or one we may not list: nothing of ours can be there
        return []
    prefix = f".{name}.{kind}"
    return [os.path.join(parent, entry) for entry in entries if entry.startswith(prefix)]


def recover(destination: str) -> bool:
    """Undo a save into `destination` that a killed process left half done, and remove
    hidden folders a killed save left behind. Returns True when old files were restored."""
    restored = False
    for journal_folder in _leftovers(destination, PREVIOUS):
        journal = os.path.join(journal_folder, JOURNAL)
        if os.path.isfile(journal):
            with open(journal, encoding="utf-8") as f:
                entry = json.load(f)
            _roll_back(destination, journal_folder, entry["replaced"], entry["created"])
            restored = True
            warnings.warn(
                f"A save into {destination} was interrupted; its previous files were restored.",
                stacklevel=3,
            )
        _remove_ours(journal_folder)
    for staging in _leftovers(destination, STAGING):
        _remove_ours(staging)
    return restored


def _link_or_copy(source: str, target: str) -> None:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _roll_back(destination, journal_folder, replaced, created):
    for relative in created:
        path = os.path.join(destination, relative)
        if os.path.isfile(path):
            os.remove(path)
    for relative in replaced:
        kept = os.path.join(journal_folder, "files", relative)
        if os.path.isfile(kept):
            os.makedirs(os.path.dirname(os.path.join(destination, relative)), exist_ok=True)
            os.replace(kept, os.path.join(destination, relative))


def _remove_empty_parents(destination: str, relative: str) -> None:
    folder = os.path.dirname(relative)
    while folder:
        path = os.path.join(destination, folder)
        if os.listdir(path):
            return
        os.rmdir(path)
        folder = os.path.dirname(folder)


def commit(staging: str, destination: str, stale: list[str]) -> None:
    """Move every file of `staging` into `destination` (same relative paths) and remove the
    `stale` files (relative paths of old preset files the new save does not write)."""
    new = relative_files(staging)
    new = [f for f in new if f != MARKER]
    os.makedirs(destination, exist_ok=True)
    replaced = [f for f in new + list(stale) if os.path.isfile(os.path.join(destination, f))]
    created = [f for f in new if f not in replaced]
    journal_folder = _hidden_sibling(destination, PREVIOUS)
    try:
        for relative in replaced:
            _link_or_copy(os.path.join(destination, relative),
                          os.path.join(journal_folder, "files", relative))
        # Written last and renamed into place: a journal on disk is always complete.
        partial = os.path.join(journal_folder, JOURNAL + ".partial")
        with open(partial, "w", encoding="utf-8") as f:
            json.dump({"replaced": replaced, "created": created}, f)
        os.replace(partial, os.path.join(journal_folder, JOURNAL))
    except BaseException:
        _remove_ours(journal_folder)
        raise
    try:
        for relative in new:
            target = os.path.join(destination, relative)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.replace(os.path.join(staging, relative), target)
        for relative in stale:
            os.remove(os.path.join(destination, relative))
            _remove_empty_parents(destination, relative)
    except BaseException:
        _roll_back(destination, journal_folder, replaced, created)
        _remove_ours(journal_folder)
        raise
    # Done: the journal goes first (a kill now leaves only garbage), then the staging folder.
    os.remove(os.path.join(journal_folder, JOURNAL))
    _remove_ours(journal_folder)
    _remove_ours(staging)
