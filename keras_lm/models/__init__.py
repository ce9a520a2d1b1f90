"""Public model classes (KerasHub-compatible names)."""

from keras_lm.models.backbone import Backbone
from keras_lm.models.causal_lm import CausalLM
from keras_lm.models.causal_lm_preprocessor import CausalLMPreprocessor
from keras_lm.models.gemma import (
    GemmaBackbone,
    GemmaCausalLM,
    GemmaCausalLMPreprocessor,
    GemmaTokenizer,
)
from keras_lm.models.gemma3 import (
    Gemma3Backbone,
    Gemma3CausalLM,
    Gemma3CausalLMPreprocessor,
    Gemma3Tokenizer,
)
from keras_lm.models.gpt2 import (
    GPT2Backbone,
    GPT2CausalLM,
    GPT2CausalLMPreprocessor,
    GPT2Tokenizer,
)
from keras_lm.models.llama import (
    LlamaBackbone,
    LlamaCausalLM,
    LlamaCausalLMPreprocessor,
    LlamaTokenizer,
)
from keras_lm.models.llama3 import (
    Llama3Backbone,
    Llama3CausalLM,
    Llama3CausalLMPreprocessor,
    Llama3Tokenizer,
)
from keras_lm.models.mistral import (
    MistralBackbone,
    MistralCausalLM,
    MistralCausalLMPreprocessor,
    MistralTokenizer,
)
from keras_lm.models.opt import (
    OPTBackbone,
    OPTCausalLM,
    OPTCausalLMPreprocessor,
    OPTTokenizer,
)
from keras_lm.models.preprocessor import Preprocessor
from keras_lm.models.qwen import (
    Qwen3Backbone,
    Qwen3CausalLM,
    Qwen3CausalLMPreprocessor,
    Qwen3Tokenizer,
    QwenBackbone,
    QwenCausalLM,
    QwenCausalLMPreprocessor,
    QwenTokenizer,
)
from keras_lm.models.task import Task
from keras_lm.tokenizers.tokenizer import Tokenizer

__all__ = [
    "Backbone",
    "CausalLM",
    "CausalLMPreprocessor",
    "Gemma3Backbone",
    "Gemma3CausalLM",
    "Gemma3CausalLMPreprocessor",
    "Gemma3Tokenizer",
    "GemmaBackbone",
    "GemmaCausalLM",
    "GemmaCausalLMPreprocessor",
    "GemmaTokenizer",
    "GPT2Backbone",
    "GPT2CausalLM",
    "GPT2CausalLMPreprocessor",
    "GPT2Tokenizer",
    "Llama3Backbone",
    "Llama3CausalLM",
    "Llama3CausalLMPreprocessor",
    "Llama3Tokenizer",
    "LlamaBackbone",
    "LlamaCausalLM",
    "LlamaCausalLMPreprocessor",
    "LlamaTokenizer",
    "MistralBackbone",
    "MistralCausalLM",
    "MistralCausalLMPreprocessor",
    "MistralTokenizer",
    "OPTBackbone",
    "OPTCausalLM",
    "OPTCausalLMPreprocessor",
    "OPTTokenizer",
    "Preprocessor",
    "Qwen3Backbone",
    "Qwen3CausalLM",
    "Qwen3CausalLMPreprocessor",
    "Qwen3Tokenizer",
    "QwenBackbone",
    "QwenCausalLM",
    "QwenCausalLMPreprocessor",
    "QwenTokenizer",
    "Task",
    "Tokenizer",
]
