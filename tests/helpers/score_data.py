"""Real prediction/reference records for the score tests, and the helpers that run them."""

from __future__ import annotations

import json

# Real multi-sentence data: news-style English outputs with human references, some with two or
# three references (ragged), unicode (German, French, Chinese, emoji), an empty prediction, an
# empty-after-strip prediction, punctuation-heavy and multi-line summaries (for rougeLsum).
DATA = [
    {
        "prediction": "The government announced new measures to curb inflation on Tuesday. Prices rose 3% last month.",
        "reference": [
            "On Tuesday the government announced new measures to curb inflation. Prices rose by 3% last month.",
            "New anti-inflation measures were announced by the government on Tuesday; prices climbed 3 percent last month.",
        ],
    },
    {"prediction": "Der Hund läuft über die Straße.", "reference": "Der Hund rennt über die Straße."},
    {"prediction": "", "reference": "The meeting was postponed until next week."},
    {
        "prediction": "Scientists discovered water ice near the lunar south pole.",
        "reference": [
            "Scientists have found water ice close to the Moon's south pole.",
            "Water ice was discovered near the lunar south pole by scientists.",
            "Researchers discovered ice near the south pole of the Moon.",
        ],
    },
    {"prediction": "L'économie française a progressé de 0,5 % au troisième trimestre.", "reference": "L'économie française a crû de 0,5 % au troisième trimestre."},
    {"prediction": "我们明天去北京。", "reference": ["我们明天要去北京。", "明天我们去北京。"]},
    {"prediction": "The team won the final 2-1 🎉 after extra time.", "reference": "The team won the final 2–1 after extra time 🎉."},
    {"prediction": "   ", "reference": "Nothing was said."},
    {
        "prediction": "The storm closed schools.\nPower was cut to 20,000 homes.",
        "reference": "Schools were closed by the storm.\nAbout 20,000 homes lost power.",
    },
    {"prediction": "running runners ran quickly", "reference": "the runner runs quick"},
    {"prediction": "Stocks fell sharply, and the dollar weakened.", "reference": "Stocks fell sharply and the dollar weakened."},
    {"prediction": "He said: \"We will not give up!\"", "reference": ["He said, 'We won't give up.'", "\"We will never give up,\" he said."]},
]


def refs_of(rec):
    r = rec["reference"]
    return [r] if isinstance(r, str) else r


def ref_streams(data):
    """sacrebleu wants reference streams; pad ragged counts with None, as its API allows."""
    k = max(len(refs_of(r)) for r in data)
    return [[refs_of(r)[i] if i < len(refs_of(r)) else None for r in data] for i in range(k)]


def jsonl(records):
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def run_score(cli, args, data=DATA):
    res = cli(["score", *args], input=jsonl(data))
    assert res.exit_code == 0, res.stderr
    recs = res.records()
    assert recs[-1]["_summary"] is True
    return recs[:-1], recs[-1]
