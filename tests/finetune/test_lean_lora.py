"""The lean LoRA forward (ops/finetune/lean_lora.py) computes peft's function: same outputs and
gradients without dropout, the same dropout distribution with it, and peft's path otherwise."""

from __future__ import annotations

import pytest

pytest.importorskip("peft")
torch = pytest.importorskip("torch")


def _model(dropout):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(12, 20, bias=False), torch.nn.ReLU(), torch.nn.Linear(20, 6))
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=["0", "2"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    return model


def _run(model, x):
    model.zero_grad(set_to_none=True)
    y = model(x)
    (y * torch.arange(y.numel()).view_as(y)).sum().backward()
    return y.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}


def test_lean_forward_equals_peft_forward_in_outputs_and_gradients():
    from llmtools.ops.finetune.lean_lora import use_lean_lora

    x = torch.randn(3, 5, 12)
    model = _model(0.0)
    y_peft, g_peft = _run(model, x)
    assert use_lean_lora(model) == 2
    y_lean, g_lean = _run(model, x)
    torch.testing.assert_close(y_lean, y_peft)
    assert g_lean.keys() == g_peft.keys() and g_lean
    for k in g_peft:
        torch.testing.assert_close(g_lean[k], g_peft[k], msg=k)
    model.eval()
    torch.testing.assert_close(model(x), y_peft)


def test_lean_dropout_keeps_each_input_with_probability_one_minus_p():
    from llmtools.ops.finetune.lean_lora import use_lean_lora

    model = _model(0.25)
    use_lean_lora(model)
    layer = model.base_model.model[0]
    x = torch.randn(4000, 12)
    torch.manual_seed(1)
    y = layer(x)
    # The same draws, by hand: kept where rand >= p, scaled by 1 / (1 - p).
    torch.manual_seed(1)
    kept = torch.rand_like(x) >= 0.25
    h = (x * kept / 0.75) @ layer.lora_A["default"].weight.t() @ layer.lora_B["default"].weight.t()
    torch.testing.assert_close(y, layer.base_layer(x) + h * layer.scaling["default"])
    assert kept.float().mean().item() == pytest.approx(0.75, abs=0.01)
    # And the same gradients as that expression, for the input and both LoRA matrices.
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    layer.train()
    xg = x[:50].clone().requires_grad_(True)
    torch.manual_seed(1)
    kept = torch.rand_like(xg) >= 0.25
    grads = []
    for fn in (lambda: layer(xg), lambda: layer.base_layer(xg) + (xg * kept / 0.75) @ a.t() @ b.t() * layer.scaling["default"]):
        torch.manual_seed(1)
        for t in (xg, a, b):
            t.grad = None
        (fn() * torch.arange(50 * 20).view(50, 20)).sum().backward()
        grads.append([t.grad.clone() for t in (xg, a, b)])
    for g1, g2 in zip(*grads):
        torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-5)  # float sums in another order
    layer.eval()  # no dropout in eval
    torch.testing.assert_close(layer(x), layer.base_layer(x) + x @ layer.lora_A["default"].weight.t()
                               @ layer.lora_B["default"].weight.t() * layer.scaling["default"])


def test_other_cases_take_peft_forward():
    from llmtools.ops.finetune.lean_lora import use_lean_lora

    x = torch.randn(2, 12)
    model = _model(0.0)
    use_lean_lora(model)
    with model.disable_adapter():  # disabled adapters: the base model alone
        torch.testing.assert_close(model(x), model.base_model.model[2](torch.relu(model.base_model.model[0].base_layer(x))))
    merged = model.merge_and_unload()  # merging still works and gives the adapted function
    torch.testing.assert_close(merged(x), _model(0.0)(x))
