"""normalize: the optional C helper (llmtools._speedups) gives exactly what the Python steps give.

The pure-Python steps in ops/normalize/cleaning.py are the reference. Every test here builds one
normalizer with the helper and one without (T.SPEEDUPS set to None) and compares them on
generated text, biased to the characters the helper looks at.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from llmtools.ops import normalize as N
from llmtools.ops.normalize import cleaning as T
from llmtools.ops.normalize import DEFAULT_STEPS, TextNormalizer

C = T.SPEEDUPS
BUILT = importlib.util.find_spec("llmtools._speedups") is not None  # whatever LLMTOOLS_PURE_PYTHON says
needs_c = pytest.mark.skipif(C is None, reason="llmtools._speedups is not loaded (not built: no C compiler at install; or LLMTOOLS_PURE_PYTHON=1)")
SETTINGS = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Pieces the scan and the rewrite act on: spaces and line breaks in every arrangement, every
# control and invisible the plain removal drops and those it leaves to Python, quotes, dashes,
# NFC-relevant marks, mojibake triggers and all the other whitespace.
PIECES = [
    "a", "b.", "é", "Ω", "\u4e2d", "\U0001f600", " ", "  ", "\n", "\n\n", "\n\n\n", " \n", "\n ", "\t", "\r", "\x0b",
    "\x0c", "\x1c", "\x1f", "\x00", "\x07", "\x1b[1m", "\x7f", "\x80", "\x85", "\x9d", "\xa0", "\xad", "\u061c",
    "\u180e", "\u1680", "\u2000", "\u2001", "\u2009", "\u200b", "\u200c", "\u200d", "\u200e", "\u2028", "\u2029",
    "\u202a", "\u202f", "\u205f", "\u2060", "\u2066", "\u3000", "\ufeff", "\ufff9", "\ud800", "\U000e0041",
    "\U0001f3f4\U000e0067\U000e0062\U000e007f", "‘", "’", "‚", "‛", "“", "”", "„", "‟", "＂", "＇", "‐", "‑", "‒", "–",
    "—", "―", "−", "⸺", "⸻", "﹘", "﹣", "－", "e\u0301", "\u0301", "Å", "ﬁ", "œ", "Œ", "Ã", "Â", "Ã ", "â€™",
    "cafÃ©", "doesnâ€™t",
]
pieces = st.lists(st.sampled_from(PIECES), max_size=24).map("".join)
texts = st.one_of(pieces, st.text(st.characters(codec=None), max_size=40),
                  st.text(st.sampled_from(" \nab.é’–\u200b"), max_size=40))
STEP_SETS = [DEFAULT_STEPS, ("controls", "whitespace"), ("quotes", "dashes"), ("whitespace",), ("controls",),
             ("mojibake", "quotes", "dashes"), ("nfc", "controls"), ("controls", "nfc", "quotes", "dashes", "whitespace"),
             ("mojibake", "whitespace")]


def _pure(steps, **kw) -> TextNormalizer:
    saved, T.SPEEDUPS = T.SPEEDUPS, None
    try:
        return TextNormalizer(steps, **kw)
    finally:
        T.SPEEDUPS = saved


def test_the_helper_is_built():
    # CI builds it (a C compiler is there); a user's machine without one runs pure Python.
    if C is None:
        pytest.skip("llmtools._speedups is not built: normalize runs its pure-Python steps")
    assert TextNormalizer(DEFAULT_STEPS).fast is C


@pytest.mark.slow
@needs_c
@SETTINGS
@given(texts, st.sampled_from(STEP_SETS), st.sampled_from(["keep", "paragraphs", "none"]))
@example("é\x00é", DEFAULT_STEPS, "keep")  # the removed control makes two non-ASCII neighbours
@example("Ã\u200b©", DEFAULT_STEPS, "keep")  # ... and exposes mojibake: the second pass
@example("e\u200b\u0301", DEFAULT_STEPS, "keep")  # the removed control lets NFC compose
@example("", ("quotes",), "keep")
@example("  x  \n\n\n  y \n ", DEFAULT_STEPS, "keep")
def test_helper_equals_python(text, steps, newlines):
    fast, pure = TextNormalizer(steps, newlines=newlines), _pure(steps, newlines=newlines)
    assert pure.fast is None
    out, ref = fast(text), pure(text)
    assert out == ref
    assert (out[0] is text) == (ref[0] is text)


@needs_c
@SETTINGS
@given(texts)
def test_scan_bits_match_the_python_checks(text):
    bits = C.scan(text)
    assert bool(bits & C.B_MOJI) == T.mojibake_possible(text)
    assert bool(bits & (C.B_CTRL | C.B_CTRL_X)) == T.controls_possible(text)
    assert bool(bits & C.B_QUOTE) == T.quotes_possible(text)
    assert bool(bits & C.B_DASH) == T.dashes_possible(text)
    if T.nfc_possible(text):
        assert bits & C.B_NFC
    if T.whitespace_possible(text, "keep"):
        assert bits & (C.B_WS | C.B_WS_X)
    if not bits & (C.B_WS | C.B_WS_X):
        assert T.collapse_whitespace(text) is text


@needs_c
@SETTINGS
@given(st.lists(st.sampled_from(["a", "bc", "é", "’", " ", "  ", "\n", "\n\n\n", " \n", "\n  "]), max_size=30).map("".join))
def test_rewrite_of_spaces_and_breaks_equals_the_line_rewrite(text):
    new, changed = C.rewrite(text, C.scan(text), C.B_QUOTE | C.B_WS)
    ref = T.collapse_whitespace(T.unify_quotes(text))
    assert new == ref
    assert bool(changed & C.B_WS) == (T.collapse_whitespace(T.unify_quotes(text)) != T.unify_quotes(text))


def test_scan_reads_every_string_width():
    # 1-byte strings take the eight-bytes-at-a-time path; the rest go a character at a time.
    for filler in ("x", "é", "Ω", "\U0001f600"):
        for n in range(0, 40):
            base = filler * n
            for text in (base + "  z", base + " \n z", "z\n\n\n" + base, base + "a" * 9 + " ", base + "a\x00b"):
                if C is None:
                    continue
                assert _pure(DEFAULT_STEPS)(text) == TextNormalizer(DEFAULT_STEPS)(text), repr(text)


@needs_c
@pytest.mark.parametrize("steps", [DEFAULT_STEPS, ("nfc", "quotes"), ("whitespace",)])
def test_records_loop_equals_python(steps, monkeypatch):
    # The record loop skips texts the scan clears; an empty or all-whitespace text is never
    # one it may skip (the empty filter drops it).
    texts_ = ["", " ", "\t", "\u2028", "\u200b", "ok", "a  b", "it’s", "café", "cafÃ©", "x\n\n\ny", "e\u0301"]
    recs = [{"id": i, "text": t} for i, t in enumerate(texts_)]

    def run() -> tuple[list, list]:
        dropped: list = []
        out = list(N.normalize([dict(r) for r in recs], steps=steps, on_drop=lambda r, why, **_: dropped.append((r["id"], why))))
        return out, dropped

    fast = run()
    monkeypatch.setattr(T, "SPEEDUPS", None)
    assert fast == run()


def test_pure_python_switch(tmp_path):
    # LLMTOOLS_PURE_PYTHON=1 runs without the helper, with the same output.
    data = tmp_path / "in.jsonl"
    data.write_text('{"text": "  it’s  a\\u200b test  "}\n{"text": "café"}\n', encoding="utf-8")
    outs = []
    for pure in ("0", "1"):
        env = {**os.environ, "LLMTOOLS_PURE_PYTHON": pure}
        code = "from llmtools.ops.normalize import cleaning as T; import sys; sys.stdout.write(str(T.SPEEDUPS is None))"
        flag = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout
        assert flag == ("True" if pure == "1" or not BUILT else "False")
        res = subprocess.run([sys.executable, "-m", "llmtools", "normalize", str(data)], env=env, capture_output=True)
        assert res.returncode == 0, res.stderr
        outs.append(res.stdout)
    assert outs[0] == outs[1] == '{"text":"it\'s a test"}\n{"text":"café"}\n'.encode()
