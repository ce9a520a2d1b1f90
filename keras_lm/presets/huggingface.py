"""Hugging Face checkpoint folders: config.json + safetensors + tokenizer files."""

import os

from keras_lm.checks import json_object, read_json_file
from keras_lm.presets.conversion import ConversionMap, apply_conversion, build_checked
from keras_lm.presets.safetensors_io import SafetensorsCheckpoint


def _architectures():
    from keras_lm.presets import hf_gemma, hf_gemma3, hf_gpt2, hf_llama, hf_mistral, hf_opt, hf_qwen

    return {"gpt2": hf_gpt2, "llama": hf_llama, "gemma3_text": hf_gemma3, "opt": hf_opt,
            "mistral": hf_mistral, "gemma": hf_gemma, "gemma2": hf_gemma, "qwen2": hf_qwen,
            "qwen3": hf_qwen}


class HuggingFaceReader:
    """Builds our backbone and tokenizer from a Hugging Face model folder."""

    def __init__(self, path: str, config: dict):
        self.path = path
        self.config = config
        model_type = config.get("model_type")
        architectures = _architectures()
        if model_type not in architectures:
            raise ValueError(
                f"Unsupported Hugging Face model_type {model_type!r} in {path}. "
                f"Supported: {sorted(architectures)}."
            )
        self.spec = architectures[model_type]

    def backbone_class(self):
        return self.spec.BACKBONE_CLASS(self.config, self.path)

    def build_backbone(self, cls, **overrides):
        source = os.path.join(self.path, "config.json")
        try:
            config = self.spec.backbone_config(self.config)
        except KeyError as error:
            raise ValueError(
                f"{source} lacks the key {error.args[0]!r}, which a "
                f"{self.config.get('model_type')} checkpoint needs."
            ) from None
        except (TypeError, ValueError) as error:
            raise ValueError(f"{source}: {error}") from None
        config.update(overrides)
        return build_checked(cls, config, source)

    def load_weights(self, backbone) -> None:
        checkpoint = SafetensorsCheckpoint(self.path)
        conversion: ConversionMap = self.spec.conversion_map(backbone, checkpoint.keys())
        apply_conversion(backbone, checkpoint, conversion, source=self.path)

    def has_tokenizer(self) -> bool:
        return any(
            os.path.isfile(os.path.join(self.path, name))
            for name in ("tokenizer.json", "vocab.json", "tokenizer.model")
        )

    def tokenizer(self, family_cls, **kwargs):
        stops = self.generation_stop_ids()
        if stops:
            kwargs.setdefault("stop_token_ids", stops)
        return self.spec.build_tokenizer(family_cls, self.path, self.config, **kwargs)

    def generation_stop_ids(self) -> list[int]:
        """`eos_token_id` of `generation_config.json` (an id or a list), if the folder has it."""
        path = os.path.join(self.path, "generation_config.json")
        if not os.path.isfile(path):
            return []
        eos = json_object(read_json_file(path, "generation config"), path,
                          "generation config").get("eos_token_id")
        ids = eos if isinstance(eos, list) else [eos]
        if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                   for i in ids if i is not None):
            raise ValueError(f"{path}: `eos_token_id` must be a token id or a list of them.")
        return [i for i in ids if i is not None]

    @property
    def chat_template(self) -> str | None:
        """`chat_template.jinja`, else `tokenizer_config.json`'s `chat_template` (a string, or
        named templates of which the `default` one)."""
        jinja = os.path.join(self.path, "chat_template.jinja")
        if os.path.isfile(jinja):
            with open(jinja, encoding="utf-8") as f:
                return f.read()
        path = os.path.join(self.path, "tokenizer_config.json")
        if not os.path.isfile(path):
            return None
        template = json_object(read_json_file(path, "tokenizer config"), path,
                               "tokenizer config").get("chat_template")
        if isinstance(template, list):
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default")
        if template is not None and not isinstance(template, str):
            raise ValueError(f"{path}: `chat_template` must be a string or a list of named "
                             "templates.")
        return template

    def preprocessor_config(self) -> dict:
        return self.spec.preprocessor_config(self.config)

    def task_config(self) -> dict:
        return {}

