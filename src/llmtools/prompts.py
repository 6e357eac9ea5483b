"""Prompt templates: a record (and a few chosen examples) rendered into a prompt or chat messages.

    tpl = PromptTemplate.load("zero-shot.j2", examples=Examples.load("train.jsonl", shots=3, seed=1))
    kind, item = tpl.render(record)   # ("generate", "text") or ("chat", [{"role": ..., "content": ...}])

Templates are Jinja2, rendered in its sandbox (no attribute access to Python internals, no
imports) with strict undefined values: a field the record lacks is an error (TemplateError),
never a silent empty string, so a command can apply --on-error to that record.

A template renders chat messages when its output is a JSON list of {role, content} objects, or
when it holds `<message role="...">...</message>` blocks; anything else is a plain prompt.
Jinja2 is imported when a template is loaded, not before.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
from dataclasses import dataclass, field
from typing import Any

from llmtools.errors import LLMToolsError, MissingDependency, UsageError

ROLES = ("system", "user", "assistant")
_MESSAGE = re.compile(r"<message\s+role\s*=\s*[\"']?(\w+)[\"']?\s*>(.*?)</message>", re.DOTALL)


class TemplateError(LLMToolsError):
    """A record cannot be rendered (a missing field, a failed filter): a per-record error."""


def _jinja() -> Any:
    try:
        import jinja2
        import jinja2.sandbox
    except ImportError:
        raise MissingDependency("prompt templates need Jinja2: pip install 'jinja2>=3.1'") from None
    return jinja2


@dataclass
class Examples:
    """Few-shot examples: the records chosen from an examples file, and their ids.

    `shots` examples are drawn with random.Random(seed).sample (the same file, shots and seed
    always give the same examples in the same order); shots=None takes them all, in file order.
    An example's id is its `id_field` value, else its line number in the file ("line:N")."""

    records: list[dict] = field(default_factory=list)
    ids: list[Any] = field(default_factory=list)
    path: str | None = None
    sha256: str | None = None
    shots: int | None = None
    seed: int = 0

    @classmethod
    def load(cls, path: str, shots: int | None = None, seed: int = 0, id_field: str = "id") -> "Examples":
        from llmtools.io import get_field, iter_lines, loads_line, source_name

        rows: list[tuple[Any, dict]] = []
        digest = hashlib.sha256()
        for lineno, raw in iter_lines(path):
            digest.update(raw)
            value, reason = loads_line(raw)
            if reason is None and not isinstance(value, dict):
                reason = f"expected a JSON object, got {type(value).__name__}"
            if reason:
                from llmtools.errors import BadInputError

                raise BadInputError(reason, where=f"{source_name(path)}:{lineno}")
            ident = get_field(value, id_field)
            rows.append((ident if ident is not None else f"line:{lineno}", value))
        if shots is not None and shots > len(rows):
            raise UsageError(f"--shots {shots}: {path} holds only {len(rows)} example(s)")
        if shots is not None:
            rows = [rows[i] for i in random.Random(seed).sample(range(len(rows)), shots)]
        return cls(records=[r for _, r in rows], ids=[i for i, _ in rows], path=path, sha256=digest.hexdigest(),
                   shots=shots, seed=seed)

    def provenance(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "shots": self.shots, "seed": self.seed, "ids": self.ids}


class PromptTemplate:
    """A Jinja2 template in the sandbox. The record's top-level fields are its variables (nested
    ones by dots: `{{ meta.channel }}`), and so are `record` (the whole record), `examples` (the
    few-shot examples, a list of records) and `variant` (the --variant name, or None)."""

    def __init__(self, source: str, name: str = "<template>", examples: Examples | None = None,
                 variant: str | None = None):
        jinja2 = _jinja()
        self.name = name
        self.source = source
        self.sha256 = hashlib.sha256(source.encode("utf-8")).hexdigest()
        self.examples = examples or Examples()
        self.variant = variant
        self._security_error = jinja2.sandbox.SecurityError
        self._undefined_error = jinja2.UndefinedError
        env = jinja2.sandbox.SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False,
                                                  keep_trailing_newline=False, trim_blocks=True, lstrip_blocks=True)
        try:
            self._template = env.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise UsageError(f"{name}:{exc.lineno}: template syntax error: {exc.message}") from None

    def __reduce__(self) -> tuple:
        # Compiled Jinja templates do not pickle; an engine's workers (Spark) compile the source again.
        return (self.__class__, (self.source, self.name, self.examples, self.variant))

    @classmethod
    def load(cls, path: str, examples: Examples | None = None, variant: str | None = None) -> "PromptTemplate":
        try:
            with open(path, encoding="utf-8") as fh:
                source = fh.read()
        except OSError as exc:
            raise UsageError(f"{path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise UsageError(f"{path}: not UTF-8 text") from None
        return cls(source, name=path, examples=examples, variant=variant)

    def render_text(self, record: dict, **extra: Any) -> str:
        """The template's output for `record`; TemplateError when the record cannot fill it."""
        context = dict(record) if isinstance(record, dict) else {}
        context.update(record=record, examples=self.examples.records, variant=self.variant)
        context.update(extra)
        try:
            return self._template.render(context)
        except self._security_error as exc:
            raise UsageError(f"{self.name}: the template sandbox refused: {exc}") from None
        except self._undefined_error as exc:
            raise TemplateError(f"template {os.path.basename(self.name)}: {_undefined_reason(exc)}") from None
        except Exception as exc:  # a filter or test failed on this record's values
            raise TemplateError(f"template {os.path.basename(self.name)}: {type(exc).__name__}: {exc}") from None

    def render(self, record: dict, chat: bool = False, **extra: Any) -> tuple[str, Any]:
        """("chat", messages) or ("generate", prompt) for `record`. A plain prompt becomes one user
        message when `chat` is set. `extra` are more variables (they win over record fields)."""
        text = self.render_text(record, **extra)
        messages = parse_messages(text, self.name)
        if messages is not None:
            return "chat", messages
        if chat:
            return "chat", [{"role": "user", "content": text}]
        return "generate", text

    def provenance(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.name, "sha256": self.sha256}
        if self.variant is not None:
            out["variant"] = self.variant
        if self.examples.path is not None:
            out["examples"] = self.examples.provenance()
        return out


def _undefined_reason(exc: Exception) -> str:
    # Jinja says "'dict object' has no attribute 'channel'" or "'channel' is undefined"
    message = str(exc)
    m = re.match(r"'(\w+) object' has no attribute '(.+)'", message)
    if m:
        return f"missing field '{m.group(2)}' (in a {m.group(1)})"
    m = re.match(r"'(.+)' is undefined", message)
    if m:
        return f"missing field '{m.group(1)}'"
    return message


def parse_messages(text: str, name: str = "<template>") -> list[dict] | None:
    """The chat messages a rendered template holds, or None for a plain prompt."""
    stripped = text.strip()
    if stripped.startswith("[") and stripped.endswith("]"):
        import json

        try:
            value = json.loads(stripped)
        except ValueError:
            value = None
        if isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m for m in value):
            return [_message(m.get("role"), m.get("content"), name) for m in value]
    found = _MESSAGE.findall(text)
    if not found:
        return None
    outside = _MESSAGE.sub("", text).strip()
    if outside:
        raise TemplateError(f"template {os.path.basename(name)}: text outside <message> blocks: {outside[:40]!r}")
    return [_message(role, content.strip(), name) for role, content in found]


def _message(role: Any, content: Any, name: str) -> dict:
    if role not in ROLES:
        raise TemplateError(f"template {os.path.basename(name)}: unknown role {role!r} (use {', '.join(ROLES)})")
    if not isinstance(content, str):
        raise TemplateError(f"template {os.path.basename(name)}: message content is {type(content).__name__}, not a string")
    return {"role": role, "content": content}
