"""Which records normalize drops, judged on the normalized text (`Filters`).

Each filter answers None to keep a record or `(reason, detail)` to drop it; the reason is a
short stable key (counted in the summary), the detail says by how much (saved in --rejects).
The quality rules (quality.py) and language identification (language.py) load only when on.
"""

from __future__ import annotations

import re
from typing import Any, Iterable


class Filters:
    """Which records to drop, judged on the normalized text. None/empty means: no such filter.

    `quality` is a quality.QualityConfig (or None); `langs` ISO 639-1 codes.
    """

    def __init__(
        self,
        drop_empty: bool = True,
        min_chars: int | None = None,
        max_chars: int | None = None,
        min_words: int | None = None,
        max_words: int | None = None,
        include: Iterable[re.Pattern] = (),
        exclude: Iterable[re.Pattern] = (),
        langs: Iterable[str] | None = None,
        lang_threshold: float = 0.5,
        quality: Any = None,
    ):
        self.drop_empty = drop_empty
        self.min_chars, self.max_chars = min_chars, max_chars
        self.min_words, self.max_words = min_words, max_words
        self.include, self.exclude = list(include), list(exclude)
        self.langs = frozenset(langs) if langs else None
        self.lang_threshold = lang_threshold
        self.quality = quality
        self._quality_check = self._language_of = None
        if quality is not None or self.langs:
            from llmtools.ops.normalize.language import language_of
            from llmtools.ops.normalize.quality import quality_check

            self._quality_check, self._language_of = quality_check, language_of

    @property
    def _beyond_empty(self) -> bool:
        """Any filter other than the empty-text one is on."""
        return bool(
            self.min_chars is not None
            or self.max_chars is not None
            or self.min_words is not None
            or self.max_words is not None
            or self.include
            or self.exclude
            or self.langs
            or self.quality
        )

    @property
    def only_empty(self) -> bool:
        """True when the only filter is the empty-text one (the default): the loop inlines it."""
        return self.drop_empty and not self._beyond_empty

    @property
    def active(self) -> bool:
        return bool(self.drop_empty or self._beyond_empty)

    def check(self, text: str, info: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]] | None:
        """None to keep; else (reason, detail). Cheap filters first, language id last."""
        if self.drop_empty and (not text or text.isspace()):
            return "empty", {}
        n = len(text)
        if self.min_chars is not None and n < self.min_chars:
            return "min-chars", {"value": n, "limit": self.min_chars}
        if self.max_chars is not None and n > self.max_chars:
            return "max-chars", {"value": n, "limit": self.max_chars}
        words = None
        if self.min_words is not None or self.max_words is not None or self.quality is not None:
            words = text.split()
            nw = len(words)
            if self.min_words is not None and nw < self.min_words:
                return "min-words", {"value": nw, "limit": self.min_words}
            if self.max_words is not None and nw > self.max_words:
                return "max-words", {"value": nw, "limit": self.max_words}
        if self.include and not any(p.search(text) for p in self.include):
            return "include", {}
        for p in self.exclude:
            if p.search(text):
                return "exclude", {"pattern": p.pattern}
        if self.quality is not None and words is not None:
            hit = self._quality_check(text, words, self.quality)  # type: ignore[misc]
            if hit is not None:
                return hit
        if self.langs:
            lang, score = self._language_of(text)  # type: ignore[misc]
            if info is not None:
                info["lang"] = lang
                info["lang_score"] = round(score, 4)
            if lang not in self.langs or score < self.lang_threshold:
                return "lang", {"lang": lang, "score": round(score, 4)}
        return None
