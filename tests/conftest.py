"""Shared fixtures: tiny random causal LMs and a tiny offline tokenizer with a ChatML template.

Everything here is built locally from configs and a small training corpus, so tests need no
network and no downloaded weights. Other test modules may import the plain functions directly
(``from conftest import make_tiny_model``) or use the fixtures.

Fixtures:

- ``tiny_model``: the :func:`make_tiny_model` factory, called as ``tiny_model("llama")``;
- ``tiny_qwen2``: a ``(model, tokenizer)`` pair, a 4-layer Qwen2 model and the ChatML tokenizer;
- ``tiny_tokenizer``: the byte-level BPE tokenizer with a Qwen-style ChatML chat template;
- ``tiny_tokenizer_no_template``: the same tokenizer without a chat template.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerFast

TINY_VOCAB_SIZE = 512
TINY_NUM_LAYERS = 4
TINY_D_MODEL = 32
TINY_D_FF = 64

# Every model_type that swe_toolkit.models.adapters supports, for parametrized tests.
TINY_ARCHITECTURES: tuple[str, ...] = ("gpt2", "gpt_neox", "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2")

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"

# ChatML as used by Qwen: each turn is "<|im_start|>{role}\n{content}<|im_end|>\n", and the
# generation prompt is "<|im_start|>assistant\n". Newlines sit inside Jinja strings, so the
# whitespace control of the {%- %} tags cannot strip them.
QWEN_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_TRAINING_CORPUS = [
    "Hello world, how are you today?",
    "Tell me a story about a dragon and a knight.",
    "How do I bake bread at home?",
    "You are a helpful assistant. Answer the user politely.",
    "system user assistant",
    "สวัสดี ครับ ขอบคุณ",
    "নমস্কার বন্ধু ধন্যবাদ",
    "Bonjour, comment ça va ?",
]

# Architecture-specific config values; the shared sizes come from _COMMON_CONFIG.
_COMMON_CONFIG: dict[str, Any] = {
    "vocab_size": TINY_VOCAB_SIZE,
    "hidden_size": TINY_D_MODEL,
    "intermediate_size": TINY_D_FF,
    "num_hidden_layers": TINY_NUM_LAYERS,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "max_position_embeddings": 128,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
}
_ARCHITECTURE_CONFIG: dict[str, dict[str, Any]] = {
    "gpt2": {
        "vocab_size": TINY_VOCAB_SIZE,
        "n_embd": TINY_D_MODEL,
        "n_inner": TINY_D_FF,
        "n_layer": TINY_NUM_LAYERS,
        "n_head": 4,
        "n_positions": 128,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
    },
    "gpt_neox": {
        "vocab_size": TINY_VOCAB_SIZE,
        "hidden_size": TINY_D_MODEL,
        "intermediate_size": TINY_D_FF,
        "num_hidden_layers": TINY_NUM_LAYERS,
        "num_attention_heads": 4,
        "max_position_embeddings": 128,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
    },
    "llama": _COMMON_CONFIG,
    "mistral": {**_COMMON_CONFIG, "sliding_window": None},
    "qwen2": _COMMON_CONFIG,
    "qwen3": _COMMON_CONFIG,
    "gemma": {**_COMMON_CONFIG, "hidden_activation": "gelu_pytorch_tanh"},
    "gemma2": {
        **_COMMON_CONFIG,
        "hidden_activation": "gelu_pytorch_tanh",
        "sliding_window": 64,
        "query_pre_attn_scalar": 8,
    },
}


def make_tiny_model(model_type: str, seed: int = 0, **overrides: Any) -> PreTrainedModel:
    """Build a randomly initialized causal LM of ``model_type`` in eval mode, float32, eager attention.

    The default size is 4 layers, d_model 32, d_ff 64 and a 512-token vocabulary, which covers the
    tiny tokenizer. ``overrides`` replace config values. The global torch RNG is left untouched.
    """
    if model_type not in _ARCHITECTURE_CONFIG:
        raise ValueError(f"No tiny config for model_type {model_type!r}; known: {', '.join(_ARCHITECTURE_CONFIG)}.")
    config = AutoConfig.for_model(model_type, **{**_ARCHITECTURE_CONFIG[model_type], **overrides})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    return model.eval()


@functools.lru_cache(maxsize=1)
def _trained_tokenizer_json() -> str:
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=[PAD_TOKEN, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_TRAINING_CORPUS * 4, trainer)
    return backend.to_str()


def make_tiny_tokenizer(chat_template: bool = True) -> PreTrainedTokenizerFast:
    """Build a fresh byte-level BPE tokenizer (under 400 ids) with ChatML special tokens.

    Special token ids: ``<|endoftext|>`` = 0 (pad), ``<|im_start|>`` = 1, ``<|im_end|>`` = 2 (eos).
    There is no BOS token, as in Qwen. ``padding_side`` is the library default, right.
    """
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_trained_tokenizer_json()),
        eos_token=IM_END,
        pad_token=PAD_TOKEN,
    )
    if chat_template:
        tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    return tokenizer


@pytest.fixture
def tiny_model():
    """Factory fixture: ``tiny_model("llama", num_hidden_layers=2)`` returns a fresh tiny model."""
    return make_tiny_model


@pytest.fixture
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    return make_tiny_tokenizer(chat_template=True)


@pytest.fixture
def tiny_tokenizer_no_template() -> PreTrainedTokenizerFast:
    return make_tiny_tokenizer(chat_template=False)


@pytest.fixture
def tiny_qwen2() -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """A fresh 4-layer Qwen2 model and the ChatML tokenizer; tests may modify both."""
    return make_tiny_model("qwen2"), make_tiny_tokenizer(chat_template=True)
