"""finetune data handling: shapes, loss masks on the labels, packing, data order, eval split."""

from __future__ import annotations

import pytest

from llmtools.ops.finetune import dataset as fd

F = fd.Fields()


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_detect_and_validate_shapes():
    assert fd.detect_format({"text": "a"}, F) == "text"
    assert fd.detect_format({"prompt": "a", "completion": "b"}, F) == "prompt-completion"
    assert fd.detect_format({"messages": [{"role": "user", "content": "x"}]}, F) == "messages"
    assert fd.detect_format({"other": 1}, F) is None
    v = fd.RecordValidator("auto", F)
    assert v({"prompt": "a", "completion": "b"}) is None and v.fmt == "prompt-completion"
    assert v({"text": "now a text record"}) == "missing field 'prompt'"  # the first record fixed the shape
    assert v({"prompt": "a", "completion": 3}) == "field 'completion' is int, not a string"
    assert v({"prompt": "a", "completion": "  "}) == "field 'completion' is empty"
    m = fd.RecordValidator("messages", F)
    assert m({"messages": [{"role": "user", "content": "hi"}]}) == "no assistant message to train on"
    assert "role 'robot'" in m({"messages": [{"role": "robot", "content": "hi"}]})
    assert m({"messages": "hi"}).startswith("field 'messages' must be")
    assert fd.RecordValidator("text", fd.Fields(text="body.t"))({"body": {"t": "x"}}) is None


def test_prompt_completion_labels_mask_the_prompt(tok):
    rec = {"prompt": "Paris is the capital of", "completion": " France."}
    ex = fd.tokenize_record(rec, "prompt-completion", tok, F)
    prompt_ids = tok("Paris is the capital of")["input_ids"]
    n = len(prompt_ids)
    assert ex.input_ids[:n] == prompt_ids
    assert ex.labels[:n] == [fd.IGNORE] * n
    assert ex.labels[n:] == ex.input_ids[n:]
    assert tok.decode(ex.labels[n:]) == " France.<|im_end|>"  # the completion and the EOS, nothing else
    everything = fd.tokenize_record(rec, "prompt-completion", tok, F, loss_on="all")
    assert everything.labels == everything.input_ids


def test_chat_labels_cover_exactly_the_assistant_turns(tok):
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello there"},
        {"role": "assistant", "content": "hello again"},
        {"role": "user", "content": "one two three"},
        {"role": "assistant", "content": "four five six"},
    ]
    ex = fd.tokenize_record({"messages": msgs}, "messages", tok, F)
    rendered = tok.apply_chat_template(msgs, tokenize=False)
    assert tok.decode(ex.input_ids) == rendered
    # Group consecutive labelled tokens into spans and decode them.
    spans, cur = [], []
    for t, lab in zip(ex.input_ids, ex.labels):
        if lab != fd.IGNORE:
            assert lab == t
            cur.append(t)
        elif cur:
            spans.append(tok.decode(cur))
            cur = []
    if cur:
        spans.append(tok.decode(cur))
    assert spans == ["hello again<|im_end|>\n", "four five six<|im_end|>\n"]
    everything = fd.tokenize_record({"messages": msgs}, "messages", tok, F, loss_on="all")
    assert everything.labels == everything.input_ids


def test_text_trains_on_every_token_and_truncates(tok):
    ex = fd.tokenize_record({"text": "one two three four five"}, "text", tok, F)
    assert ex.labels == ex.input_ids and ex.input_ids[-1] == tok.eos_token_id
    short = fd.tokenize_record({"text": "one two three four five"}, "text", tok, F, max_seq_len=3)
    assert len(short.input_ids) == 3


def test_records_without_targets_after_truncation_are_dropped(tok):
    dropped = []
    recs = [{"prompt": "one two three four five six seven eight nine ten", "completion": " x"}, {"prompt": "a", "completion": " b"}]
    out = fd.tokenize_all(recs, "prompt-completion", tok, F, "completion", 4, on_drop=lambda r, why: dropped.append((r, why)))
    assert len(out) == 1 and dropped[0][0] is recs[0] and "no target tokens" in dropped[0][1]


def _examples(tok, n=9):
    words = "one two three four five six seven eight nine ten eleven twelve".split()
    return [fd.tokenize_record({"prompt": " ".join(words[: 1 + i % 5]), "completion": " " + " ".join(words[: 1 + (i * 7) % 11])}, "prompt-completion", tok, F) for i in range(n)]


def test_packing_keeps_whole_examples_and_restarts_positions(tok):
    exs = _examples(tok)
    rows = fd.pack(exs, 48)
    assert len(rows) < len(exs)
    assert all(len(r.input_ids) <= 48 for r in rows)
    assert sum(r.n_examples for r in rows) == len(exs)
    assert sorted(t for r in rows for t in r.input_ids) == sorted(t for e in exs for t in e.input_ids)
    for r in rows:
        starts = [i for i, p in enumerate(r.position_ids) if p == 0]
        assert len(starts) == r.n_examples
        assert all(r.labels[i] == fd.IGNORE for i in starts)  # no example predicted from the one before
    # Total trained tokens are the same packed or not.
    assert sum(r.n_target for r in rows) == sum(r.n_target for r in fd.as_rows(exs))


def test_packed_loss_equals_unpacked_loss(tok, tiny_model_dir):
    """Packed rows must not attend across examples: the summed loss is the same as one by one."""
    import torch
    from transformers import AutoModelForCausalLM

    from llmtools.ops.finetune import forward, token_losses

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    exs = _examples(tok, 6)
    rows = fd.pack(exs, 64)
    assert any(r.n_examples > 1 for r in rows)
    with torch.no_grad():
        b = fd.collate(rows, tok.pad_token_id, packed=True)
        packed, _, n1 = token_losses(forward(model, b, "cpu"), b["labels"])
        b = fd.collate(fd.as_rows(exs), tok.pad_token_id, packed=False)
        plain, _, n2 = token_losses(forward(model, b, "cpu"), b["labels"])
    assert n1 == n2
    assert float(packed) == pytest.approx(float(plain), rel=1e-4)


def test_passes_keep_every_token_within_the_budget(tok):
    exs = _examples(tok, 12)
    rows = fd.as_rows(exs)
    lens = [len(r.input_ids) for r in rows]
    budget = max(lens) + 3
    for flat in (True, False):
        passes = fd.split_passes(rows, budget, flat)
        assert len(passes) > 1
        assert [r for p in passes for r in p] == rows  # same rows, same order
        assert all(fd.pass_tokens(p, flat) <= budget for p in passes)
    # Padded passes count rows x the longest row, so they are never fewer than padding-free ones.
    assert len(fd.split_passes(rows, budget, False)) >= len(fd.split_passes(rows, budget, True))
    assert fd.split_passes(rows, None, True) == [rows] and fd.split_passes(rows, 0, False) == [rows]
    assert fd.split_passes(rows, 10**6, True) == [rows]
    # One row longer than the budget is a pass of its own.
    assert fd.split_passes(rows, 1, True) == [[r] for r in rows]


def test_a_packed_row_over_the_budget_splits_between_its_records(tok):
    exs = _examples(tok, 9)
    rows = fd.pack(exs, 64)
    big = max(rows, key=lambda r: r.n_examples)
    assert big.n_examples > 1
    pieces = fd.unpack(big)
    assert len(pieces) == big.n_examples and all(p.position_ids[0] == 0 for p in pieces)
    assert [t for p in pieces for t in p.input_ids] == big.input_ids
    assert [t for p in pieces for t in p.labels] == big.labels
    passes = fd.split_passes([big], len(big.input_ids) - 1, flat=True)
    assert len(passes) > 1 and [p for ps in passes for p in ps] == pieces
    # The laid-out batch is the same tokens, labels and positions as the row's own.
    whole = fd.collate([big], 0, packed=True, flat=True)
    parts = [fd.collate(ps, 0, packed=True, flat=True) for ps in passes]
    assert sum((b["input_ids"][0].tolist() for b in parts), []) == whole["input_ids"][0].tolist()
    assert sum((b["labels"][0].tolist() for b in parts), []) == whole["labels"][0].tolist()
    assert sum((b["position_ids"][0].tolist() for b in parts), []) == whole["position_ids"][0].tolist()
    # Padded batches cannot split a row.
    assert fd.split_passes([big], 1, flat=False) == [[big]]


def test_schedule_is_a_function_of_seed_and_epoch():
    s = fd.Schedule(n_rows=10, batch_size=2, grad_accum=2, seed=7)
    assert s.micro_per_epoch == 5 and s.steps_per_epoch == 3
    again = fd.Schedule(n_rows=10, batch_size=2, grad_accum=2, seed=7)
    assert [s.micro_batches(1, k) for k in range(3)] == [again.micro_batches(1, k) for k in range(3)]
    assert s.permutation(0) != s.permutation(1)
    assert sorted(i for k in range(3) for mb in s.micro_batches(0, k) for i in mb) == list(range(10))  # each row once
    assert [len(mb) for mb in s.micro_batches(0, 2)] == [2]  # 5 micro-batches, 2 per step: the last step has one
    assert fd.Schedule(10, 2, 2, seed=8).permutation(0) != fd.Schedule(10, 2, 2, seed=7).permutation(0)
    # Two ranks with batch 2 see exactly the rows one process with batch 4 sees, step by step.
    one = fd.Schedule(12, 4, 1, seed=3)
    two = fd.Schedule(12, 2, 1, seed=3, world=2)
    assert one.steps_per_epoch == two.steps_per_epoch == 3
    for k in range(3):
        assert sorted(i for mb in two.all_ranks(0, k) for i in mb) == sorted(one.micro_batches(0, k)[0])
    # An uneven split is padded so every rank runs the same number of full micro-batches.
    odd = fd.Schedule(11, 2, 1, seed=3, world=2)
    assert all(len(odd.micro_batches(0, k, rank=r)[0]) == 2 for k in range(odd.steps_per_epoch) for r in (0, 1))


def test_eval_split_is_seeded_and_disjoint():
    recs = [{"text": str(i)} for i in range(50)]
    tr, ev = fd.split_eval(recs, 0.2, seed=1)
    assert len(ev) == 10 and len(tr) == 40
    assert {r["text"] for r in tr}.isdisjoint({r["text"] for r in ev})
    assert fd.split_eval(recs, 0.2, seed=1)[1] == ev
    assert fd.split_eval(recs, 0.2, seed=2)[1] != ev
