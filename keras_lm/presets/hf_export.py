"""`export_to_transformers`: a Hugging Face folder (config.json, model.safetensors,
generation_config.json, tokenizer files) from our models, with each family's import map
inverted (`ConversionMap.export`) and its config inverted (`hf_config`)."""

import json
import os

import numpy as np

from keras_lm.presets import safe_write
from keras_lm.presets.safetensors_io import save_file

# Hugging Face's tokenizers add the start token for these families' text; GPT-2's and
# Qwen's do not.
ADDS_START_TOKEN = ("OPT", "Llama", "Llama3", "Mistral", "Gemma", "Gemma3")


def _family_module(backbone):
    from keras_lm.presets import hf_gemma, hf_gemma3, hf_gpt2, hf_llama, hf_mistral, hf_opt, hf_qwen

    modules = {"GPT2Backbone": hf_gpt2, "OPTBackbone": hf_opt, "LlamaBackbone": hf_llama,
               "Llama3Backbone": hf_llama, "MistralBackbone": hf_mistral,
               "GemmaBackbone": hf_gemma, "Gemma3Backbone": hf_gemma3,
               "QwenBackbone": hf_qwen, "Qwen3Backbone": hf_qwen}
    for cls in type(backbone).__mro__:
        if cls.__name__ in modules:
            return modules[cls.__name__]
    raise ValueError(f"No Hugging Face export for {type(backbone).__name__}.")


def backbone_files(backbone) -> tuple[dict, dict]:
    """`(config, tensors)` of the Hugging Face checkpoint for `backbone`."""
    if any(layer.quantization_mode for layer in backbone._flatten_layers(include_self=False)):
        raise ValueError("Cannot export a quantized model to Hugging Face format; export the "
                         "float model (before `quantize()`).")
    module = _family_module(backbone)
    config = module.hf_config(backbone)
    keys = ["transformer.wte.weight"]  # GPT-2: write the `transformer.` prefix
    conversion = module.conversion_map(backbone, keys)
    from keras_lm.models.lora_merge import merged_lora_weights

    merged = merged_lora_weights(backbone)
    tensors = conversion.export(backbone, overrides=merged)
    dtype = str(backbone.dtype_policy.variable_dtype)
    config["torch_dtype"] = dtype
    return config, {k: v.astype(_numpy_dtype(dtype)) for k, v in tensors.items()}


def _numpy_dtype(name: str):
    if name == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return np.dtype(name)


def tokenizer_files(tokenizer, add_start_token: bool | None = None) -> dict:
    """`{file name: bytes}` of a Hugging Face tokenizer equivalent to `tokenizer`."""
    from keras_lm.tokenizers.byte_pair_tokenizer import BytePairTokenizer

    family = type(tokenizer).__name__.removesuffix("Tokenizer")
    if add_start_token is None:
        add_start_token = family in ADDS_START_TOKEN
    start = tokenizer.start_token_id if add_start_token else None
    special = {"bos_token": _token(tokenizer, tokenizer.start_token_id),
               "eos_token": _token(tokenizer, tokenizer.end_token_id),
               "pad_token": _token(tokenizer, tokenizer.pad_token_id)}
    special = {k: v for k, v in special.items() if v is not None}
    files = {}
    if isinstance(tokenizer, BytePairTokenizer):
        files["tokenizer.json"] = _with_start_token(tokenizer._backend.to_str(), tokenizer,
                                                    start)
        tokenizer_class = "PreTrainedTokenizerFast"
    elif getattr(tokenizer, "tokenizer_json", None) is not None:
        files["tokenizer.json"] = _with_start_token(tokenizer.tokenizer_json, tokenizer, start)
        tokenizer_class = "PreTrainedTokenizerFast"
    else:
        files["tokenizer.model"] = tokenizer.proto
        tokenizer_class = _sentencepiece_class(tokenizer.proto, family)
        special["unk_token"] = "<unk>"
    config = {"tokenizer_class": tokenizer_class, "add_bos_token": start is not None,
              "add_eos_token": False, "model_max_length": 1_000_000, **special}
    template = getattr(tokenizer, "chat_template", None) or tokenizer.default_chat_template
    if template:
        config["chat_template"] = template
    files["tokenizer_config.json"] = json.dumps(config, indent=2, ensure_ascii=False)
    return {name: data.encode() if isinstance(data, str) else data
            for name, data in files.items()}


def _sentencepiece_class(proto: bytes, family: str) -> str:
    """The `tokenizer_class` under which transformers rebuilds this proto exactly.

    Its Llama and Gemma classes convert BPE protos (every real Llama, Mistral and Gemma one),
    GemmaTokenizer assuming Gemma's normalizer (no dummy "▁" prefix); other protos (unigram)
    go to transformers 5's generic `TokenizersBackend`, which follows the proto.
    """
    from sentencepiece import sentencepiece_model_pb2

    model = sentencepiece_model_pb2.ModelProto()
    model.ParseFromString(proto)
    if model.trainer_spec.model_type != model.trainer_spec.BPE:
        return "TokenizersBackend"
    if family.startswith("Gemma") and not model.normalizer_spec.add_dummy_prefix:
        return "GemmaTokenizer"
    return "LlamaTokenizer"


def _token(tokenizer, token_id):
    return None if token_id is None else tokenizer.id_to_token(int(token_id))


def _with_start_token(tokenizer_json: str, tokenizer, start_id) -> str:
    """The tokenizer.json with a post-processor that adds the start token (or none)."""
    data = json.loads(tokenizer_json)
    if start_id is None:
        data["post_processor"] = None
        return json.dumps(data, ensure_ascii=False)
    token = tokenizer.id_to_token(int(start_id))
    data["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": token, "type_id": 0}},
                   {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": token, "type_id": 0}},
                 {"Sequence": {"id": "A", "type_id": 0}},
                 {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {token: {"id": token, "ids": [int(start_id)], "tokens": [token]}},
    }
    return json.dumps(data, ensure_ascii=False)


def export_to_transformers(obj, path: str, backbone=None, tokenizer=None) -> None:
    """Write `backbone` and/or `tokenizer` as a Hugging Face folder at `path` (new or
    empty: a folder holding anything else is refused, so nothing of the user's is lost)."""
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise ValueError(f"Export into a new or empty folder; {path} already holds files.")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    staging = safe_write.staging_folder(path)
    try:
        if backbone is not None:
            config, tensors = backbone_files(backbone)
            stops = list(getattr(tokenizer, "stop_token_ids", None) or [])
            if tokenizer is not None:
                for key, token_id in (("bos_token_id", tokenizer.start_token_id),
                                      ("eos_token_id", tokenizer.end_token_id),
                                      ("pad_token_id", tokenizer.pad_token_id)):
                    if token_id is not None:
                        config[key] = int(token_id)
                eos = config.get("eos_token_id")
                stops = list(dict.fromkeys(([eos] if eos is not None else []) + stops))
            _write(staging, "config.json", json.dumps(config, indent=2))
            save_file(tensors, os.path.join(staging, "model.safetensors"),
                      metadata={"format": "pt"})
            generation = {"eos_token_id": stops[0] if len(stops) == 1 else stops} \
                if stops else {}
            if "bos_token_id" in config:
                generation["bos_token_id"] = config["bos_token_id"]
            _write(staging, "generation_config.json", json.dumps(generation, indent=2))
        if tokenizer is not None:
            for name, data in tokenizer_files(tokenizer).items():
                with open(os.path.join(staging, name), "wb") as f:
                    f.write(data)
        safe_write.commit(staging, path, [])
    finally:
        safe_write.discard(staging)


def _write(directory, name, text):
    with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
        f.write(text)
