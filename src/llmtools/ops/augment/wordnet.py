"""WordNet synonyms and the EDA operations (Wei & Zou, 2019) over a text's word tokens.

Only word tokens change: whitespace, punctuation and placeholders such as `<EMAIL>` are kept
exactly where they were, so paragraphs and redactions survive augmentation.
"""

from __future__ import annotations

import os
import random
import shutil
from functools import lru_cache
from typing import Any

from llmtools.errors import MissingDependency, require

# Stop words are never replaced, inserted or counted as content (NLTK's list needs a download).
STOP_WORDS = frozenset(
    """a about above after again against all am an and any are aren't as at be because been before being below
    between both but by can can't cannot could couldn't did didn't do does doesn't doing don't down during each few
    for from further had hadn't has hasn't have haven't having he he'd he'll he's her here here's hers herself him
    himself his how how's i i'd i'll i'm i've if in into is isn't it it's its itself let's me more most mustn't my
    myself no nor not of off on once only or other ought our ours ourselves out over own same shan't she she'd
    she'll she's should shouldn't so some such than that that's the their theirs them themselves then there
    there's these they they'd they'll they're they've this those through to too under until up very was wasn't we
    we'd we'll we're we've were weren't what what's when when's where where's which while who who's whom why why's
    with won't would wouldn't you you'd you'll you're you've your yours yourself yourselves will just also may
    might must shall yes hi hello please thanks thank get got""".split()
)

DETERMINERS = frozenset("a an the this that these those my your his her its our their some any every each no".split())
VERB_CUES = frozenset("to will would can could should must may might do does did not never".split())

# word | placeholder | whitespace | other single character
TOKEN_PATTERN = r"<[A-Z][A-Z_]*>|[^\W\d_]+(?:['\u2019-][^\W\d_]+)*|\s+|\w+|[^\w\s]"

# WordNet 3.0 lexicographer files: number, name, syntactic category (see wninput(5WN)).
LEXNAMES = [
    ("adj.all", 3), ("adj.pert", 3), ("adv.all", 4), ("noun.Tops", 1), ("noun.act", 1), ("noun.animal", 1),
    ("noun.artifact", 1), ("noun.attribute", 1), ("noun.body", 1), ("noun.cognition", 1), ("noun.communication", 1),
    ("noun.event", 1), ("noun.feeling", 1), ("noun.food", 1), ("noun.group", 1), ("noun.location", 1),
    ("noun.motive", 1), ("noun.object", 1), ("noun.person", 1), ("noun.phenomenon", 1), ("noun.plant", 1),
    ("noun.possession", 1), ("noun.process", 1), ("noun.quantity", 1), ("noun.relation", 1), ("noun.shape", 1),
    ("noun.state", 1), ("noun.substance", 1), ("noun.time", 1), ("verb.body", 2), ("verb.change", 2),
    ("verb.cognition", 2), ("verb.communication", 2), ("verb.competition", 2), ("verb.consumption", 2),
    ("verb.contact", 2), ("verb.creation", 2), ("verb.emotion", 2), ("verb.motion", 2), ("verb.perception", 2),
    ("verb.possession", 2), ("verb.social", 2), ("verb.stative", 2), ("verb.weather", 2), ("adj.ppl", 3),
]

SYSTEM_WORDNET_DIRS = ("/usr/share/wordnet", "/usr/local/share/wordnet", "/usr/lib/wordnet", "/opt/homebrew/share/wordnet")
REQUIRED_FILES = ("data.noun", "data.verb", "data.adj", "data.adv", "index.noun", "index.verb", "index.adj", "index.adv", "index.sense")

INSTALL_HINT = (
    "WordNet was not found. Install it with one of:\n"
    "  sudo apt-get install wordnet-base wordnet-sense-index   # Debian/Ubuntu, then re-run\n"
    "  python -m nltk.downloader wordnet                        # where the network allows it\n"
    "or point LLMTOOLS_WORDNET_DIR at a folder holding WordNet 3.0's data.* and index.* files"
)


def _system_dirs() -> list[str]:
    env = os.environ.get("LLMTOOLS_WORDNET_DIR")
    return ([env] if env else []) + list(SYSTEM_WORDNET_DIRS)


def prepare_system_wordnet(source: str, cache_root: str) -> str:
    """Copy a system WordNet dictionary into an NLTK-readable corpus folder, once.

    NLTK's reader also needs a `lexnames` file (Debian does not ship one), and it refuses files
    reached through links that leave its root, so the files are copied, not linked.
    """
    target = os.path.join(cache_root, "corpora", "wordnet")
    marker = os.path.join(target, ".llmtools-source")
    stamp = f"{os.path.abspath(source)}|" + "|".join(str(os.path.getsize(os.path.join(source, f))) for f in REQUIRED_FILES)
    try:
        with open(marker, encoding="utf-8") as fh:
            if fh.read() == stamp:
                return target
    except OSError:
        pass
    tmp = target + f".tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for name in os.listdir(source):
        full = os.path.join(source, name)
        if os.path.isfile(full):
            shutil.copyfile(full, os.path.join(tmp, name))
    with open(os.path.join(tmp, "lexnames"), "w", encoding="utf-8") as fh:
        for number, (name, category) in enumerate(LEXNAMES):
            fh.write(f"{number:02d}\t{name}\t{category}\n")
    with open(os.path.join(tmp, ".llmtools-source"), "w", encoding="utf-8") as fh:
        fh.write(stamp)
    shutil.rmtree(target, ignore_errors=True)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.replace(tmp, target)
    return target


@lru_cache(maxsize=1)
def load_wordnet() -> Any:
    """NLTK's WordNet: from NLTK's own data path first, else a system dictionary prepared once."""
    nltk = require("nltk", purpose="WordNet synonyms")
    import warnings

    # NLTK warns that the Open Multilingual Wordnet is absent; we only use English.
    warnings.filterwarnings("ignore", message="The multilingual functions", category=UserWarning)
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class EnglishWordNet(WordNetCorpusReader):
        """NLTK's reader without its WordNet-version map, which only the multilingual (OMW)
        functions read. NLTK 3.9+ builds it at load time by reading index.sense twice and
        intersecting ~200k sense keys: about 60% of the load (~5 of 8 CPU-seconds measured)."""

        def map_wn(self, version: str = "wordnet") -> None:
            return None

    try:
        return EnglishWordNet(nltk.data.find("corpora/wordnet"), None)
    except LookupError:
        pass
    from llmtools.provenance import cache_dir

    for source in _system_dirs():
        if all(os.path.exists(os.path.join(source, f)) for f in REQUIRED_FILES):
            root = os.path.join(cache_dir(), "nltk_data")
            corpus = prepare_system_wordnet(source, root)
            if root not in nltk.data.path:
                nltk.data.path.append(root)  # NLTK only reads below roots it knows
            return EnglishWordNet(corpus, None)
    raise MissingDependency(INSTALL_HINT)


class WordNetAugmenter:
    """Synonym replacement and the EDA operations, driven by a caller-supplied random.Random."""

    def __init__(self, wordnet: Any | None = None, max_senses: int = 3):
        import nltk.tokenize

        self.wn = wordnet or load_wordnet()
        self.max_senses = max_senses
        self._tokenizer = nltk.tokenize.RegexpTokenizer(TOKEN_PATTERN)
        self.synonyms = lru_cache(maxsize=65536)(self._synonyms)
        self.pos_candidates = lru_cache(maxsize=65536)(self._pos_candidates)

    # -- tokens
    def tokens(self, text: str) -> list[str]:
        return self._tokenizer.tokenize(text)

    @staticmethod
    def is_word(token: str) -> bool:
        return token[:1].isalpha()

    def is_content(self, token: str) -> bool:
        return self.is_word(token) and len(token) > 2 and token.lower() not in STOP_WORDS and not (token.isupper() and len(token) > 1)

    # -- part of speech
    def _pos_candidates(self, word: str) -> tuple[tuple[str, int], ...]:
        """(pos, frequency) for every WordNet part of speech `word` can be, most frequent first."""
        out = []
        for pos in ("n", "v", "a", "r"):
            synsets = self.wn.synsets(word, pos)
            if synsets:
                lemma = self.wn.morphy(word, pos) or word
                freq = sum(l.count() for s in synsets for l in s.lemmas() if l.name().lower() == lemma)
                out.append((pos, freq))
        return tuple(sorted(out, key=lambda x: -x[1]))

    def infer_pos(self, words: list[str], i: int) -> str | None:
        """WordNet's possible POS for words[i], narrowed by cues from the neighbouring word."""
        word = words[i].lower()
        cands = [p for p, _ in self.pos_candidates(word)]
        if len(cands) <= 1:
            return cands[0] if cands else None
        prev = words[i - 1].lower() if i > 0 else ""
        if prev in DETERMINERS:
            for pos in ("n", "a"):
                if pos in cands:
                    return pos
        if prev in VERB_CUES and "v" in cands:
            return "v"
        if word.endswith("ly") and "r" in cands:
            return "r"
        if word.endswith(("ing", "ed")) and "v" in cands:
            return "v"
        return cands[0]

    # -- synonyms
    def _synonyms(self, word: str, pos: str | None) -> tuple[str, ...]:
        """Synonyms from the `max_senses` most frequent senses, inflected like `word` when simple."""
        lower = word.lower()
        lemma = self.wn.morphy(lower, pos) if pos else lower
        if lemma is None:
            return ()
        plural_noun = pos == "n" and lemma != lower and lower == lemma + "s"
        if lemma != lower and not plural_noun:
            return ()  # irregular or verb inflections: re-inflecting a synonym is guesswork
        seen: dict[str, None] = {}
        for rank, synset in enumerate(self.wn.synsets(lemma, pos)[: self.max_senses]):
            # Past the first sense, only senses seen in WordNet's tagged corpus: rare senses give
            # synonyms like "slyboots" for "fox" that change the meaning.
            if rank and not any(l.name().lower() == lemma and l.count() > 0 for l in synset.lemmas()):
                continue
            for name in synset.lemma_names():
                cand = name.replace("_", " ")
                if cand.lower() == lemma or not cand.replace(" ", "").replace("-", "").isalpha():
                    continue
                if plural_noun:
                    cand = cand + ("es" if cand.endswith(("s", "x", "z", "ch", "sh")) else "s")
                seen[cand] = None
        single = tuple(c for c in seen if " " not in c)
        return single or tuple(seen)  # multi-word synonyms ("order of magnitude") read worst

    @staticmethod
    def match_case(source: str, word: str) -> str:
        if source.isupper() and len(source) > 1:
            return word.upper()
        if source[:1].isupper():
            return word[:1].upper() + word[1:]
        return word

    def _word_positions(self, toks: list[str]) -> list[int]:
        return [i for i, t in enumerate(toks) if self.is_word(t)]

    def synonym_replace(self, text: str, rng: random.Random, rate: float) -> tuple[str, int]:
        """Replace about `rate` of the content words with a WordNet synonym; returns (text, n changed)."""
        toks = self.tokens(text)
        positions = self._word_positions(toks)
        words = [toks[i] for i in positions]
        candidates = [k for k, w in enumerate(words) if self.is_content(w)]
        rng.shuffle(candidates)
        target = max(1, round(rate * len(words))) if words else 0
        changed = 0
        for k in candidates:
            if changed >= target:
                break
            syns = self.synonyms(words[k], self.infer_pos(words, k))
            if syns:
                toks[positions[k]] = self.match_case(words[k], rng.choice(syns))
                changed += 1
        return "".join(toks), changed

    def random_insert(self, text: str, rng: random.Random, rate: float) -> tuple[str, int]:
        """Insert synonyms of random content words at random word positions."""
        toks = self.tokens(text)
        positions = self._word_positions(toks)
        words = [toks[i] for i in positions]
        content = [k for k, w in enumerate(words) if self.is_content(w)]
        n = max(1, round(rate * len(words))) if words else 0
        inserted = 0
        for _ in range(n * 4):  # bounded tries: some words have no synonyms
            if inserted >= n or not content:
                break
            k = rng.choice(content)
            syns = self.synonyms(words[k], self.infer_pos(words, k))
            if not syns:
                continue
            at = rng.choice(positions)
            toks.insert(at, rng.choice(syns).lower() + " ")
            positions = self._word_positions(toks)
            inserted += 1
        return "".join(toks), inserted

    def random_swap(self, text: str, rng: random.Random, rate: float) -> tuple[str, int]:
        """Swap the positions of two random words, about `rate` x words times."""
        toks = self.tokens(text)
        positions = self._word_positions(toks)
        if len(positions) < 2:
            return text, 0
        n = max(1, round(rate * len(positions)))
        for _ in range(n):
            a, b = rng.sample(positions, 2)
            toks[a], toks[b] = toks[b], toks[a]
        return "".join(toks), n

    def random_delete(self, text: str, rng: random.Random, rate: float) -> tuple[str, int]:
        """Delete each word with probability `rate` (never all of them), tidying the spaces left."""
        toks = self.tokens(text)
        positions = self._word_positions(toks)
        if len(positions) < 2:
            return text, 0
        drop = {i for i in positions if rng.random() < rate}
        if len(drop) == len(positions):
            drop.discard(rng.choice(positions))
        out: list[str] = []
        skip_space = False
        for i, tok in enumerate(toks):
            if i in drop:
                skip_space = True
                continue
            if skip_space and tok.isspace() and "\n" not in tok:
                skip_space = False
                if out and out[-1].isspace():
                    continue
                if not out:
                    continue
            else:
                skip_space = False
            out.append(tok)
        return "".join(out).strip(" "), len(drop)
