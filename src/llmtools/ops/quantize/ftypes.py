"""Quantization type names for `quantize --to`, mapped to llama.cpp's LLAMA_FTYPE_* constants.

The table is read from the installed llama_cpp module (every `LLAMA_FTYPE_MOSTLY_*` it defines),
so new llama.cpp types are offered without a code change. Nothing heavy is imported at module
import time: `names()` uses a static list for --help, `ftype_of()` asks llama_cpp.
"""

from __future__ import annotations

from llmtools import errors

# Types written by llmtools itself from a Hugging Face directory (models.gguf_writer).
WRITTEN_BY_US = ("F32", "F16", "BF16", "Q8_0")

# Shown in --help without importing llama_cpp; `available()` is the authoritative list.
KNOWN = (
    "F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q5_0", "Q5_1", "Q4_K_M", "Q4_K_S",
    "Q4_0", "Q4_1", "Q3_K_L", "Q3_K_M", "Q3_K_S", "Q2_K", "Q2_K_S", "IQ4_NL", "IQ4_XS", "IQ3_M",
    "IQ3_S", "IQ3_XS", "IQ3_XXS", "IQ2_M", "IQ2_S", "IQ2_XS", "IQ2_XXS", "IQ1_M", "IQ1_S", "TQ1_0",
    "TQ2_0",
)

# llama.cpp refuses these without an importance matrix (llama-imatrix output): at ~1.5-2.3 bits
# per weight the quantizer needs to know which weights matter. llmtools does not compute one.
NEEDS_IMATRIX = frozenset({"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "Q2_K_S"})

# Usable without an imatrix but clearly better with one (llama.cpp's quantize warns about them).
BETTER_WITH_IMATRIX = frozenset({"IQ2_M", "IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M"})

# Ternary types are only meaningful for models trained ternary (BitNet-style).
TERNARY = frozenset({"TQ1_0", "TQ2_0"})


def normalise(name: str) -> str:
    return name.strip().upper().replace("-", "_")


def available() -> dict[str, int]:
    """{TYPE: llama_ftype} for every file type the installed llama.cpp can write."""
    llama_cpp = errors.require("llama_cpp", "gguf", "quantizing with llama.cpp")
    table: dict[str, int] = {}
    for attr in dir(llama_cpp):
        if attr.startswith("LLAMA_FTYPE_MOSTLY_"):
            table[attr[len("LLAMA_FTYPE_MOSTLY_"):]] = int(getattr(llama_cpp, attr))
    if hasattr(llama_cpp, "LLAMA_FTYPE_ALL_F32"):
        table["F32"] = int(llama_cpp.LLAMA_FTYPE_ALL_F32)
    return table


def check_type(name: str) -> str:
    """Normalise and validate a --to name without importing llama_cpp (for F32/F16/BF16/Q8_0)."""
    norm = normalise(name)
    if norm in NEEDS_IMATRIX:
        raise errors.UsageError(
            f"{norm} needs an importance matrix (llama.cpp's llama-imatrix), which llmtools quantize does not "
            "compute; use IQ2_M, IQ3_XXS/IQ3_S/IQ3_M, Q2_K or Q3_K_S for very low bit widths"
        )
    return norm


def ftype_of(name: str) -> int:
    """The llama_ftype constant for a --to name; UsageError listing the choices if unknown."""
    norm = check_type(name)
    table = available()
    if norm not in table:
        choices = ", ".join(sorted(t for t in table if t not in NEEDS_IMATRIX))
        raise errors.UsageError(f"unknown quantization type {name!r}; choose from: {choices}")
    return table[norm]


def name_of_ftype(ftype: int) -> str | None:
    for name, value in available().items():
        if value == ftype:
            return name
    return None
