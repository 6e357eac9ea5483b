"""Hugging Face safetensors -> GGUF, written with the `gguf` package (no llama.cpp scripts needed).

    hf_to_gguf(hf_dir, out_path, outtype="f16", metadata=None) -> out_path

Supported architectures: the llama family as llama.cpp's `llama` architecture reads it
(`LlamaForCausalLM`: Llama 1/2/3/3.1/3.2, SmolLM/SmolLM2, TinyLlama, ...; `MistralForCausalLM`:
Mistral 7B v0.1-v0.3 and other Mistral-layout models). Anything else raises
`UnsupportedArchitecture` (exit 4) rather than writing a file llama.cpp would misread.

Output types written here: F32, F16, BF16 and Q8_0. Every other llama.cpp type is made from one
of these by `llama_model_quantize` (see llmtools.ops.quantize).

What is carried over: all weights (Q/K projections permuted the way llama.cpp's rotary embedding
expects), tied embeddings (no `output.weight`: llama.cpp then reuses `token_embd`), the tokenizer
(GPT-2 style byte-level BPE from tokenizer.json, SentencePiece from tokenizer.model, or a
byte-fallback BPE tokenizer.json as SentencePiece-style `llama` vocab), special token ids,
add-BOS/add-EOS, the chat template, and any extra metadata the caller passes.

Nothing here imports torch, numpy or gguf at module import time.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from llmtools import errors

# HF architecture name -> GGUF architecture written. Both go through llama.cpp's `llama` graph.
SUPPORTED_ARCHITECTURES: dict[str, str] = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
}

OUTTYPES = ("f32", "f16", "bf16", "q8_0")

# llama_ftype values stored in general.file_type (llama.h)
_FILE_TYPE = {"f32": 0, "f16": 1, "q8_0": 7, "bf16": 32}

# The llama.cpp pre-tokenizer names we can recognise from tokenizer.json's structure.
_LLAMA3_REGEX_HEAD = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"


class UnsupportedArchitecture(errors.LLMToolsError):
    """The model's architecture is not one this converter writes (exit 4)."""

    exit_code = errors.ExitCode.MISSING


class CorruptModel(errors.LLMToolsError):
    """A model file that cannot be read (truncated safetensors, bad JSON, bad GGUF) (exit 3)."""

    exit_code = errors.ExitCode.BAD_INPUT


# --------------------------------------------------------------------------- config


def read_config(hf_dir: str | os.PathLike) -> dict:
    path = Path(hf_dir) / "config.json"
    if not path.is_file():
        raise errors.MissingDependency(f"{hf_dir}: not a Hugging Face model directory (no config.json)")
    try:
        with open(path, encoding="utf-8") as fh:
            config = json.load(fh)
    except ValueError as exc:
        raise CorruptModel(f"{path}: invalid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise CorruptModel(f"{path}: expected a JSON object")
    return config


def check_architecture(config: Mapping[str, Any], where: str = "model") -> str:
    """The HF architecture name, or UnsupportedArchitecture (exit 4) naming what is supported."""
    archs = config.get("architectures") or []
    arch = archs[0] if archs else None
    if arch is None and config.get("model_type") in ("llama", "mistral"):
        arch = "LlamaForCausalLM" if config["model_type"] == "llama" else "MistralForCausalLM"
    if arch not in SUPPORTED_ARCHITECTURES:
        supported = ", ".join(SUPPORTED_ARCHITECTURES)
        raise UnsupportedArchitecture(
            f"{where}: architecture {arch or config.get('model_type') or 'unknown'!s} is not supported for GGUF "
            f"conversion (supported: {supported} - Llama, SmolLM, Mistral). Convert it with llama.cpp's "
            "convert_hf_to_gguf.py and pass the .gguf file instead: quantizing any llama.cpp GGUF works"
        )
    return arch


def _rope(config: Mapping[str, Any]) -> tuple[float, dict]:
    """(rope_theta, rope scaling dict) from either the transformers 4 or 5 config layout."""
    params = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or {}
    theta = config.get("rope_theta", params.get("rope_theta", 10000.0))
    if not scaling and params.get("rope_type", "default") != "default":
        scaling = params
    return float(theta), dict(scaling)


def _llama3_rope_factors(config: Mapping[str, Any], theta: float, head_dim: int, scaling: Mapping[str, Any]):
    """Per-frequency scaling factors of Llama 3.1's `llama3` rope, stored as rope_freqs.weight."""
    import numpy as np

    factor = float(scaling.get("factor", 8.0))
    low = float(scaling.get("low_freq_factor", 1.0))
    high = float(scaling.get("high_freq_factor", 4.0))
    old_ctx = float(scaling.get("original_max_position_embeddings", 8192))
    freqs = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, dtype=np.float32)


# --------------------------------------------------------------------------- weights


def _safetensor_files(hf_dir: Path) -> list[Path]:
    index = hf_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            with open(index, encoding="utf-8") as fh:
                names = sorted(set(json.load(fh)["weight_map"].values()))
        except (ValueError, KeyError) as exc:
            raise CorruptModel(f"{index}: unreadable index: {exc}") from None
        return [hf_dir / n for n in names]
    files = sorted(hf_dir.glob("*.safetensors"))
    if not files:
        if any(hf_dir.glob("*.bin")) or any(hf_dir.glob("*.pt")):
            raise errors.MissingDependency(
                f"{hf_dir}: only pickle weights (.bin/.pt); save the model with safe_serialization=True first"
            )
        raise errors.MissingDependency(f"{hf_dir}: no .safetensors weights found")
    return files


def iter_hf_tensors(hf_dir: str | os.PathLike) -> Iterator[tuple[str, Any]]:
    """Yield (name, float32 numpy array) for every tensor in the model's safetensors files."""
    torch = errors.require("torch", "train", "reading safetensors weights")
    safetensors = errors.require("safetensors", "train")
    for path in _safetensor_files(Path(hf_dir)):
        try:
            handle = safetensors.safe_open(str(path), framework="pt")
        except Exception as exc:  # safetensors raises its own error types for truncated headers
            raise CorruptModel(f"{path}: not a readable safetensors file: {exc}") from None
        with handle as fh:
            for name in fh.keys():
                try:
                    tensor = fh.get_tensor(name)
                except Exception as exc:
                    raise CorruptModel(f"{path}: tensor {name} unreadable: {exc}") from None
                yield name, tensor.to(torch.float32).numpy()


def permute_qk(weights, n_head: int, n_head_kv: int | None = None):
    """Reorder Q/K rows from HF's rotate-half layout to llama.cpp's interleaved rotary layout.

    HF keeps each head's rotary pairs as (first half, second half); llama.cpp's rope (type
    NORM) rotates adjacent pairs. Within each head the rows go from [h0, h1] halves to
    interleaved (h0[0], h1[0], h0[1], h1[1], ...).
    """
    heads = n_head_kv if n_head_kv is not None and n_head_kv != n_head else n_head
    shape = weights.shape
    return weights.reshape(heads, 2, shape[0] // heads // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def unpermute_qk(weights, n_head: int, n_head_kv: int | None = None):
    """The inverse of `permute_qk` (llama.cpp layout back to HF's)."""
    heads = n_head_kv if n_head_kv is not None and n_head_kv != n_head else n_head
    shape = weights.shape
    return weights.reshape(heads, shape[0] // heads // 2, 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


_BLOCK_RE = re.compile(r"^model\.layers\.(\d+)\.")


def _tensor_type(gguf, name: str, data, outtype: str):
    """The GGML type a tensor is stored as: norms/biases/1-D stay F32, like llama.cpp does."""
    T = gguf.GGMLQuantizationType
    if data.ndim <= 1 or name.endswith("_norm.weight") or name.endswith(".bias"):
        return T.F32
    if outtype == "f32":
        return T.F32
    if outtype == "f16":
        return T.F16
    if outtype == "bf16":
        return T.BF16
    # q8_0 needs rows that are whole 32-value blocks; other rows stay F16 (as convert_hf_to_gguf does)
    return T.Q8_0 if data.shape[-1] % 32 == 0 else T.F16


# --------------------------------------------------------------------------- tokenizer


def _pre_tokenizer_name(tokenizer_json: Mapping[str, Any]) -> str | None:
    """Recognise llama.cpp's pre-tokenizer from tokenizer.json's structure; None if unknown."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    types = [p.get("type") for p in parts]
    if types == ["ByteLevel"] and parts[0].get("use_regex", True):
        return "gpt-2"
    if types == ["Digits", "ByteLevel"] and parts[0].get("individual_digits") and parts[1].get("use_regex", True):
        return "smollm"  # individual digits, then the GPT-2 regex (SmolLM, StarCoder)
    if types and types[0] == "Split":
        pattern = (parts[0].get("pattern") or {}).get("Regex", "")
        if pattern.startswith(_LLAMA3_REGEX_HEAD):
            return "llama-bpe"
    return None


def _pre_from_source_gguf(hf_dir: Path) -> str | None:
    """For an HF directory that llmtools converted from a GGUF, that GGUF's pre-tokenizer name.

    transformers' GGUF-to-HF conversion writes a plain ByteLevel pre-tokenizer, losing details
    such as SmolLM's digit splitting; the source file still knows them.
    """
    from llmtools import provenance

    manifest = provenance.read_manifest(str(hf_dir)) or {}
    base = manifest.get("base_model") if isinstance(manifest.get("base_model"), dict) else {}
    source = base.get("path") if manifest.get("kind") == "gguf-to-hf" else None
    if not source or not str(source).endswith(".gguf") or not os.path.isfile(source):
        return None
    try:
        import gguf

        field = gguf.GGUFReader(source, "r").fields.get("tokenizer.ggml.pre")
        return str(field.contents()) if field is not None else None
    except Exception:
        return None


def _bpe_vocab(hf_dir: Path, tokenizer_json: Mapping[str, Any], n_vocab: int):
    """tokens, token types for a byte-level BPE tokenizer.json (GPT-2 style)."""
    import gguf

    vocab: dict[str, int] = dict(tokenizer_json["model"]["vocab"])
    added = {t["content"]: t for t in tokenizer_json.get("added_tokens") or []}
    for content, tok in added.items():
        vocab.setdefault(content, tok["id"])
    by_id = {i: t for t, i in vocab.items()}
    size = max(n_vocab, max(by_id) + 1 if by_id else 0)
    tokens, types = [], []
    for i in range(size):
        text = by_id.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif text in added:
            tokens.append(text)
            types.append(gguf.TokenType.CONTROL if added[text].get("special") else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(text)
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def _pad_list(values: list, size: int, filler: Callable[[int], Any]) -> list:
    return values + [filler(i) for i in range(len(values), size)]


def add_vocab(writer, hf_dir: str | os.PathLike, n_vocab: int, warn: Callable[[str], None] | None = None) -> dict:
    """Write the tokenizer into `writer`; returns a description of what was written."""
    import gguf

    hf = Path(hf_dir)
    tj_path = hf / "tokenizer.json"
    tokenizer_json = None
    if tj_path.is_file():
        try:
            with open(tj_path, encoding="utf-8") as fh:
                tokenizer_json = json.load(fh)
        except ValueError as exc:
            raise CorruptModel(f"{tj_path}: invalid JSON: {exc}") from None
    tj_model = (tokenizer_json or {}).get("model") or {}
    byte_level_bpe = (
        tj_model.get("type") == "BPE"
        and not tj_model.get("byte_fallback", False)
        and ((tokenizer_json or {}).get("decoder") or {}).get("type") == "ByteLevel"
    )
    info: dict[str, Any] = {}
    if byte_level_bpe:
        tokens, types = _bpe_vocab(hf, tokenizer_json, n_vocab)
        pre = _pre_from_source_gguf(hf) or _pre_tokenizer_name(tokenizer_json)
        if pre is None:
            pre = "default"
            if warn:
                warn("unrecognised pre-tokenizer in tokenizer.json; wrote tokenizer.ggml.pre=default, "
                     "so llama.cpp may split some text differently from the original tokenizer")
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre)
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        info = {"model": "gpt2", "pre": pre, "tokens": len(tokens)}
    elif (hf / "tokenizer.model").is_file() or tj_model.get("type") in ("BPE", "Unigram"):
        if (hf / "tokenizer.model").is_file():
            errors.require("sentencepiece", "train", "SentencePiece tokenizer.model")
            vocab = gguf.vocab.SentencePieceVocab(hf)
        else:
            vocab = gguf.vocab.LlamaHfVocab(hf)
        tokens, scores, types = [], [], []
        for text, score, typ in vocab.all_tokens():
            tokens.append(text)
            scores.append(score)
            types.append(typ)
        if len(tokens) > n_vocab:
            raise CorruptModel(f"{hf}: tokenizer has {len(tokens)} tokens, more than the model's {n_vocab} embeddings")
        tokens = _pad_list(tokens, n_vocab, lambda i: f"[PAD{i}]".encode())
        scores = _pad_list(scores, n_vocab, lambda i: -1000.0)
        types = _pad_list(types, n_vocab, lambda i: gguf.TokenType.UNUSED)
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        info = {"model": "llama", "pre": "default", "tokens": len(tokens)}
    else:
        raise errors.MissingDependency(f"{hf}: no tokenizer.json or tokenizer.model to carry into the GGUF")

    special = gguf.SpecialVocab(hf, load_merges=info["model"] == "gpt2", n_vocab=n_vocab)
    special.add_to_gguf(writer, quiet=True)
    if "bos" not in special.add_special_token:
        writer.add_add_bos_token(info["model"] == "llama")  # SentencePiece llamas add BOS by default
    info["add_bos"] = special.add_special_token.get("bos", info["model"] == "llama")
    info["special_ids"] = dict(special.special_token_ids)
    info["chat_template"] = special.chat_template is not None
    info["merges"] = len(special.merges)
    return info


# --------------------------------------------------------------------------- writer


def _add_metadata(writer, metadata: Mapping[str, Any]) -> None:
    for key, value in metadata.items():
        if value is None:
            continue
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            if key.endswith(".count") and 0 <= value < 2**32:
                writer.add_uint32(key, value)  # GGUF's general.*.count keys are uint32
            elif abs(value) >= 2**31:
                writer.add_int64(key, value)
            else:
                writer.add_int32(key, value)
        elif isinstance(value, float):
            writer.add_float64(key, value)
        elif isinstance(value, (list, tuple)):
            writer.add_array(key, list(value))
        elif isinstance(value, (dict,)):
            writer.add_string(key, json.dumps(value, sort_keys=True))
        else:
            writer.add_string(key, str(value))


def hf_to_gguf(
    hf_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    outtype: str = "f16",
    metadata: Mapping[str, Any] | None = None,
    *,
    drop_layers: set[int] | None = None,
    transform: Callable[[str, Any], Any] | None = None,
    warn: Callable[[str], None] | None = None,
) -> str:
    """Write `hf_dir` (safetensors, llama family) as a GGUF file of `outtype`; returns out_path.

    `metadata` adds GGUF key/values (e.g. `general.source.url`, `llmtools.*`). `drop_layers`
    removes those transformer blocks and renumbers the rest. `transform(hf_name, array)` may
    rewrite a weight (float32 numpy) before it is stored, e.g. for magnitude pruning. The file
    is written to a temp file beside `out_path` and renamed into place.
    """
    gguf = errors.require("gguf", "gguf", "writing GGUF files")
    import numpy as np

    outtype = outtype.lower()
    if outtype not in OUTTYPES:
        raise errors.UsageError(f"outtype must be one of {', '.join(OUTTYPES)}, not {outtype!r}")
    hf = Path(hf_dir)
    config = read_config(hf)
    arch_hf = check_architecture(config, str(hf))
    arch = SUPPORTED_ARCHITECTURES[arch_hf]

    n_layers = int(config["num_hidden_layers"])
    hidden = int(config["hidden_size"])
    n_head = int(config["num_attention_heads"])
    n_head_kv = int(config.get("num_key_value_heads") or n_head)
    head_dim = int(config.get("head_dim") or hidden // n_head)
    n_vocab = int(config["vocab_size"])
    tied = bool(config.get("tie_word_embeddings", False))
    theta, scaling = _rope(config)
    drop = set(drop_layers or ())
    bad = sorted(i for i in drop if not 0 <= i < n_layers)
    if bad:
        raise errors.UsageError(f"layers to prune {bad} are outside 0..{n_layers - 1}")
    if len(drop) >= n_layers:
        raise errors.UsageError("cannot prune every layer")
    kept = [i for i in range(n_layers) if i not in drop]
    renumber = {old: new for new, old in enumerate(kept)}

    out_path = str(out_path)
    folder = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(out_path)}.", suffix=".tmp", dir=folder)
    os.close(fd)
    writer = gguf.GGUFWriter(tmp, arch)
    try:
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name(str((metadata or {}).get("general.name") or hf.resolve().name))
        writer.add_block_count(len(kept))
        writer.add_context_length(int(config.get("max_position_embeddings") or 2048))
        writer.add_embedding_length(hidden)
        writer.add_feed_forward_length(int(config["intermediate_size"]))
        writer.add_head_count(n_head)
        writer.add_head_count_kv(n_head_kv)
        writer.add_rope_freq_base(theta)
        writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-5)))
        writer.add_vocab_size(n_vocab)
        writer.add_rope_dimension_count(head_dim)
        if head_dim != hidden // n_head:
            writer.add_key_length(head_dim)
            writer.add_value_length(head_dim)
        rope_type = scaling.get("rope_type") or scaling.get("type")
        if rope_type == "linear":
            writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            writer.add_rope_scaling_factor(float(scaling["factor"]))
        elif rope_type == "yarn":
            writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
            writer.add_rope_scaling_factor(float(scaling["factor"]))
            writer.add_rope_scaling_orig_ctx_len(int(scaling["original_max_position_embeddings"]))
        elif rope_type not in (None, "default", "llama3"):
            raise UnsupportedArchitecture(f"{hf}: rope scaling {rope_type!r} is not supported for GGUF conversion")
        writer.add_file_type(_FILE_TYPE[outtype])
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

        add_vocab(writer, hf, n_vocab, warn=warn)
        _add_metadata(writer, {k: v for k, v in (metadata or {}).items() if k != "general.name"})

        name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)
        if rope_type == "llama3":
            factors = _llama3_rope_factors(config, theta, head_dim, scaling)
            writer.add_tensor(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", factors)
        for name, data in iter_hf_tensors(hf):
            if name.endswith(".rotary_emb.inv_freq"):
                continue
            if name == "lm_head.weight" and tied:
                continue  # llama.cpp reuses token_embd when output.weight is absent
            m = _BLOCK_RE.match(name)
            if m and int(m.group(1)) in drop:
                continue
            if transform is not None:
                data = transform(name, data)
            if name.endswith("q_proj.weight") or name.endswith("q_proj.bias"):
                data = permute_qk(data, n_head, n_head)
            elif name.endswith("k_proj.weight") or name.endswith("k_proj.bias"):
                data = permute_qk(data, n_head, n_head_kv)
            new_name = name_map.get_name(name, try_suffixes=(".weight", ".bias"))
            if new_name is None:
                raise UnsupportedArchitecture(f"{hf}: tensor {name} has no GGUF equivalent for {arch_hf}")
            if m:
                new_name = new_name.replace(f"blk.{m.group(1)}.", f"blk.{renumber[int(m.group(1))]}.", 1)
            qtype = _tensor_type(gguf, new_name, data, outtype)
            if qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
                stored = gguf.quants.quantize(np.ascontiguousarray(data), qtype)
                writer.add_tensor(new_name, stored)
            else:
                stored = gguf.quants.quantize(np.ascontiguousarray(data, dtype=np.float32), qtype)
                writer.add_tensor(new_name, stored, raw_shape=stored.shape, raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out_path)
    except BaseException:
        try:
            writer.close()
        except Exception:
            pass
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return out_path
