"""The fast training paths give the plain path's numbers: logits only at target positions (in
chunks), padding-free micro-batches with per-example attention, the fused optimizer."""

from __future__ import annotations

import pytest

from llmtools.ops.finetune import dataset as fd

pytest.importorskip("peft")
torch = pytest.importorskip("torch")

F = fd.Fields()


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _lora(path, seed=0):
    from peft import LoraConfig, get_peft_model

    from llmtools.ops.finetune.training import load_causal_lm

    model = load_causal_lm(path, torch.device("cpu"))
    torch.manual_seed(seed)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"))
    with torch.no_grad():  # LoRA starts with B = 0, so A would get no gradient: give both a value
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return model


def _examples(tok, n=6, loss_on="completion"):
    words = "one two three four five six seven eight nine ten eleven twelve".split()
    recs = [{"prompt": "hello " + " ".join(words[: 1 + (i * 5) % 11]), "completion": f" {words[i % 12]} goodbye"} for i in range(n)]
    return [fd.tokenize_record(r, "prompt-completion", tok, F, loss_on=loss_on) for r in recs]


def _loss_and_grads(model, fn):
    model.zero_grad(set_to_none=True)
    ce, kl, n = fn()
    total = ce if kl is None else ce + kl
    total.backward()
    grads = {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.requires_grad}
    return float(ce), (None if kl is None else float(kl)), n, grads


def _assert_same(a, b, rel=1e-5):
    assert a[2] == b[2]  # target count
    assert a[0] == pytest.approx(b[0], rel=rel)
    if a[1] is not None or b[1] is not None:
        assert a[1] == pytest.approx(b[1], rel=1e-4, abs=1e-6)
    assert a[3].keys() == b[3].keys() and a[3]
    for k in a[3]:
        torch.testing.assert_close(a[3][k], b[3][k], rtol=1e-4, atol=1e-6, msg=k)


@pytest.mark.parametrize("loss_on", ["completion", "all"])
@pytest.mark.parametrize("chunk", [1024, 5], ids=["one-chunk", "many-chunks"])
def test_target_position_loss_equals_full_logits_loss(tok, tiny_model_dir, loss_on, chunk):
    from llmtools.ops.finetune.losses import head_parts, target_losses, token_losses

    model = _lora(tiny_model_dir)
    assert head_parts(model) is not None  # the fast path is the one under test
    batch = fd.collate(fd.as_rows(_examples(tok, loss_on=loss_on)), tok.pad_token_id, packed=False)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    plain = _loss_and_grads(model, lambda: token_losses(model(**inputs).logits, batch["labels"]))
    fast = _loss_and_grads(model, lambda: target_losses(model, batch, chunk=chunk))
    _assert_same(fast, plain)
    if loss_on == "completion":  # the prompt has no target: far fewer positions than tokens
        assert plain[2] < batch["attention_mask"].sum() / 2


@pytest.mark.parametrize("head_trains", [True, False])
def test_linear_cross_entropy_equals_cross_entropy_over_full_logits(head_trains):
    import torch.nn.functional as F

    from llmtools.ops.finetune.losses import linear_cross_entropy

    torch.manual_seed(0)
    hidden = torch.randn(37, 8, requires_grad=True)
    weight = torch.randn(50, 8, requires_grad=head_trains)
    targets = torch.randint(0, 50, (37,))
    results = []
    for fn in (lambda: linear_cross_entropy(hidden, weight, targets, chunk=5),
               lambda: F.cross_entropy(hidden @ weight.t(), targets, reduction="sum")):
        hidden.grad = weight.grad = None
        loss = fn()
        (loss * 0.7).backward()  # backward scales what forward kept
        results.append((loss.detach(), hidden.grad.clone(), weight.grad.clone() if head_trains else None))
    (l1, h1, w1), (l2, h2, w2) = results
    torch.testing.assert_close(l1, l2)
    torch.testing.assert_close(h1, h2)
    if head_trains:
        torch.testing.assert_close(w1, w2)


def test_full_finetune_gradients_reach_the_head_through_the_fused_loss(tok, tiny_model_dir):
    """Every weight trains (the tied head and embeddings too): the same gradients as the full logits."""
    from llmtools.ops.finetune.losses import head_parts, target_losses, token_losses
    from llmtools.ops.finetune.training import load_causal_lm

    model = load_causal_lm(tiny_model_dir, torch.device("cpu"))
    assert head_parts(model)[1].weight.requires_grad
    batch = fd.collate(fd.as_rows(_examples(tok)), tok.pad_token_id, packed=False)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    plain = _loss_and_grads(model, lambda: token_losses(model(**inputs).logits, batch["labels"]))
    fast = _loss_and_grads(model, lambda: target_losses(model, batch, chunk=7))
    _assert_same(fast, plain)


def test_distillation_kl_at_target_positions_equals_full_logits(tok, tiny_model_dir, tmp_path):
    from tests.helpers.tiny import build_tiny_llama

    from llmtools.ops.finetune.losses import target_losses, token_losses
    from llmtools.ops.finetune.training import load_causal_lm

    teacher = load_causal_lm(build_tiny_llama(tmp_path / "teacher", seed=3), torch.device("cpu")).eval()
    model = _lora(tiny_model_dir)
    batch = fd.collate(fd.as_rows(_examples(tok)), tok.pad_token_id, packed=False)
    inputs = {k: v for k, v in batch.items() if k != "labels"}

    def plain():
        with torch.no_grad():
            t = teacher(**inputs).logits
        return token_losses(model(**inputs).logits, batch["labels"], t, 2.0)

    ref = _loss_and_grads(model, plain)
    assert ref[1] > 0
    for chunk in (1024, 4):
        _assert_same(_loss_and_grads(model, lambda: target_losses(model, batch, teacher, 2.0, chunk=chunk)), ref)


def test_full_logits_fallback_gives_the_same_loss(tok, tiny_model_dir):
    from llmtools.ops.finetune.losses import target_losses

    model = _lora(tiny_model_dir)
    batch = fd.collate(fd.as_rows(_examples(tok)), tok.pad_token_id, packed=False)
    _assert_same(_loss_and_grads(model, lambda: target_losses(model, batch, parts=False)),
                 _loss_and_grads(model, lambda: target_losses(model, batch)))


@pytest.mark.parametrize("packing", [False, True], ids=["rows", "packed-rows"])
def test_padding_free_batch_with_per_example_attention_equals_padded_batch(tok, tiny_model_dir, packing):
    from llmtools.ops.finetune.attention import use_varlen
    from llmtools.ops.finetune.losses import target_losses

    exs = _examples(tok, 8)
    rows = fd.pack(exs, 40) if packing else fd.as_rows(exs)
    assert not packing or any(r.n_examples > 1 for r in rows)
    model = _lora(tiny_model_dir)
    padded = _loss_and_grads(model, lambda: target_losses(model, fd.collate(rows, tok.pad_token_id, packed=packing)))
    flat = fd.collate(rows, tok.pad_token_id, packed=packing, flat=True)
    assert flat["input_ids"].shape == (1, sum(len(r.input_ids) for r in rows))  # not one pad token
    assert sum(flat["seq_lens"]) == flat["input_ids"].shape[1] and len(flat["seq_lens"]) == len(exs)
    dense_mask = _loss_and_grads(model, lambda: target_losses(model, {**flat, "seq_lens": None}))
    assert use_varlen(model)
    varlen = _loss_and_grads(model, lambda: target_losses(model, flat))
    _assert_same(dense_mask, padded)
    _assert_same(varlen, padded)
    # Without the lengths (evaluation's padded batches) the switched model is plain sdpa.
    _assert_same(_loss_and_grads(model, lambda: target_losses(model, fd.collate(rows, tok.pad_token_id, packed=packing))), padded)


def test_optimizer_is_fused_and_steps_like_the_plain_one(tiny_model_dir):
    from llmtools.ops.finetune.settings import Settings
    from llmtools.ops.finetune.training import build_optimizer

    params = [torch.nn.Parameter(torch.randn(8, 4)), torch.nn.Parameter(torch.randn(4))]
    ref = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt, _ = build_optimizer(_Params(params), Settings(weight_decay=0.01), 10)
    assert opt.defaults.get("fused") or opt.defaults.get("foreach")
    plain = torch.optim.AdamW([{"params": [ref[0]], "weight_decay": 0.01}, {"params": [ref[1]], "weight_decay": 0.0}],
                              lr=2e-4, foreach=False)
    for _ in range(3):
        for group in (params, ref):
            for p in group:
                p.grad = torch.ones_like(p) * 0.5
        opt.step()
        plain.step()
    for a, b in zip(params, ref):
        torch.testing.assert_close(a, b)


class _Params:
    def __init__(self, params):
        self.params = params

    def named_parameters(self):
        return [("weight", self.params[0]), ("bias", self.params[1])]


def test_padding_free_training_logs_the_same_losses_as_padded_training(cli, tiny_model_dir, tmp_path):
    """Through the real command: same data order, same per-step losses, batches with or without pads."""
    import json

    words = "one two three four five six seven eight nine ten eleven twelve".split()
    recs = [{"prompt": "hello " + " ".join(words[: 1 + (i * 7) % 12]), "completion": f" {words[i % 12]} goodbye"} for i in range(16)]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in recs))
    logs = {}
    for flag in ("--padding-free", "--padded"):
        out = tmp_path / flag.strip("-")
        res = cli(["finetune", "--base", tiny_model_dir, "-o", out, "--max-steps", "3", "--log-every", "1", "--lora-dropout", "0",
                   "--lr", "1e-2", "--eval-fraction", "0.25", flag, str(data)])
        assert res.exit_code == 0, res.stderr
        recs_out = res.records()
        logs[flag] = [r["loss"] for r in recs_out if r["type"] == "train"] + [recs_out[-1]["eval_loss"]]
        assert json.loads((out / "llmtools-manifest.json").read_text())["params"]["padding_free"] is (flag == "--padding-free")
    assert len(logs["--padded"]) == 4 and logs["--padded"][0] != logs["--padded"][2]  # it did train
    assert logs["--padding-free"] == pytest.approx(logs["--padded"], rel=1e-4)


@pytest.mark.parametrize("layout", [("--padding-free",), ("--padded",), ("--packing",)])
def test_a_token_budget_per_pass_gives_the_same_losses(cli, tiny_model_dir, tmp_path, layout):
    """--max-pass-tokens runs a micro-batch as several forward/backward passes: same step, same losses."""
    import json

    words = "one two three four five six seven eight nine ten eleven twelve".split()
    recs = [{"prompt": "hello " + " ".join(words[: 1 + (i * 7) % 12]), "completion": f" {words[i % 12]} goodbye"} for i in range(16)]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in recs))
    logs = {}
    for budget in ("0", "24"):
        out = tmp_path / f"b{budget}"
        res = cli(["finetune", "--base", tiny_model_dir, "-o", out, "--max-steps", "3", "--log-every", "1", "--lora-dropout", "0",
                   "--lr", "1e-2", "--eval-fraction", "0.25", "--max-pass-tokens", budget, *layout, str(data)])
        assert res.exit_code == 0, res.stderr
        recs_out = res.records()
        logs[budget] = [(r["loss"], r["grad_norm"]) for r in recs_out if r["type"] == "train"] + [recs_out[-1]["eval_loss"]]
        assert json.loads((out / "llmtools-manifest.json").read_text())["params"]["max_pass_tokens"] == int(budget)
    assert len(logs["0"]) == 4 and logs["0"][0] != logs["0"][2]  # it did train
    for a, b in zip(logs["0"], logs["24"]):
        assert a == pytest.approx(b, rel=1e-4)
