"""quantize: convert a model to GGUF, quantize it with llama.cpp, and measure what that cost.

    quantize_model(source, out_path, to="Q4_K_M", texts=[...]) -> report record

The modules: pipeline (the stages plan, convert, quantize, evaluate, report), ftypes (type names
and llama.cpp's file types), llamacpp (llama_model_quantize, its log captured), measure
(perplexity and speed through the llama.cpp backend), tensors (reading a GGUF back, magnitude
pruning). llama_cpp and gguf are imported only when used.
"""

from __future__ import annotations

from llmtools.ops.quantize.ftypes import KNOWN, WRITTEN_BY_US, check_type, ftype_of
from llmtools.ops.quantize.llamacpp import llama_quantize
from llmtools.ops.quantize.measure import decode_speed, measure
from llmtools.ops.quantize.pipeline import (
    bundled_texts,
    convert,
    default_output,
    evaluate,
    plan,
    quantize,
    quantize_model,
    report,
)
from llmtools.ops.quantize.tensors import inspect_gguf

__all__ = [
    "KNOWN", "WRITTEN_BY_US", "bundled_texts", "check_type", "convert", "decode_speed", "default_output", "evaluate",
    "ftype_of", "inspect_gguf", "llama_quantize", "measure", "plan", "quantize", "quantize_model", "report",
]
