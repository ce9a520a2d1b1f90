"""GGUF files as presets: llama.cpp's metadata and tensor names, translated into the Hugging
Face config and tensor names our per-family maps (`hf_*.py`) already read.

Each architecture is a row of data: its Hugging Face module, a config translation, and the
transform that undoes what llama.cpp's converter did to a tensor (Gemma's norms stored as
1 + w, Llama's q/k rows permuted, GPT-2's Conv1D weights transposed).
"""

import os
import re

import numpy as np

from keras_lm.layers.rotary import rope_inverse_frequencies
from keras_lm.presets.conversion import apply_conversion, build_checked
from keras_lm.presets.gguf_blocks import attach_four_bit_groups
from keras_lm.presets.gguf_file import GGUFFile
from keras_lm.presets.gguf_tokenizer import (
    byte_pair_vocabulary,
    sentencepiece_proto,
    tokenizer_kind,
)

# llama.cpp per-block tensor names → Hugging Face suffixes, per architecture.
_LLAMA_BLOCK = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm",
}
_GEMMA3_BLOCK = {
    **_LLAMA_BLOCK, "ffn_norm": "pre_feedforward_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
    "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
}
_GEMMA2_BLOCK = {
    **_LLAMA_BLOCK, "ffn_norm": "pre_feedforward_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
_QWEN_BLOCK = {
    **_LLAMA_BLOCK, "ffn_norm": "post_attention_layernorm",
    "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
}
_GPT2_BLOCK = {
    "attn_norm": "ln_1", "attn_qkv": "attn.c_attn", "attn_output": "attn.c_proj",
    "ffn_norm": "ln_2", "ffn_up": "mlp.c_fc", "ffn_down": "mlp.c_proj",
}
_LLAMA_TOP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm",
              "output": "lm_head"}
_GPT2_TOP = {"token_embd": "wte", "position_embd": "wpe", "output_norm": "ln_f",
             "output": "lm_head"}
_BLOCK_NAME = re.compile(r"^blk\.(\d+)\.([a-z_0-9]+)\.(weight|bias)$")
_TOP_NAME = re.compile(r"^([a-z_]+)\.(weight|bias)$")


def _get(metadata: dict, arch: str, key: str, default=None, required=True):
    value = metadata.get(f"{arch}.{key}", default)
    if value is None and required:
        raise ValueError(f"lacks the metadata key '{arch}.{key}'")
    if isinstance(value, np.ndarray):
        if len(set(value.tolist())) != 1:
            raise ValueError(f"'{arch}.{key}' differs between layers, which is not supported")
        value = value.tolist()[0]
    return value


def _common_config(metadata: dict, arch: str, vocabulary_size: int, tied: bool) -> dict:
    heads = _get(metadata, arch, "attention.head_count")
    return {
        "vocab_size": vocabulary_size,
        "num_hidden_layers": _get(metadata, arch, "block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": _get(metadata, arch, "attention.head_count_kv", heads),
        "hidden_size": _get(metadata, arch, "embedding_length"),
        "intermediate_size": _get(metadata, arch, "feed_forward_length"),
        "max_position_embeddings": _get(metadata, arch, "context_length", 2048),
        "rms_norm_eps": _get(metadata, arch, "attention.layer_norm_rms_epsilon", 1e-6),
        "tie_word_embeddings": tied,
    }


# (low_freq_factor, high_freq_factor) of Llama 3's RoPE rule in released checkpoints
# (Llama 3.1, 3.2 and 3.3 all use 1 and 4; the factor and context come from the file).
LLAMA3_ROPE_BANDS = ((1.0, 4.0),)


def _linear_rope(metadata: dict, arch: str) -> dict | None:
    kind = metadata.get(f"{arch}.rope.scaling.type")
    if kind in (None, "none"):
        return None
    if kind != "linear":
        raise ValueError(f"RoPE scaling type {kind!r} is not supported")
    return {"rope_type": "linear", "factor": float(metadata[f"{arch}.rope.scaling.factor"])}


def gemma3_config(metadata: dict, vocabulary_size: int, tied: bool) -> dict:
    config = _common_config(metadata, "gemma3", vocabulary_size, tied)
    head_dim = _get(metadata, "gemma3", "attention.key_length", 256)
    # llama.cpp's rule: the 62-layer 27B scales queries by hidden/heads, the others by head_dim.
    width = config["hidden_size"] // config["num_attention_heads"]
    pattern = metadata.get("gemma3.attention.sliding_window_pattern")
    config.update(
        model_type="gemma3_text", head_dim=head_dim,
        query_pre_attn_scalar=width if config["num_hidden_layers"] == 62 else head_dim,
        sliding_window=_get(metadata, "gemma3", "attention.sliding_window", 4096),
        rope_theta=_get(metadata, "gemma3", "rope.freq_base", 1_000_000.0),
        # Older files leave the local base out: llama.cpp's constant 10k.
        rope_local_base_freq=_get(metadata, "gemma3", "rope.freq_base_swa", 10_000.0),
        rope_scaling=_linear_rope(metadata, "gemma3"),
        final_logit_softcapping=metadata.get("gemma3.final_logit_softcapping"),
    )
    if pattern is not None:  # newer files: one bool per layer, True = sliding window
        config["layer_types"] = ["sliding_attention" if local else "full_attention"
                                 for local in np.asarray(pattern).tolist()]
    return config


def gemma_config(metadata: dict, vocabulary_size: int, tied: bool, arch: str = "gemma") -> dict:
    config = _common_config(metadata, arch, vocabulary_size, tied)
    head_dim = _get(metadata, arch, "attention.key_length", 256)
    # llama.cpp's rule: Gemma 2 27B (46 layers) scales queries by hidden/heads.
    width = config["hidden_size"] // config["num_attention_heads"]
    large = arch == "gemma2" and config["num_hidden_layers"] == 46
    config.update(
        model_type=arch, head_dim=head_dim, query_pre_attn_scalar=width if large else head_dim,
        rope_theta=_get(metadata, arch, "rope.freq_base", 10_000.0),
    )
    if arch == "gemma2":
        config.update(
            sliding_window=_get(metadata, arch, "attention.sliding_window", 4096),
            attn_logit_softcapping=metadata.get("gemma2.attn_logit_softcapping"),
            final_logit_softcapping=metadata.get("gemma2.final_logit_softcapping"),
        )
    return config


def qwen_config(metadata: dict, vocabulary_size: int, tied: bool, arch: str = "qwen2") -> dict:
    config = _common_config(metadata, arch, vocabulary_size, tied)
    config.update(model_type=arch, rope_theta=_get(metadata, arch, "rope.freq_base", 1e6),
                  rope_scaling=_linear_rope(metadata, arch))
    if arch == "qwen3":
        config["head_dim"] = _get(metadata, arch, "attention.key_length",
                                  config["hidden_size"] // config["num_attention_heads"])
    return config


def llama_config(metadata: dict, vocabulary_size: int, tied: bool) -> dict:
    config = _common_config(metadata, "llama", vocabulary_size, tied)
    config.update(model_type="llama",
                  rope_theta=_get(metadata, "llama", "rope.freq_base", 10_000.0),
                  rope_scaling=_linear_rope(metadata, "llama"))
    head_dim = metadata.get("llama.attention.key_length",
                            metadata.get("llama.rope.dimension_count"))
    if head_dim is not None:
        config["head_dim"] = head_dim
    return config


def gpt2_config(metadata: dict, vocabulary_size: int, tied: bool) -> dict:
    return {
        "model_type": "gpt2", "vocab_size": vocabulary_size,
        "n_layer": _get(metadata, "gpt2", "block_count"),
        "n_head": _get(metadata, "gpt2", "attention.head_count"),
        "n_embd": _get(metadata, "gpt2", "embedding_length"),
        "n_inner": _get(metadata, "gpt2", "feed_forward_length"),
        "n_positions": _get(metadata, "gpt2", "context_length"),
        "layer_norm_epsilon": _get(metadata, "gpt2", "attention.layer_norm_epsilon", 1e-5),
    }


def _unpermute(heads: int):
    """Undo llama.cpp's q/k row order (halves interleaved per head for its RoPE kernel)."""
    def transform(w):
        rows = w.shape[0]
        return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2) \
            .reshape(w.shape)
    return transform


def _gemma_norm(w):
    return w - 1.0  # llama.cpp stores Gemma's (1 + w) scale


def _transpose(w):
    return w.T


def _gemma3_transforms(config):  # every Gemma generation
    return {"norm": _gemma_norm}


def _llama_transforms(config):
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    return {"attn_q": _unpermute(heads), "attn_k": _unpermute(kv_heads)}


def _gpt2_transforms(config):
    return {name: _transpose for name in ("attn_qkv", "attn_output", "ffn_up", "ffn_down")}


def _no_transforms(config):
    return {}


# architecture: (Hugging Face module name, config, block names, top names, transforms, prefix)
ARCHITECTURES = {
    "gemma": ("hf_gemma", gemma_config, _LLAMA_BLOCK | {"ffn_norm": "post_attention_layernorm"},
              _LLAMA_TOP, _gemma3_transforms, "model.layers"),
    "gemma2": ("hf_gemma", lambda m, v, t: gemma_config(m, v, t, "gemma2"), _GEMMA2_BLOCK,
               _LLAMA_TOP, _gemma3_transforms, "model.layers"),
    "qwen2": ("hf_qwen", qwen_config, _QWEN_BLOCK, _LLAMA_TOP, _no_transforms, "model.layers"),
    "qwen3": ("hf_qwen", lambda m, v, t: qwen_config(m, v, t, "qwen3"), _QWEN_BLOCK,
              _LLAMA_TOP, _no_transforms, "model.layers"),
    "gemma3": ("hf_gemma3", gemma3_config, _GEMMA3_BLOCK, _LLAMA_TOP, _gemma3_transforms,
               "model.layers"),
    "llama": ("hf_llama", llama_config, _LLAMA_BLOCK | {"ffn_norm": "post_attention_layernorm"},
              _LLAMA_TOP, _llama_transforms, "model.layers"),
    "gpt2": ("hf_gpt2", gpt2_config, _GPT2_BLOCK, _GPT2_TOP, _gpt2_transforms, "h"),
}


class GGUFCheckpoint:
    """The tensors of a GGUF file under Hugging Face names, dequantized on request."""

    def __init__(self, file: GGUFFile, block, top, transforms, prefix, ignored=()):
        self.file = file
        self._sources = {}  # Hugging Face key -> (GGUF name, transform or None)
        for name in file.tensors:
            if name in ignored:  # read into the config instead
                continue
            self._sources[self._hf_key(name, block, top, prefix)] = (name, self._transform(
                name, transforms))

    @staticmethod
    def _hf_key(name, block, top, prefix) -> str:
        match = _BLOCK_NAME.match(name)
        if match and match.group(2) in block:
            return f"{prefix}.{match.group(1)}.{block[match.group(2)]}.{match.group(3)}"
        match = _TOP_NAME.match(name)
        if match and match.group(1) in top:
            return f"{top[match.group(1)]}.{match.group(2)}"
        return name  # unknown: reported as an unused tensor under its GGUF name

    @staticmethod
    def _transform(name, transforms):
        match = _BLOCK_NAME.match(name)
        kind = match.group(2) if match else name.split(".")[0]
        if "norm" in transforms and "norm" in kind and name.endswith(".weight"):
            return transforms["norm"]
        return transforms.get(kind) if name.endswith(".weight") else None

    def keys(self):
        return list(self._sources)

    def source(self, key: str):
        """`(GGUF tensor name, transform or None)` behind a Hugging Face key."""
        return self._sources[key]

    def prefetch(self, names) -> None:
        """Dequantize `names` in order on a background thread while the caller builds the
        model (numpy releases the GIL, so with two cores the two overlap). Each tensor is
        dropped once `get` hands it over, so no more than the weights are ever held."""
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(1)
        self._prefetched = {name: pool.submit(self.file.tensor, name) for name in names}
        pool.shutdown(wait=False)  # the thread ends with its last job

    def get(self, key: str) -> np.ndarray:
        name, transform = self._sources[key]
        future = getattr(self, "_prefetched", {}).pop(name, None)
        value = future.result() if future is not None else self.file.tensor(name)
        return transform(value) if transform is not None else value


class GGUFReader:
    """Builds our backbone and tokenizer from a `.gguf` file (metadata, tensors, vocabulary)."""

    def __init__(self, path: str):
        self.path = path
        self.file = GGUFFile(path)
        arch = self.file.metadata.get("general.architecture")
        if arch not in ARCHITECTURES:
            raise ValueError(
                f"{path}: GGUF architecture {arch!r} is not supported. Supported: "
                f"{sorted(ARCHITECTURES)}."
            )
        self.file.check_types()
        module_name, make_config, block, top, transforms, prefix = ARCHITECTURES[arch]
        from importlib import import_module

        self.spec = import_module(f"keras_lm.presets.{module_name}")
        embedding = self.file.tensors.get("token_embd.weight")
        if embedding is None:
            raise ValueError(f"{path} has no token_embd.weight tensor.")
        tied = "output.weight" not in self.file.tensors
        try:
            self.config = make_config(self.file.metadata, embedding.shape[0], tied)
            if "rope_freqs.weight" in self.file.tensors:
                self.config["rope_scaling"] = self._llama3_rope(arch)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path}: {error}") from None
        self.checkpoint = GGUFCheckpoint(self.file, block, top, transforms(self.config), prefix,
                                         ignored=("rope_freqs.weight",))

    def _llama3_rope(self, arch: str) -> dict:
        """Llama 3.1+'s RoPE scaling, which llama.cpp stores as one divisor per frequency
        (`rope_freqs`): the parameters of Llama 3's rule that reproduce those divisors."""
        if arch != "llama" or self.config.get("rope_scaling"):
            raise ValueError("per-frequency RoPE factors (`rope_freqs`) are only supported for "
                             "Llama 3.1 and later, without another RoPE scaling.")
        divisors = np.asarray(self.file.tensor("rope_freqs.weight"), np.float64).reshape(-1)
        head_dim = self.config.get("head_dim") or \
            self.config["hidden_size"] // self.config["num_attention_heads"]
        theta = self.config["rope_theta"]
        base = rope_inverse_frequencies(head_dim, theta).astype(np.float64)
        if divisors.shape != base.shape:
            raise ValueError(f"`rope_freqs` has {divisors.size} values; head_dim {head_dim} "
                             f"needs {base.size}.")
        original = self.file.metadata.get("llama.rope.scaling.original_context_length", 8192)
        for low, high in LLAMA3_ROPE_BANDS:
            scaling = {"rope_type": "llama3", "factor": float(divisors.max()),
                       "low_freq_factor": low, "high_freq_factor": high,
                       "original_max_position_embeddings": int(original)}
            scaled = rope_inverse_frequencies(head_dim, theta, llama3_scaling=scaling)
            if np.allclose(base / scaled, divisors, rtol=1e-3):
                return scaling
        raise ValueError("`rope_freqs` does not follow Llama 3.1's RoPE scaling rule, the only "
                         "per-frequency scaling supported.")

    def backbone_class(self):
        if self.config.get("model_type") == "llama" and \
                self.file.metadata.get("tokenizer.ggml.model") == "gpt2":
            from keras_lm.models.llama3 import Llama3Backbone

            return Llama3Backbone  # Llama 3's byte-level BPE
        return self.spec.BACKBONE_CLASS(self.config)

    def start_loading(self) -> None:
        """Called before the model is built when weights will follow: on JAX, whose variables
        take the dequantized buffers as they are, the tensors are dequantized meanwhile (the
        embedding first). Torch copies each into its variable, so tensors waiting there
        would be held twice: they are dequantized one at a time as the loader asks."""
        from keras_lm.backend.host_arrays import adopts_host_memory

        if not adopts_host_memory():
            return
        names = list(self.file.tensors)
        names.sort(key=lambda name: name != "token_embd.weight")
        self.checkpoint.prefetch(names)

    def build_backbone(self, cls, **overrides):
        try:
            config = self.spec.backbone_config(self.config)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{self.path}: {error}") from None
        config.update(overrides)
        return build_checked(cls, config, self.path)

    def load_weights(self, backbone) -> None:
        conversion = self.spec.conversion_map(backbone, self.checkpoint.keys())
        if self.config.get("model_type") == "gpt2":  # llama.cpp writes wte again as output
            conversion.skipped.add("lm_head.weight")
        apply_conversion(backbone, self.checkpoint, conversion, source=self.path)
        attach_four_bit_groups(backbone, self.checkpoint, conversion)

    def has_tokenizer(self) -> bool:
        return "tokenizer.ggml.tokens" in self.file.metadata

    def tokenizer(self, family_cls, **kwargs):
        from keras_lm.tokenizers.byte_pair_tokenizer import BytePairTokenizer
        from keras_lm.tokenizers.sentence_piece_tokenizer import SentencePieceTokenizer

        metadata = self.file.metadata
        kind = tokenizer_kind(metadata, self.path)
        stops = [metadata[f"tokenizer.ggml.{name}_token_id"] for name in ("eos", "eot", "eom")
                 if f"tokenizer.ggml.{name}_token_id" in metadata]
        if stops:
            kwargs.setdefault("stop_token_ids", [int(i) for i in stops])
        if kind == "llama" and issubclass(family_cls, SentencePieceTokenizer):
            return family_cls(proto=sentencepiece_proto(metadata, self.path), **kwargs)
        if kind == "gpt2" and issubclass(family_cls, BytePairTokenizer):
            vocabulary, merges, special = byte_pair_vocabulary(metadata, self.path)
            return family_cls(vocabulary=vocabulary, merges=merges,
                              unsplittable_tokens=special, **kwargs)
        raise ValueError(
            f"{self.path}: its {kind!r} tokenizer does not fit {family_cls.__name__} "
            "(for example a Llama 3 file, whose byte-level BPE needs the Llama3 classes)."
        )

    def preprocessor_config(self) -> dict:
        config = self.spec.preprocessor_config(self.config)
        add_bos = self.file.metadata.get("tokenizer.ggml.add_bos_token")
        if add_bos is not None and self.config.get("model_type") not in ("gpt2", "qwen2",
                                                                        "qwen3"):
            config["add_start_token"] = bool(add_bos)
        return config

    def task_config(self) -> dict:
        return {}

    @property
    def chat_template(self) -> str | None:
        """The file's Jinja chat template, kept for chat (`tokenizer.chat_template`)."""
        return self.file.metadata.get("tokenizer.chat_template")


def find_gguf(folder: str) -> str | None:
    """The one `.gguf` file in `folder` (None if there is none; an error if several)."""
    found = sorted(f for f in os.listdir(folder) if f.endswith(".gguf"))
    if len(found) > 1:
        raise ValueError(f"{folder} holds several GGUF files ({', '.join(found)}); pass the "
                         "path of the one to load.")
    return os.path.join(folder, found[0]) if found else None
