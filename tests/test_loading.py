"""Tests of device and dtype resolution and of load_model on a tiny random Qwen2 model."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from swe_toolkit.errors import ConfigurationError, ModelNotAvailableError
from swe_toolkit.models import load_model, resolve_device, resolve_dtype

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TRAINING_TEXTS = ["What is 2+2? The answer is 4.", "hello world", "system user assistant"]


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer like Qwen's on a few strings. It has no pad token.

    Qwen2Tokenizer rebuilds its backend from the vocabulary and merges with Qwen's byte-level
    pre-tokenizer, so the test tokenizer must be byte-level BPE as well.
    """
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(TRAINING_TEXTS, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-qwen2")
    tokenizer = build_tiny_tokenizer()
    assert tokenizer.pad_token is None

    torch.manual_seed(0)
    config = Qwen2Config(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=128,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        pad_token_id=None,
    )
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def hub_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    # huggingface_hub reads HF_HUB_OFFLINE once at import, so the constant is patched as well.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


# ---------------------------------------------------------------------------------------------
# resolve_device
# ---------------------------------------------------------------------------------------------


def test_resolve_device_auto_follows_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_resolve_device_accepted_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    cases = {
        "cpu": torch.device("cpu"),
        " CPU ": torch.device("cpu"),
        "cuda": torch.device("cuda"),
        "cuda:1": torch.device("cuda", 1),
        torch.device("cpu"): torch.device("cpu"),
        torch.device("cuda", 0): torch.device("cuda", 0),
    }
    for requested, expected in cases.items():
        assert resolve_device(requested) == expected, requested


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cuda:-1", "", "cpu:0:1", "tpu", "meta"])
def test_resolve_device_invalid_string(device: str) -> None:
    with pytest.raises(ConfigurationError, match="device"):
        resolve_device(device)


def test_resolve_device_invalid_type() -> None:
    with pytest.raises(ConfigurationError, match="int"):
        resolve_device(0)  # type: ignore[arg-type]


def test_resolve_device_unsupported_torch_device() -> None:
    with pytest.raises(ConfigurationError, match="meta"):
        resolve_device(torch.device("meta"))


def test_resolve_device_cuda_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigurationError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ConfigurationError, match="CUDA is not available"):
        resolve_device(torch.device("cuda", 0))


def test_resolve_device_cuda_index_out_of_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigurationError, match="only 1 CUDA device"):
        resolve_device("cuda:1")


# ---------------------------------------------------------------------------------------------
# resolve_dtype
# ---------------------------------------------------------------------------------------------


def test_resolve_dtype_default_per_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_dtype(None, "cpu") == torch.float32
    assert resolve_dtype(None, "cuda") == torch.bfloat16
    assert resolve_dtype(None, torch.device("cuda", 0)) == torch.bfloat16


def test_resolve_dtype_auto_follows_native_bfloat16(monkeypatch: pytest.MonkeyPatch) -> None:
    import swe_toolkit.models.loading as loading

    monkeypatch.setattr(loading, "cpu_has_native_bfloat16", lambda: True)
    assert resolve_dtype("auto", "cpu") == torch.bfloat16
    monkeypatch.setattr(loading, "cpu_has_native_bfloat16", lambda: False)
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype(" AUTO ", "cpu") == torch.float32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_dtype("auto", "cuda") == torch.bfloat16


def test_cpu_has_native_bfloat16_reads_cpu_flags(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    import swe_toolkit.models.loading as loading

    real_path = loading.Path
    for flags, expected in (("fpu avx2 avx512f", False), ("fpu avx512_bf16", True), ("amx_bf16 amx_tile", True)):
        info = tmp_path / "cpuinfo"
        info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\n")
        monkeypatch.setattr(loading, "Path", lambda _name, info=info: info)
        assert loading.cpu_has_native_bfloat16() is expected, flags
    monkeypatch.setattr(loading, "Path", lambda _name: tmp_path / "missing")
    assert loading.cpu_has_native_bfloat16() is False
    monkeypatch.setattr(loading, "Path", real_path)


def test_resolve_dtype_names_and_dtypes() -> None:
    cases = {
        "float32": torch.float32,
        "bfloat16": torch.bfloat16,
        "float16": torch.float16,
        " BFloat16 ": torch.bfloat16,
        "torch.float16": torch.float16,
        torch.float32: torch.float32,
        torch.bfloat16: torch.bfloat16,
        torch.float16: torch.float16,
    }
    for requested, expected in cases.items():
        assert resolve_dtype(requested, "cpu") == expected, requested


@pytest.mark.parametrize("dtype", ["fp32", "float64", "automatic", "", "int8", torch.float64, torch.int8, 32])
def test_resolve_dtype_invalid(dtype: object) -> None:
    with pytest.raises(ConfigurationError, match="dtype"):
        resolve_dtype(dtype, "cpu")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# load_model on a local folder
# ---------------------------------------------------------------------------------------------


def test_load_model_local_folder_defaults(tiny_model_dir: Path) -> None:
    model, tokenizer = load_model(tiny_model_dir, device="cpu")

    assert isinstance(model, Qwen2ForCausalLM)
    assert model.training is False
    assert model.device == torch.device("cpu")
    assert model.dtype == torch.float32
    assert all(parameter.dtype == torch.float32 for parameter in model.parameters())
    assert tokenizer.padding_side == "left"
    # Qwen2Tokenizer brings its own pad token, which load_model keeps.
    assert tokenizer.pad_token == "<|endoftext|>"
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    assert "<|im_start|>assistant" in tokenizer.apply_chat_template(
        [{"role": "user", "content": "hello"}], add_generation_prompt=True, tokenize=False
    )


def test_load_model_string_path_and_dtype(tiny_model_dir: Path) -> None:
    model, _ = load_model(str(tiny_model_dir), device="auto", dtype="bfloat16")

    expected_device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    assert model.device.type == expected_device.type
    assert model.dtype == torch.bfloat16
    assert all(parameter.dtype == torch.bfloat16 for parameter in model.parameters())


def test_load_model_left_padded_generation(tiny_model_dir: Path) -> None:
    model, tokenizer = load_model(tiny_model_dir, device="cpu")
    batch = tokenizer(["hello", "What is 2+2? The answer"], return_tensors="pt", padding=True)

    assert batch["attention_mask"][0, 0].item() == 0
    assert batch["attention_mask"][0, -1].item() == 1
    output = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert output.shape == (2, batch["input_ids"].shape[1] + 3)


def test_load_model_pads_with_eos_without_pad_token(tmp_path: Path) -> None:
    # AutoTokenizer loads a Qwen2 folder as Qwen2Tokenizer, whose pad token defaults to <|endoftext|>,
    # so this test uses a Llama folder, whose tokenizer keeps the missing pad token.
    tokenizer = build_tiny_tokenizer()
    config = LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None, pad_token_id=None,
    )
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path).pad_token is None

    model, loaded = load_model(tmp_path, device="cpu")

    assert loaded.pad_token == "<|im_end|>"
    assert loaded.pad_token_id == loaded.eos_token_id
    assert loaded.padding_side == "left"
    assert model.generation_config.pad_token_id == loaded.eos_token_id


def test_load_model_logs_source(tiny_model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="swe_toolkit.models.loading"):
        load_model(tiny_model_dir, device="cpu")

    messages = [record.getMessage() for record in caplog.records if record.name == "swe_toolkit.models.loading"]
    assert any(f"local folder {tiny_model_dir}" in message for message in messages), messages
    assert any("Qwen2ForCausalLM" in message and "float32" in message for message in messages), messages


def test_load_model_rejects_revision_for_folder(tiny_model_dir: Path) -> None:
    with pytest.raises(ConfigurationError, match="revision"):
        load_model(tiny_model_dir, device="cpu", revision="main")


def test_load_model_invalid_device_before_loading(tiny_model_dir: Path) -> None:
    with pytest.raises(ConfigurationError, match="device"):
        load_model(tiny_model_dir, device="gpu0")
    with pytest.raises(ConfigurationError, match="dtype"):
        load_model(tiny_model_dir, device="cpu", dtype="float64")


def test_load_model_missing_local_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelNotAvailableError, match="does not exist"):
        load_model(missing, device="cpu")
    with pytest.raises(ModelNotAvailableError, match="does not exist"):
        load_model(f"{missing}", device="cpu")


def test_load_model_file_instead_of_folder(tiny_model_dir: Path) -> None:
    with pytest.raises(ModelNotAvailableError, match="is a file"):
        load_model(tiny_model_dir / "config.json", device="cpu")


def test_load_model_folder_without_model(tmp_path: Path) -> None:
    with pytest.raises(ModelNotAvailableError, match="has no config.json"):
        load_model(tmp_path, device="cpu")


def test_load_model_folder_without_tokenizer(tmp_path: Path) -> None:
    config = Qwen2Config(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, vocab_size=64,
    )
    Qwen2ForCausalLM(config).save_pretrained(tmp_path)

    with pytest.raises(ModelNotAvailableError, match="tokenizer files"):
        load_model(tmp_path, device="cpu")


# ---------------------------------------------------------------------------------------------
# Hub ids and trust_remote_code
# ---------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("hub_offline")
def test_load_model_unknown_hub_id_offline() -> None:
    hub_id = "swe-toolkit-tests/no-such-model"
    with pytest.raises(ModelNotAvailableError) as raised:
        load_model(hub_id, device="cpu")

    message = str(raised.value)
    assert f"Could not load {hub_id!r}" in message
    assert "local model folder" in message
    assert "qwen2.5-coder-0.5b-instruct" in message
    assert isinstance(raised.value.__cause__, OSError)


@pytest.mark.usefixtures("hub_offline")
def test_load_model_upstream_hub_id_suggests_offline_name() -> None:
    with pytest.raises(ModelNotAvailableError, match="offline model 'qwen2.5-coder-1.5b-instruct'"):
        load_model("Qwen/Qwen2.5-Coder-1.5B-Instruct", device="cpu", revision="main")


def test_load_model_trust_remote_code_default_false() -> None:
    parameter = inspect.signature(load_model).parameters["trust_remote_code"]
    assert parameter.default is False
    assert parameter.kind is inspect.Parameter.KEYWORD_ONLY


@pytest.mark.parametrize("trust_remote_code", [None, False, True])
def test_load_model_passes_trust_remote_code(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, trust_remote_code: bool | None
) -> None:
    calls: dict[str, dict] = {}
    real_model_loader = AutoModelForCausalLM.from_pretrained.__func__
    real_tokenizer_loader = AutoTokenizer.from_pretrained.__func__

    def spy_model_loader(cls, *args, **kwargs):
        calls["model"] = kwargs
        return real_model_loader(cls, *args, **kwargs)

    def spy_tokenizer_loader(cls, *args, **kwargs):
        calls["tokenizer"] = kwargs
        return real_tokenizer_loader(cls, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(spy_model_loader))
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", classmethod(spy_tokenizer_loader))

    if trust_remote_code is None:
        load_model(tiny_model_dir, device="cpu")
        expected = False
    else:
        load_model(tiny_model_dir, device="cpu", trust_remote_code=trust_remote_code)
        expected = trust_remote_code

    assert calls["model"]["trust_remote_code"] is expected
    assert calls["tokenizer"]["trust_remote_code"] is expected
    assert calls["model"]["dtype"] == torch.float32


def test_offline_name_typo_suggests_match() -> None:
    with pytest.raises(ConfigurationError, match="did you mean 'qwen2.5-coder-0.5b-instruct'"):
        load_model("qwen2.5-coder-0.5b-instrct")
