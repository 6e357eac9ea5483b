"""The transformers/torch backend: any causal LM in Hugging Face format (safetensors).

Generation runs a token-by-token loop over the KV cache (so streaming, stop sequences and seeded
sampling share one code path and `stream` reassembles to exactly what `generate` returns);
`generate_batch` uses transformers' batched `generate` with left padding. Scoring uses strided
sliding windows of at most n_ctx tokens. `embed` mean-pools the last hidden layer over the
tokens (no special tokens added) and L2-normalises it: a usable similarity signal, not a trained
sentence embedder.
"""

from __future__ import annotations

import random
from typing import Any, Iterator, Sequence

from llmtools.errors import LLMToolsError, UsageError, require
from llmtools.models._text import StopScanner, cut_at_stop, fallback_chat_prompt, quiet_transformers, sliding_windows
from llmtools.models.base import Backend, Chunk, Completion, GenerationParams, LogLikelihood, ModelIdentity
from llmtools.models.identity import local_identity
from llmtools.models.loading import hf_dir
from llmtools.models.refs import ResolvedRef

DEFAULT_N_CTX = 2048
DTYPES = ("float32", "bfloat16", "float16")
SCORE_TOKEN_BUDGET = 2048  # tokens per scoring forward pass: bounds the [batch, len, vocab] logits


def load_torch(resolved: ResolvedRef, trust_pickle: bool = False, **opts: Any) -> "TorchBackend":
    path = hf_dir(resolved, trust_pickle=trust_pickle)
    if resolved.kind == "hf":
        identity = local_identity(resolved.name, "hf", path)
    else:
        # A converted copy of a GGUF: name it after the source, hash the copy, parent = source.
        identity = local_identity(resolved.name, "hf", path)
    return TorchBackend(path, identity, pickle=resolved.pickle, **opts)


def _pick_device(torch: Any, device: str | None) -> str:
    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


class TorchBackend(Backend):
    backend_name = "torch"
    supports_embeddings = True

    def __init__(
        self,
        path: str,
        identity: ModelIdentity,
        device: str | None = None,
        dtype: str | None = None,
        threads: int | None = None,
        n_ctx: int | None = None,
        seed: int | None = None,
        batch_size: int = 8,
        pickle: bool = False,
        **_other_backends_opts: Any,
    ):
        torch = require("torch", "train", "the torch backend")
        transformers = require("transformers", "train", "the torch backend")
        self.torch = torch
        quiet_transformers()
        if threads:
            torch.set_num_threads(int(threads))
        self.identity = identity
        self.path = path
        self.device = _pick_device(torch, device)
        if dtype is None:
            dtype = "float32" if self.device == "cpu" else ("bfloat16" if self._bf16_ok() else "float16")
        if dtype not in DTYPES:
            raise UsageError(f"unknown dtype {dtype!r} (choose from: {', '.join(DTYPES)})")
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(path)
            self.model = transformers.AutoModelForCausalLM.from_pretrained(
                path, dtype=getattr(torch, dtype), use_safetensors=not pickle
            )
        except (OSError, ValueError) as exc:
            raise LLMToolsError(f"cannot load {path} with transformers: {exc}") from exc
        try:
            self.model.to(self.device)
        except (RuntimeError, AssertionError, ValueError) as exc:  # e.g. device="cuda" without CUDA
            raise UsageError(f"cannot use device {self.device!r}: {exc}") from exc
        self.model.eval()
        tok = self.tokenizer
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        tok.padding_side = "left"
        self.eos_ids = self._eos_ids()
        max_pos = getattr(self.model.config, "max_position_embeddings", None) or DEFAULT_N_CTX
        self.n_ctx = min(int(n_ctx), max_pos) if n_ctx else min(DEFAULT_N_CTX, max_pos)
        self.default_seed = seed
        # transformers 5.x renamed `past_key_values` to `cache` (the old name warns); use what this
        # version's forward() takes.
        import inspect

        params = inspect.signature(self.model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self.batch_size = max(1, int(batch_size))

    def _bf16_ok(self) -> bool:
        try:
            return bool(self.torch.cuda.is_bf16_supported())
        except (AttributeError, RuntimeError):
            return False

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        for source in (getattr(self.model, "generation_config", None), self.model.config):
            value = getattr(source, "eos_token_id", None) if source is not None else None
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, (list, tuple)):
                ids.update(int(v) for v in value)
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        return ids

    # -- tokens
    def tokenize(self, text: str, add_special: bool = False) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=add_special))

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def _prompt_ids(self, prompt: str) -> list[int]:
        return list(self.tokenizer.encode(prompt, add_special_tokens=True))

    # -- chat
    def apply_chat_template(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
            )
        return fallback_chat_prompt(messages, add_generation_prompt, self.identity.name)

    # -- generation
    def _generator(self, seed: int | None) -> Any:
        gen = self.torch.Generator(device=self.device)
        seed = seed if seed is not None else self.default_seed
        gen.manual_seed(seed if seed is not None else random.randrange(2**63))
        return gen

    def _sample(self, logits: Any, params: GenerationParams, gen: Any) -> int:
        torch = self.torch
        if params.temperature <= 0:
            return int(torch.argmax(logits).item())
        logits = logits.float() / params.temperature
        if params.top_k and params.top_k > 0 and params.top_k < logits.shape[-1]:
            kth = torch.topk(logits, params.top_k).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if params.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, descending=True)
            probs = torch.softmax(sorted_logits, dim=-1)
            drop = (torch.cumsum(probs, dim=-1) - probs) > params.top_p  # keep the first above top_p
            sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
            logits = torch.full_like(logits, float("-inf")).scatter(0, order, sorted_logits)
        probs = torch.softmax(logits, dim=-1)
        return int(torch.multinomial(probs, 1, generator=gen).item())

    def _budget(self, n_prompt: int, max_tokens: int) -> int:
        room = self.n_ctx - n_prompt
        if room <= 0 and max_tokens > 0:
            raise LLMToolsError(
                f"prompt has {n_prompt} tokens, which fills the context of {self.n_ctx}; "
                "shorten it or load the model with a larger n_ctx"
            )
        return min(max_tokens, max(room, 0))

    def _token_stream(self, prompt_ids: list[int], params: GenerationParams) -> Iterator[int]:
        """Yield sampled token ids until EOS (not yielded) or the budget runs out."""
        torch = self.torch
        budget = self._budget(len(prompt_ids), params.max_tokens)
        if budget == 0:
            return
        gen = self._generator(params.seed)
        past = None
        current = torch.tensor([prompt_ids], device=self.device)
        with torch.inference_mode():
            for _ in range(budget):
                out = self.model(input_ids=current, use_cache=True, **{self._cache_arg: past})
                past = getattr(out, self._cache_arg, None)
                token = self._sample(out.logits[0, -1], params, gen)
                if token in self.eos_ids:
                    return
                yield token
                current = torch.tensor([[token]], device=self.device)

    def stream(self, prompt: str, params: GenerationParams | None = None) -> Iterator[Chunk]:
        params = params or GenerationParams()
        prompt_ids = self._prompt_ids(prompt)
        scanner = StopScanner(params.stop)
        ids: list[int] = []
        prefix_offset = read_offset = 0
        finish = "length"
        hit_eos = True
        for token in self._token_stream(prompt_ids, params):
            ids.append(token)
            # Decode a small window so multi-byte characters split across tokens come out whole.
            prefix = self.tokenizer.decode(ids[prefix_offset:read_offset], skip_special_tokens=True)
            new = self.tokenizer.decode(ids[prefix_offset:], skip_special_tokens=True)
            if len(new) > len(prefix) and not new.endswith("\ufffd"):
                piece = scanner.feed(new[len(prefix) :])
                prefix_offset, read_offset = read_offset, len(ids)
                if piece:
                    yield Chunk(piece)
                if scanner.stopped:
                    finish = "stop"
                    break
        else:
            hit_eos = len(ids) < self._budget(len(prompt_ids), params.max_tokens)
        if not scanner.stopped:
            prefix = self.tokenizer.decode(ids[prefix_offset:read_offset], skip_special_tokens=True)
            rest = self.tokenizer.decode(ids[prefix_offset:], skip_special_tokens=True)[len(prefix) :]
            tail = scanner.feed(rest) + scanner.flush()
            if scanner.stopped or hit_eos:
                finish = "stop"
            if tail:
                yield Chunk(tail)
        yield Chunk("", finish, len(prompt_ids), len(ids))

    def generate(self, prompt: str, params: GenerationParams | None = None) -> Completion:
        parts: list[str] = []
        last = None
        for chunk in self.stream(prompt, params):
            parts.append(chunk.text)
            last = chunk
        return Completion("".join(parts), last.prompt_tokens or 0, last.completion_tokens or 0, last.finish_reason or "stop")

    def generate_batch(self, prompts: Sequence[str], params: GenerationParams | None = None) -> list[Completion]:
        params = params or GenerationParams()
        prompts = list(prompts)
        if len(prompts) <= 1:
            return [self.generate(p, params) for p in prompts]
        results: list[Completion] = []
        for i in range(0, len(prompts), self.batch_size):
            results.extend(self._generate_group(prompts[i : i + self.batch_size], params))
        return results

    def _generate_group(self, prompts: list[str], params: GenerationParams) -> list[Completion]:
        torch = self.torch
        from transformers import GenerationConfig

        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=True).to(self.device)
        lengths = enc["attention_mask"].sum(dim=1).tolist()
        width = enc["input_ids"].shape[1]
        budget = self._budget(width, params.max_tokens)
        if budget == 0:
            return [Completion("", int(n), 0, "length") for n in lengths]
        sample = params.temperature > 0
        config = GenerationConfig(
            max_new_tokens=budget,
            do_sample=sample,
            temperature=params.temperature if sample else None,
            top_p=params.top_p if sample else None,
            top_k=(params.top_k or None) if sample else None,
            eos_token_id=sorted(self.eos_ids) or None,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        kwargs: dict[str, Any] = {}
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        seed = params.seed if params.seed is not None else self.default_seed
        if sample:
            torch.manual_seed(seed if seed is not None else random.randrange(2**63))
        with torch.inference_mode():
            out = self.model.generate(**enc, generation_config=config, **kwargs)
        completions = []
        for row, n_prompt in zip(out[:, width:].tolist(), lengths):
            ids, hit_eos = [], False
            for token in row:
                if token in self.eos_ids:
                    hit_eos = True
                    break
                ids.append(token)
            text, stopped = cut_at_stop(self.tokenizer.decode(ids, skip_special_tokens=True), params.stop)
            finish = "stop" if (hit_eos or stopped) else "length"
            completions.append(Completion(text, int(n_prompt), len(ids), finish))
        return completions

    # -- scoring
    def loglikelihood(self, texts: Sequence[str]) -> list[LogLikelihood]:
        torch = self.torch
        totals = [0.0] * len(texts)
        counts = [0] * len(texts)
        jobs = []  # (text index, window ids, first scored position inside the window)
        for i, text in enumerate(texts):
            ids = self._prompt_ids(text)
            for start, end, first in sliding_windows(len(ids), self.n_ctx):
                jobs.append((i, ids[start:end], first - start))
        jobs.sort(key=lambda job: len(job[1]))
        pad = self.tokenizer.pad_token_id or 0
        with torch.inference_mode():
            k = 0
            while k < len(jobs):
                width = len(jobs[k][1])
                group = [jobs[k]]
                k += 1
                while k < len(jobs) and (len(group) + 1) * len(jobs[k][1]) <= max(SCORE_TOKEN_BUDGET, width):
                    group.append(jobs[k])
                    k += 1
                width = max(len(g[1]) for g in group)
                input_ids = torch.full((len(group), width), pad, dtype=torch.long)
                mask = torch.zeros((len(group), width), dtype=torch.long)
                for r, (_, ids, _) in enumerate(group):
                    input_ids[r, : len(ids)] = torch.tensor(ids)
                    mask[r, : len(ids)] = 1
                logits = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)).logits
                for r, (i, ids, first) in enumerate(group):
                    row = torch.log_softmax(logits[r, first - 1 : len(ids) - 1].float(), dim=-1)
                    target = torch.tensor(ids[first:], device=row.device)
                    totals[i] += float(row.gather(1, target[:, None]).sum().item())
                    counts[i] += len(ids) - first
                del logits
        return [LogLikelihood(t, n) for t, n in zip(totals, counts)]

    # -- embeddings
    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        torch = self.torch
        base = getattr(self.model, self.model.base_model_prefix, self.model)
        out: list[list[float]] = []
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(
                    list(texts[i : i + self.batch_size]),
                    return_tensors="pt",
                    padding=True,
                    truncation=True,
                    max_length=self.n_ctx,
                    add_special_tokens=False,
                ).to(self.device)
                hidden = base(**enc).last_hidden_state.float()
                mask = enc["attention_mask"].unsqueeze(-1).float()
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
                out.extend(pooled.cpu().tolist())
        return out

    def close(self) -> None:
        self.model = None
