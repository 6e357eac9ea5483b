"""OpenAI request parsing and response shapes for `llmtools serve`, as plain functions.

Nothing here imports starlette: the HTTP layer (app.py) and batch mode (batch.py) share
the same validation, so a bad option means the same thing in a JSONL record and in a request.
"""

from __future__ import annotations

import base64
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from llmtools.models.base import GenerationParams

MAX_STOP = 4  # OpenAI allows up to four stop sequences


class ApiError(Exception):
    """An error answered with OpenAI's error object: {"error": {message, type, param, code}}."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, "invalid_request_error", code=code, param=param)


# --------------------------------------------------------------------------- generation options


@dataclass
class Defaults:
    """Server- or run-wide generation defaults; a request or record overrides each one."""

    max_tokens: int = 256
    max_tokens_cap: int | None = None  # None: no cap (batch mode)
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = field(default_factory=tuple)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def generation_params(body: dict, defaults: Defaults) -> GenerationParams:
    """GenerationParams from request/record fields; raises ApiError(400) naming the bad one."""
    max_tokens = body.get("max_completion_tokens")
    name = "max_completion_tokens"
    if max_tokens is None:
        max_tokens, name = body.get("max_tokens"), "max_tokens"
    if max_tokens is None:
        max_tokens = defaults.max_tokens if defaults.max_tokens_cap is None else min(defaults.max_tokens, defaults.max_tokens_cap)
    elif not _is_int(max_tokens) or max_tokens < 1:
        raise bad_request(f"'{name}' must be an integer >= 1, got {max_tokens!r}", param=name)
    elif defaults.max_tokens_cap is not None and max_tokens > defaults.max_tokens_cap:
        raise bad_request(
            f"'{name}' is {max_tokens}, above this server's limit of {defaults.max_tokens_cap}",
            param=name,
            code="max_tokens_too_large",
        )

    temperature = body.get("temperature", defaults.temperature)
    if temperature is None:
        temperature = defaults.temperature
    if not _is_number(temperature) or not 0 <= temperature <= 2:
        raise bad_request(f"'temperature' must be a number in [0, 2], got {temperature!r}", param="temperature")

    top_p = body.get("top_p", defaults.top_p)
    if top_p is None:
        top_p = defaults.top_p
    if not _is_number(top_p) or not 0 < top_p <= 1:
        raise bad_request(f"'top_p' must be a number in (0, 1], got {top_p!r}", param="top_p")

    top_k = body.get("top_k", defaults.top_k)
    if top_k is None:
        top_k = defaults.top_k
    if not _is_int(top_k) or top_k < 0:
        raise bad_request(f"'top_k' must be an integer >= 0, got {top_k!r}", param="top_k")

    seed = body.get("seed", defaults.seed)
    if seed is not None and not _is_int(seed):
        raise bad_request(f"'seed' must be an integer, got {seed!r}", param="seed")

    stop = body.get("stop", None)
    if stop is None:
        stop = defaults.stop
    if isinstance(stop, str):
        stop = (stop,)
    if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) and s for s in stop):
        raise bad_request("'stop' must be a non-empty string or a list of them", param="stop")
    if len(stop) > MAX_STOP:
        raise bad_request(f"'stop' has {len(stop)} sequences; at most {MAX_STOP} are allowed", param="stop")

    return GenerationParams(
        max_tokens=int(max_tokens),
        temperature=float(temperature),
        top_p=float(top_p),
        top_k=int(top_k),
        seed=seed,
        stop=tuple(stop),
    )


def params_key(params: GenerationParams) -> tuple:
    """Requests with equal keys can share one generate_batch call."""
    return (params.max_tokens, params.temperature, params.top_p, params.top_k, params.seed, tuple(params.stop))


# --------------------------------------------------------------------------- inputs


def _content_text(content: Any, where: str) -> str:
    """Message content: a string, or OpenAI content parts of which only text is supported."""
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise bad_request(f"{where}: only text content parts are supported, got {kind!r}", param="messages")
            parts.append(part["text"])
        return "".join(parts)
    raise bad_request(f"{where}: 'content' must be a string or a list of text parts", param="messages")


def parse_messages(messages: Any) -> list[dict]:
    """Validate chat messages; returns [{"role", "content"}] with text content."""
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty list", param="messages")
    out = []
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise bad_request(f"{where} must be an object", param="messages")
        role = msg.get("role")
        if role not in ("system", "user", "assistant", "developer", "tool"):
            raise bad_request(f"{where}: unknown role {role!r}", param="messages")
        if role == "developer":
            role = "system"  # OpenAI's newer name for the system role
        out.append({"role": role, "content": _content_text(msg.get("content"), where)})
    return out


def parse_prompts(prompt: Any) -> list[str]:
    """A completions `prompt`: a string or a list of strings (token-id prompts are refused)."""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return list(prompt)
    raise bad_request("'prompt' must be a string or a non-empty list of strings", param="prompt")


def parse_embedding_input(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise bad_request("'input' must be a string or a non-empty list of strings", param="input")


def refuse_unsupported(body: dict) -> None:
    """Options we cannot honour are refused, not silently ignored."""
    n = body.get("n", 1)
    if n not in (None, 1):
        raise bad_request("only n=1 is supported", param="n")
    if body.get("tools") or body.get("functions"):
        raise bad_request("tool and function calling are not supported", param="tools")
    if body.get("logprobs") not in (None, False, 0) or body.get("echo"):
        raise bad_request("logprobs and echo are not supported", param="logprobs")
    best_of = body.get("best_of")
    if best_of not in (None, 1):
        raise bad_request("only best_of=1 is supported", param="best_of")
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        raise bad_request("only the 'text' response_format is supported", param="response_format")


# --------------------------------------------------------------------------- responses


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}


def chat_response(rid: str, model: str, fingerprint: str | None, text: str, finish: str, pt: int, ct: int) -> dict:
    return {
        "id": f"chatcmpl-{rid}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": fingerprint,
        "choices": [
            # `refusal` is required (nullable) in OpenAI's published schema; strict clients reject its absence
            {"index": 0, "message": {"role": "assistant", "content": text, "refusal": None}, "logprobs": None,
             "finish_reason": finish}
        ],
        "usage": usage(pt, ct),
    }


def chat_chunk(rid: str, model: str, fingerprint: str | None, created: int, delta: dict, finish: str | None) -> dict:
    return {
        "id": f"chatcmpl-{rid}",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": fingerprint,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def completion_response(rid: str, model: str, fingerprint: str | None, results: Sequence[tuple[str, str]], pt: int, ct: int) -> dict:
    return {
        "id": f"cmpl-{rid}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": fingerprint,
        "choices": [
            {"index": i, "text": text, "logprobs": None, "finish_reason": finish} for i, (text, finish) in enumerate(results)
        ],
        "usage": usage(pt, ct),
    }


def completion_chunk(rid: str, model: str, fingerprint: str | None, created: int, text: str, finish: str | None) -> dict:
    return {
        "id": f"cmpl-{rid}",
        "object": "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": fingerprint,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
    }


def usage_chunk(kind: str, rid: str, model: str, fingerprint: str | None, created: int, pt: int, ct: int) -> dict:
    """The last chunk of a stream with stream_options.include_usage: empty choices, usage set."""
    return {
        "id": f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{rid}",
        "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": fingerprint,
        "choices": [],
        "usage": usage(pt, ct),
    }


def embedding_response(model: str, vectors: Sequence[Sequence[float]], tokens: int, encoding: str) -> dict:
    data = []
    for i, vec in enumerate(vectors):
        if encoding == "base64":
            value: Any = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode("ascii")
        else:
            value = [float(x) for x in vec]
        data.append({"object": "embedding", "index": i, "embedding": value})
    return {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
