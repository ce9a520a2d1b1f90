"""Tiny GGUF files written at test time with the `gguf` package, laid out as llama.cpp's
converter lays them out (facts from its format: tensor names, Gemma norms stored as 1 + w,
Llama q/k rows permuted for its RoPE kernel, GPT-2 Conv1D weights transposed)."""

import numpy as np

# Block types whose quantizer the `gguf` package implements; K-quants get random valid blocks.
QUANTIZABLE = ("Q8_0", "Q5_0", "Q4_0", "BF16")


def _encode(array: np.ndarray, type_name: str, rng) -> tuple[np.ndarray, object]:
    import gguf

    kind = gguf.GGMLQuantizationType[type_name]
    if type_name == "F32":
        return array.astype(np.float32), None
    if type_name == "F16":
        return array.astype(np.float16), None
    if type_name in QUANTIZABLE:
        return gguf.quants.quantize(array.astype(np.float32), kind), kind
    # Q4_K / Q5_K / Q6_K: random bytes with small finite f16 scales in each block.
    block, size = gguf.GGML_QUANT_SIZES[kind]
    rows = array.reshape(-1, array.shape[-1])
    blocks = rng.integers(0, 256, size=(rows.shape[0] * rows.shape[1] // block, size),
                          dtype=np.uint8)
    scale = np.frombuffer(np.float16(0.002).tobytes(), np.uint8)
    positions = {"Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (size - 2,)}[type_name]
    for at in positions:
        blocks[:, at:at + 2] = scale
    return blocks.reshape(rows.shape[0], -1), kind


def write_gguf(path, arch: str, metadata: dict, tensors: dict, types: dict | None = None,
               seed: int = 0) -> None:
    """`tensors`: GGUF name -> float array (numpy layout); `types`: name -> block type
    (default F32). `metadata`: `{arch}.`-relative keys and `tokenizer.*` keys with values."""
    import gguf

    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in metadata.items():
        full = key if key.startswith(("tokenizer.", "general.")) else f"{arch}.{key}"
        if isinstance(value, bool):
            writer.add_bool(full, value)
        elif isinstance(value, int):
            writer.add_uint32(full, value)
        elif isinstance(value, float):
            writer.add_float32(full, value)
        elif isinstance(value, str):
            writer.add_string(full, value)
        else:
            writer.add_array(full, list(value))
    for name, array in tensors.items():
        data, kind = _encode(np.asarray(array), (types or {}).get(name, "F32"), rng)
        writer.add_tensor(name, data, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def sentencepiece_metadata(proto: bytes, add_bos=True, add_space_prefix=False,
                           size: int | None = None) -> dict:
    """`tokenizer.ggml.*` keys for a SentencePiece model, as llama.cpp writes them; `size`
    pads the vocabulary with `<unusedN>` control tokens (as Gemma's is)."""
    from sentencepiece import sentencepiece_model_pb2 as spm

    model = spm.ModelProto()
    model.ParseFromString(proto)
    pieces = list(model.pieces)
    special = {"bos": model.trainer_spec.bos_id, "eos": model.trainer_spec.eos_id,
               "unknown": model.trainer_spec.unk_id, "padding": model.trainer_spec.pad_id}
    out = {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": [p.piece for p in pieces],
        "tokenizer.ggml.scores": [float(p.score) for p in pieces],
        "tokenizer.ggml.token_type": [int(p.type) for p in pieces],
        "tokenizer.ggml.add_bos_token": add_bos,
        "tokenizer.ggml.add_eos_token": False,
        "tokenizer.ggml.add_space_prefix": add_space_prefix,
    }
    for i in range(len(pieces), size or 0):
        out["tokenizer.ggml.tokens"].append(f"<unused{i}>")
        out["tokenizer.ggml.scores"].append(0.0)
        out["tokenizer.ggml.token_type"].append(3)
    for name, token_id in special.items():
        if token_id >= 0:
            out[f"tokenizer.ggml.{name}_token_id"] = int(token_id)
    return out


def _state(model) -> dict:
    return {k: v.detach().float().numpy() for k, v in model.state_dict().items()}


LLAMA_NAMES = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
               "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
               "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
               "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
GEMMA2_NAMES = {**LLAMA_NAMES, "post_attention_layernorm": "post_attention_norm",
                "pre_feedforward_layernorm": "ffn_norm",
                "post_feedforward_layernorm": "post_ffw_norm"}
QK_NORM_NAMES = {"self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm"}


def llama_layout_gguf_tensors(model, names: dict, norm_offset: float = 0.0,
                              permute_qk: bool = False) -> dict:
    """A Llama-layout transformers model's weights under llama.cpp names: `names` maps
    Hugging Face block suffixes to llama.cpp's; Gemma's norms are stored as `norm_offset` + w;
    Llama's q/k rows permuted for llama.cpp's RoPE kernel; biases kept where present."""
    state, config = _state(model), model.config
    out = {"token_embd.weight": state["model.embed_tokens.weight"],
           "output_norm.weight": state["model.norm.weight"] + norm_offset}
    if not config.tie_word_embeddings:
        out["output.weight"] = state["lm_head.weight"]
    heads = {"attn_q": config.num_attention_heads, "attn_k": config.num_key_value_heads}
    for i in range(config.num_hidden_layers):
        for theirs, ours in names.items():
            for kind in ("weight", "bias"):
                value = state.get(f"model.layers.{i}.{theirs}.{kind}")
                if value is None:
                    continue
                if "norm" in ours:
                    value = value + norm_offset
                elif permute_qk and ours in heads and kind == "weight":
                    value = _permute(value, heads[ours])
                out[f"blk.{i}.{ours}.{kind}"] = value
    return out


def gemma3_gguf_tensors(model) -> dict:
    return llama_layout_gguf_tensors(model, {**GEMMA2_NAMES, **QK_NORM_NAMES}, norm_offset=1.0)


def llama_gguf_tensors(model) -> dict:
    return llama_layout_gguf_tensors(model, LLAMA_NAMES, permute_qk=True)


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2) \
        .reshape(w.shape)


def gpt2_gguf_tensors(model) -> dict:
    """A transformers GPT2LMHeadModel's weights under llama.cpp names (Conv1D transposed,
    the embedding written again as `output`)."""
    state = _state(model)
    names = {"ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output",
             "ln_2": "ffn_norm", "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
    out = {"token_embd.weight": state["transformer.wte.weight"],
           "position_embd.weight": state["transformer.wpe.weight"],
           "output_norm.weight": state["transformer.ln_f.weight"],
           "output_norm.bias": state["transformer.ln_f.bias"],
           "output.weight": state["transformer.wte.weight"]}
    for i in range(model.config.n_layer):
        for theirs, ours in names.items():
            weight = state[f"transformer.h.{i}.{theirs}.weight"]
            out[f"blk.{i}.{ours}.weight"] = weight if "ln" in theirs else weight.T
            out[f"blk.{i}.{ours}.bias"] = state[f"transformer.h.{i}.{theirs}.bias"]
    return out
