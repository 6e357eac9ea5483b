"""Text helpers every backend shares: stop sequences over a stream, chat formatting fallback."""

from __future__ import annotations

import sys
from typing import Iterable, Sequence

_warned: set[str] = set()


def warn_once(key: str, message: str) -> None:
    """One warning line on stderr per process for `key` (stdout carries records only)."""
    if key in _warned:
        return
    _warned.add(key)
    sys.stderr.write(f"llmtools: warning: {message}\n")


class StopScanner:
    """Cut streamed text at the first stop sequence, holding back what might be the start of one.

    `feed(piece)` returns the text that is safe to emit now; `stopped` becomes True once a stop
    sequence has been seen (the stop sequence itself is never emitted). `flush()` returns what
    was held back when the stream ends without a stop.
    """

    def __init__(self, stops: Sequence[str] = ()):
        self.stops = [s for s in stops if s]
        self.text = ""  # everything emitted so far
        self._pending = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped or not piece:
            return ""
        if not self.stops:
            self.text += piece
            return piece
        buf = self._pending + piece
        cut = min((i for i in (buf.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            out, self._pending = buf[:cut], ""
            self.text += out
            return out
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(buf)), 0, -1):
                if buf.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        out, self._pending = (buf[: len(buf) - hold], buf[len(buf) - hold :]) if hold else (buf, "")
        self.text += out
        return out

    def flush(self) -> str:
        out, self._pending = self._pending, ""
        if self.stopped:
            return ""
        self.text += out
        return out


def cut_at_stop(text: str, stops: Iterable[str]) -> tuple[str, bool]:
    """`text` cut before the earliest stop sequence, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def quiet_transformers() -> None:
    """No progress bars or info chatter from transformers on stderr (it is for our summaries)."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass


def fallback_chat_prompt(messages: Sequence[dict], add_generation_prompt: bool = True, model: str = "model") -> str:
    """The transcript used when a model has no chat template: `role: content` lines.

    A model without a template was not trained on any chat format, so no format is "right"; this
    one is plain, readable and lets a base model continue as the assistant. Warned once.
    """
    warn_once(
        f"chat-fallback:{model}",
        f"{model} has no chat template; formatting chat as a plain 'role: content' transcript",
    )
    lines = [f"{m.get('role', 'user')}: {m.get('content') or ''}" for m in messages]
    if add_generation_prompt:
        lines.append("assistant:")
    return "\n".join(lines)


def render_chat_template(
    template: str,
    messages: Sequence[dict],
    add_generation_prompt: bool = True,
    bos_token: str = "",
    eos_token: str = "",
) -> str:
    """Render a Hugging Face-style Jinja chat template in a sandbox (as transformers does)."""
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(template).render(
            messages=list(messages),
            add_generation_prompt=add_generation_prompt,
            bos_token=bos_token,
            eos_token=eos_token,
        )
    except TemplateError as exc:
        from llmtools.errors import BadInputError

        raise BadInputError(f"chat template rejected the messages: {exc}") from exc


def sliding_windows(n_tokens: int, n_ctx: int, stride: int | None = None) -> list[tuple[int, int, int]]:
    """Windows (start, end, first_scored) that score tokens 1..n-1 once each with context.

    Each window is at most n_ctx tokens; after the first, each scores `stride` new tokens with
    n_ctx - stride tokens of context before them (the standard strided perplexity).
    """
    if n_ctx < 2:
        raise ValueError("n_ctx must be >= 2 to score tokens")
    stride = stride or max(1, n_ctx // 2)
    stride = min(stride, n_ctx - 1)
    windows = []
    scored = 1
    while scored < n_tokens:
        end = min(n_tokens, n_ctx if scored == 1 else scored + stride)
        start = max(0, end - n_ctx)
        windows.append((start, end, scored))
        scored = end
    return windows
