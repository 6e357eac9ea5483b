"""Language identification for `normalize --lang`, by py3langid's offline model (loaded on first use)."""

from __future__ import annotations

from typing import Any

_langid: list[Any] = []


def _identifier() -> Any:
    if not _langid:
        from llmtools.errors import require

        mod = require("py3langid.langid", purpose="--lang")
        _langid.append(mod.LanguageIdentifier.from_model_file(mod.MODEL_FILE, norm_probs=True))
    return _langid[0]


def known_languages() -> set[str]:
    return set(_identifier().labels)


def language_of(text: str) -> tuple[str, float]:
    """(ISO 639-1 code, probability) from py3langid's bundled model; loaded on first use."""
    lang, prob = _identifier().classify(text)
    return str(lang), float(prob)
