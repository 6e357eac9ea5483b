"""Streaming monitoring: window metrics, drift against a reference, and alert rules.

`Monitor` takes records one at a time (`feed`), keeps per-pane aggregates of bounded size
(counters, quantile sketches, capped category tables) and, each time a window closes, returns the
window's metric record followed by any alert transitions. `watch()` wraps it as a generator over
an iterator of records. Nothing here prints.

Windows are made of panes: a tumbling window is one pane; a sliding window of length W that
advances every S is W/S panes, merged when it is emitted. Time windows use the record's own time
(event time) and are aligned to the epoch (a 5m window starts at :00, :05, ...); count windows
close every N records.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections import Counter, deque
from typing import Any, Callable, Iterable, Iterator

from llmtools.errors import UsageError
from llmtools.io import field_getter, get_field, top_key
from llmtools.ops.watch import drift as wd
from llmtools.ops.watch.alerts import GROUP_FUNCTIONS, Alert, metrics_used
from llmtools.ops.watch.config import WatchConfig, iso, parse_time
from llmtools.ops.watch.groups import GroupTable, group_value, summarize
from llmtools.ops.watch.sketch import MIN_INDEXABLE, Sketch, quantile_name

_WORD = re.compile(r"\w+")

CATEGORY_CAP = 1000  # distinct values kept per categorical field; the rest count as OTHER
VOCAB_CAP = 5000  # tokens kept per vocabulary field (pruned to the most frequent)
AUTO_TRACK_CAP = 64  # top-level numeric fields tracked automatically
OTHER = "__other__"


# --------------------------------------------------------------------------- aggregates


class Pane:
    """Aggregates of one pane (or of a merged window, or of the reference)."""

    __slots__ = (
        "count", "errors", "late", "t_min", "t_max", "first_seq", "last_seq", "num", "cat", "vocab",
        "status", "fb_sum", "fb_n", "acc_ok", "acc_n", "model", "texts", "seen_texts", "groups",
    )

    def __init__(self) -> None:
        self.count = 0
        self.errors = 0
        self.late = 0
        self.t_min = math.inf
        self.t_max = -math.inf
        self.first_seq = 0
        self.last_seq = 0
        self.num: dict[str, Sketch] = {}
        self.cat: dict[str, dict[str, int]] = {}
        self.vocab: dict[str, Counter] = {}
        self.status: dict[str, int] = {}
        self.fb_sum = 0.0
        self.fb_n = 0
        self.acc_ok = 0
        self.acc_n = 0
        self.model: Any = None
        self.texts: dict[str, list[str]] = {}  # reservoir samples for embedding drift
        self.seen_texts: dict[str, int] = {}
        self.groups: Any = None  # a groups.GroupTable with --by

    def merge(self, other: "Pane", rng: random.Random, sample: int) -> None:
        if other.count == 0:
            return
        if self.count == 0:
            self.first_seq = other.first_seq
        self.count += other.count
        self.errors += other.errors
        self.late += other.late
        self.t_min = min(self.t_min, other.t_min)
        self.t_max = max(self.t_max, other.t_max)
        self.last_seq = max(self.last_seq, other.last_seq)
        for name, sk in other.num.items():
            mine = self.num.get(name)
            if mine is None:
                self.num[name] = sk.copy()
            else:
                mine.merge(sk)
        for name, table in other.cat.items():
            mine_t = self.cat.setdefault(name, {})
            for k, c in table.items():
                if k not in mine_t and len(mine_t) >= CATEGORY_CAP:
                    k = OTHER
                mine_t[k] = mine_t.get(k, 0) + c
        for name, counter in other.vocab.items():
            mine_c = self.vocab.setdefault(name, Counter())
            mine_c.update(counter)
            _prune(mine_c)
        for k, c in other.status.items():
            self.status[k] = self.status.get(k, 0) + c
        self.fb_sum += other.fb_sum
        self.fb_n += other.fb_n
        self.acc_ok += other.acc_ok
        self.acc_n += other.acc_n
        if other.model is not None:
            self.model = other.model
        if other.groups is not None:
            if self.groups is None:
                self.groups = GroupTable(other.groups.capacity, other.groups.alpha)
            self.groups.merge(other.groups)
        for name, texts in other.texts.items():
            # Merge two reservoirs: keep a uniform sample of the union, weighted by what each saw.
            mine_s = self.texts.setdefault(name, [])
            seen_a, seen_b = self.seen_texts.get(name, 0), other.seen_texts.get(name, 0)
            pool = [(t, seen_a / max(len(mine_s), 1)) for t in mine_s] + [(t, seen_b / max(len(texts), 1)) for t in texts]
            if len(pool) > sample:
                keyed = sorted(pool, key=lambda tw: rng.random() ** (1.0 / tw[1]), reverse=True)
                pool = keyed[:sample]
            self.texts[name] = [t for t, _ in pool]
            self.seen_texts[name] = seen_a + seen_b


def _prune(counter: Counter) -> None:
    if len(counter) > 2 * VOCAB_CAP:
        keep = counter.most_common(VOCAB_CAP)
        counter.clear()
        counter.update(dict(keep))


# --------------------------------------------------------------------------- the monitor


class Monitor:
    """Feed records; get metric and alert records back when windows close."""

    def __init__(
        self,
        cfg: WatchConfig,
        alerts: Iterable[Alert] = (),
        reference: Iterable[dict] | None = None,
        on_bad: Callable[[dict, str], bool] | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.cfg = cfg
        self.alerts = list(alerts)
        self.on_bad = on_bad
        self.clock = clock
        self.rng = random.Random(cfg.seed)
        self._time = field_getter(cfg.time_field)
        self._status = field_getter(cfg.status_field)
        self._error = field_getter(cfg.error_field)
        self._feedback = field_getter(cfg.feedback_field)
        self._label = field_getter(cfg.label_field)
        self._prediction = field_getter(cfg.prediction_field)
        self._model = field_getter(cfg.model_field)
        # Top-level keys are read inline with one dict lookup; dotted paths go through a getter.
        self._k_time = top_key(cfg.time_field)
        self._k_status = top_key(cfg.status_field)
        self._k_error = top_key(cfg.error_field)
        self._k_feedback = top_key(cfg.feedback_field)
        self._k_label = top_key(cfg.label_field)
        self._k_model = top_key(cfg.model_field)
        self._wire_fields()
        self._by = field_getter(cfg.by) if cfg.by else None
        self._k_by = top_key(cfg.by) if cfg.by else None
        self._latency = field_getter(cfg.latency_field)
        self._ttft = field_getter(cfg.ttft_field)
        self.seq = 0  # records seen
        self.windows = 0  # windows emitted
        self.fired = 0  # firing transitions
        self.pane = self._new_pane()
        self.pane_index: int | None = None  # time windows: pane number since the epoch
        self.panes: deque[tuple[int, Pane]] = deque()
        self.reference: Pane | None = None
        self.reference_source = "first window"
        self._ref_emb: list[float] | None = None
        self._embedder: Any = None
        self.latest: dict | None = None
        self._last_t: float | None = None
        if reference is not None:
            self.reference_source = "file"
            ref = self._new_pane()
            saved = self.pane
            self.pane = ref
            for rec in reference:
                self._add(rec, self._record_time(rec, strict=False))
            for sk in ref.num.values():
                sk.compact()
            self.pane = saved
            self.seq = 0
            self.reference = ref

    # -- setup
    def _new_pane(self) -> Pane:
        pane = Pane()
        if self.cfg.by:
            pane.groups = GroupTable(2 * self.cfg.top_groups, self.cfg.alpha)
        return pane

    def _wire_fields(self) -> None:
        cfg = self.cfg
        for alert in self.alerts:
            for node in metrics_used(alert.ast):
                if node[0] == "call" and node[1] in GROUP_FUNCTIONS and not cfg.by:
                    raise UsageError(f"alert {alert.text!r}: {node[1]}() compares groups: add --by FIELD")
        numeric = [cfg.latency_field, cfg.ttft_field, cfg.prompt_tokens_field, cfg.completion_tokens_field]
        categorical = list(cfg.categorical)
        for alert in self.alerts:
            for node in metrics_used(alert.ast):
                if node[0] != "call":
                    continue
                fn, fld = node[1], node[2]
                if fn in GROUP_FUNCTIONS:
                    continue
                if fn == "js":
                    if fld not in categorical and fld not in cfg.vocab:
                        categorical.append(fld)
                elif fn == "emb":
                    if fld not in cfg.embed:
                        cfg.embed.append(fld)
                else:
                    numeric.append(fld)
        numeric += cfg.track
        self.auto = not cfg.track
        self.skip = {cfg.time_field, cfg.status_field, *cfg.ignore}
        # In auto mode a top-level numeric field is picked up by the scan of the record; only
        # nested paths need their own reader.
        explicit = []
        for path in dict.fromkeys(numeric):
            if self.auto and "." not in path and "\\" not in path:
                continue
            explicit.append(path)
        self.numeric_paths = [(p, field_getter(p)) for p in explicit]
        self.cat_paths = [(p, field_getter(p)) for p in dict.fromkeys(categorical)]
        self.vocab_paths = [(p, field_getter(p)) for p in dict.fromkeys(cfg.vocab)]
        self.embed_paths = [(p, field_getter(p)) for p in dict.fromkeys(cfg.embed)]

    def _record_time(self, rec: dict, strict: bool = True) -> float | None:
        k = self._k_time
        raw = rec.get(k) if k is not None else self._time(rec)
        if raw is None:
            return None
        t = parse_time(raw)
        if t is None or not math.isfinite(t):
            reason = f"field '{self.cfg.time_field}' is not an ISO-8601 time or epoch seconds: {str(raw)[:40]!r}"
            if strict and self.on_bad is not None and not self.on_bad(rec, reason):
                return math.nan  # skip the record
            return None
        return t

    # -- the per-record path
    def feed(self, rec: dict) -> list[dict] | None:
        """Add one record; returns the records to write when a window closed, else None."""
        t = self._record_time(rec)
        if t is not None and t != t:  # NaN: a bad time the policy said to skip
            return None
        out = None
        cfg = self.cfg
        if cfg.window_kind == "time":
            if t is None:
                t = self._last_t if self._last_t is not None else self.clock()
            idx = int(t // cfg.pane_size)
            if self.pane_index is None:
                self.pane_index = idx
            elif idx > self.pane_index:
                out = self._close_pane(next_index=idx)
            elif idx < self.pane_index:
                self.pane.late += 1
            if self._last_t is None or t > self._last_t:
                self._last_t = t
        else:
            self._add(rec, t)
            # A count pane closes on its last record, so a live stream sees it at once.
            return self._close_pane() if self.pane.count >= cfg.pane_size else None
        self._add(rec, t)
        return out

    def _add(self, rec: dict, t: float | None) -> None:
        pane = self.pane
        self.seq += 1
        if pane.count == 0:
            pane.first_seq = self.seq
        pane.last_seq = self.seq
        pane.count += 1
        if t is not None:
            if t < pane.t_min:
                pane.t_min = t
            if t > pane.t_max:
                pane.t_max = t

        k = self._k_status
        status = rec.get(k) if k is not None else self._status(rec)
        k = self._k_error
        err = rec.get(k) if k is not None else self._error(rec)
        failed = False
        if status is not None:
            ts = type(status)
            key = status if ts is int or ts is str else str(status)
            pane.status[key] = pane.status.get(key, 0) + 1
            if (ts is int and status >= 400) or (ts is str and status.isdigit() and int(status) >= 400):
                failed = True
            elif err is not None and err is not False and err != "":
                failed = True
        elif err is not None and err is not False and err != "":
            failed = True
        if failed:
            pane.errors += 1

        num = pane.num
        alpha = self.cfg.alpha
        if self.auto:
            skip = self.skip
            for k, v in rec.items():
                tv = type(v)
                if tv is not float and tv is not int:
                    continue
                sk = num.get(k)
                if sk is None:
                    if k in skip or len(num) >= AUTO_TRACK_CAP:
                        continue
                    sk = num[k] = Sketch(alpha)
                # Sketch.add, inlined: this loop is the hot path.
                sk.n += 1
                sk.total += v
                if v < sk.lo:
                    sk.lo = v
                if v > sk.hi:
                    sk.hi = v
                if v > MIN_INDEXABLE:
                    b = math.ceil(math.log(v) * sk.inv_log_gamma)
                    pos = sk.pos
                    pos[b] = pos.get(b, 0) + 1
                elif v < -MIN_INDEXABLE:
                    b = math.ceil(math.log(-v) * sk.inv_log_gamma)
                    sk.neg[b] = sk.neg.get(b, 0) + 1
                else:
                    sk.zero += 1
        for name, get in self.numeric_paths:
            v = get(rec)
            tv = type(v)
            if tv is float or tv is int:
                sk = num.get(name)
                if sk is None:
                    sk = num[name] = Sketch(alpha)
                sk.add(v)

        for name, get in self.cat_paths:
            v = get(rec)
            if v is None:
                continue
            key = v if type(v) is str else str(v)
            table = pane.cat.get(name)
            if table is None:
                table = pane.cat[name] = {}
            if key not in table and len(table) >= CATEGORY_CAP:
                key = OTHER
            table[key] = table.get(key, 0) + 1

        if self.vocab_paths:
            for name, get in self.vocab_paths:
                text = get(rec)
                if type(text) is str:
                    counter = pane.vocab.get(name)
                    if counter is None:
                        counter = pane.vocab[name] = Counter()
                    counter.update(_WORD.findall(text.lower()))
                    if len(counter) > 2 * VOCAB_CAP:
                        _prune(counter)

        if self.embed_paths:
            for name, get in self.embed_paths:
                text = get(rec)
                if type(text) is str and text.strip():
                    self._sample_text(pane, name, text)

        k = self._k_feedback
        fb = rec.get(k) if k is not None else self._feedback(rec)
        score = None
        if fb is not None:
            score = _feedback_score(fb)
            if score is not None:
                pane.fb_sum += score
                pane.fb_n += 1

        k = self._k_label
        label = rec.get(k) if k is not None else self._label(rec)
        correct = None
        if label is not None:
            pred = self._prediction(rec)
            if pred is not None:
                pane.acc_n += 1
                correct = _norm_answer(label) == _norm_answer(pred)
                if correct:
                    pane.acc_ok += 1

        if pane.groups is not None:
            k = self._k_by
            pane.groups.add(rec.get(k) if k is not None else self._by(rec), failed, self._latency(rec),
                            self._ttft(rec), correct, score)

        k = self._k_model
        model = rec.get(k) if k is not None else self._model(rec)
        if model is not None:
            pane.model = model

    def _sample_text(self, pane: Pane, name: str, text: str) -> None:
        seen = pane.seen_texts.get(name, 0) + 1
        pane.seen_texts[name] = seen
        sample = pane.texts.setdefault(name, [])
        if len(sample) < self.cfg.embed_sample:
            sample.append(text)
        else:
            j = self.rng.randrange(seen)
            if j < self.cfg.embed_sample:
                sample[j] = text

    # -- closing windows
    def tick(self, now: float | None = None) -> list[dict] | None:
        """On a quiet live stream: close a time pane whose end the wall clock has passed."""
        if self.cfg.window_kind != "time" or self.pane_index is None or self.pane.count == 0:
            return None
        now = self.clock() if now is None else now
        end = (self.pane_index + 1) * self.cfg.pane_size
        if now >= end:
            return self._close_pane(next_index=int(now // self.cfg.pane_size))
        return None

    def finish(self) -> list[dict]:
        """At the end of input: emit the open window (marked partial)."""
        if self.pane.count == 0:
            return []
        return self._close_pane(partial=True) or []

    def _close_pane(self, next_index: int | None = None, partial: bool = False) -> list[dict]:
        cfg = self.cfg
        closed, closed_index = self.pane, self.pane_index
        for sk in closed.num.values():
            sk.compact()
        if closed.groups is not None:
            closed.groups.compact()
        if cfg.window_kind == "count":
            closed_index = (closed.first_seq - 1) // int(cfg.pane_size)
        self.panes.append((closed_index, closed))
        while self.panes and self.panes[0][0] <= closed_index - cfg.panes_per_window:
            self.panes.popleft()
        self.pane = self._new_pane()
        self.pane_index = next_index
        if len(self.panes) == 1:
            window = closed
        else:
            window = self._new_pane()
            for _, p in self.panes:
                window.merge(p, self.rng, cfg.embed_sample)
        if cfg.window_kind == "time":
            start = (closed_index - cfg.panes_per_window + 1) * cfg.pane_size
            end = (closed_index + 1) * cfg.pane_size
            complete = not partial
        else:
            start = end = None
            complete = closed.count >= cfg.pane_size  # a full count pane is complete even at the end
        full = complete and len(self.panes) >= cfg.panes_per_window
        record = self._metrics(window, start, end, partial=not complete)
        if self.reference is None and cfg.drift and (full or not cfg.sliding and complete):
            self.reference = window  # closed panes are never changed again, so no copy is needed
            record["reference"] = True
        out = [record]
        lookup = _lookup(record, window)
        for alert in self.alerts:
            has_t = window.count > 0 and math.isfinite(window.t_min)
            change = alert.step(lookup, start if start is not None else (window.t_min if has_t else None),
                                end if end is not None else (window.t_max if has_t else None),
                                record.get("end"))
            if change:
                out.append(self._alert_record(alert, change, record))
                if change == "firing":
                    self.fired += 1
        record["alerts_firing"] = [a.name or a.text for a in self.alerts if a.state == "firing"]
        self.latest = record
        self.windows += 1
        return out

    # -- records
    def _metrics(self, w: Pane, start: float | None, end: float | None, partial: bool) -> dict:
        cfg = self.cfg
        has_t = w.count > 0 and math.isfinite(w.t_min)
        rec: dict[str, Any] = {"type": "metrics", "window": self.windows + 1}
        if cfg.window_kind == "time":
            rec["start"], rec["end"] = iso(start), iso(end)
        else:
            rec["start"] = iso(w.t_min) if has_t else None
            rec["end"] = iso(w.t_max) if has_t else None
        rec["first_record"], rec["last_record"] = w.first_seq, w.last_seq
        if partial:
            rec["partial"] = True
        rec["count"] = w.count
        rec["errors"] = w.errors
        rec["error_rate"] = w.errors / w.count if w.count else None
        if w.late:
            rec["late"] = w.late
        for fname, short in ((cfg.latency_field, "latency_ms"), (cfg.ttft_field, "ttft_ms")):
            sk = w.num.get(fname)
            for q in cfg.quantiles:
                rec[f"{quantile_name(q)}_{_short(fname, short)}"] = sk.quantile(q) if sk is not None else None
        prompt = w.num.get(cfg.prompt_tokens_field)
        completion = w.num.get(cfg.completion_tokens_field)
        p_sum = prompt.total if prompt is not None else 0
        c_sum = completion.total if completion is not None else 0
        if prompt is not None or completion is not None:
            rec["prompt_tokens"] = _num(p_sum)
            rec["completion_tokens"] = _num(c_sum)
        seconds = None
        if cfg.window_kind == "time" and start is not None and end is not None:
            seconds = end - start
            if partial and has_t:
                seconds = max(w.t_max - start, 0.0) or None
        elif has_t and w.t_max > w.t_min:
            seconds = w.t_max - w.t_min
        rec["tokens_per_s"] = c_sum / seconds if completion is not None and seconds else None
        latency = w.num.get(cfg.latency_field)
        if completion is not None and latency is not None and latency.total > 0:
            rec["request_tokens_per_s"] = c_sum / (latency.total / 1000.0)
        if cfg.price_prompt is not None or cfg.price_completion is not None:
            rec["cost"] = (p_sum * (cfg.price_prompt or 0.0) + c_sum * (cfg.price_completion or 0.0)) / 1000.0
        rec["feedback_mean"] = w.fb_sum / w.fb_n if w.fb_n else None
        if w.fb_n:
            rec["feedback_count"] = w.fb_n
        if w.acc_n:
            rec["accuracy"] = w.acc_ok / w.acc_n
            rec["accuracy_count"] = w.acc_n
        if w.status:
            statuses: dict[str, int] = {}
            for k, c in w.status.items():  # 200 and "200" are one status
                statuses[str(k)] = statuses.get(str(k), 0) + c
            rec["status"] = dict(sorted(statuses.items()))
        rec["fields"] = {name: sk.summary(cfg.quantiles) for name, sk in sorted(w.num.items())}
        if w.cat:
            rec["categories"] = {name: dict(sorted(t.items(), key=lambda kv: -kv[1])[:10]) for name, t in w.cat.items()}
        if w.model is not None:
            rec["model"] = w.model
        if cfg.drift:
            rec["drift"], rec["drifted_fields"] = self._drift(w)
        if w.groups is not None:
            ref = self.reference.groups if cfg.drift and self.reference is not None else None
            rec["by"] = summarize(w.groups, ref, field=cfg.by, top=cfg.top_groups, min_group=cfg.min_group,
                                  quantiles=cfg.quantiles, latency_name=_short(cfg.latency_field, "latency_ms"),
                                  ttft_name=_short(cfg.ttft_field, "ttft_ms"), psi_bins=cfg.psi_bins,
                                  psi_threshold=cfg.psi_threshold, ks_pvalue=cfg.ks_pvalue, ks_max_n=cfg.ks_max_n)
        return rec

    def _drift(self, w: Pane) -> tuple[dict | None, list[str]]:
        ref = self.reference
        if ref is None:
            return None, []
        cfg = self.cfg
        out: dict[str, dict] = {}
        drifted: list[str] = []
        for name, sk in sorted(w.num.items()):
            rsk = ref.num.get(name)
            if rsk is None or rsk.n == 0 or sk.n == 0:
                continue
            d = wd.ks(rsk, sk)
            p = wd.ks_pvalue(d, rsk.n, sk.n)
            psi = wd.psi(rsk, sk, cfg.psi_bins)
            # As Evidently does: a p-value for small samples, a distance for large ones (where
            # any tiny difference is "significant").
            if min(rsk.n, sk.n) <= cfg.ks_max_n:
                flag, test = p is not None and p < cfg.ks_pvalue, "ks"
            else:
                flag, test = psi is not None and psi >= cfg.psi_threshold, "psi"
            out[name] = {"psi": psi, "ks": d, "ks_p": p, "test": test, "drift": flag}
            if flag:
                drifted.append(name)
        for source, cur_tables, ref_tables in (("categorical", w.cat, ref.cat), ("vocab", w.vocab, ref.vocab)):
            for name, table in sorted(cur_tables.items()):
                rtable = ref_tables.get(name)
                if not rtable or not table:
                    continue
                js = wd.js_from_counts(rtable, table)
                flag = js is not None and js >= cfg.js_threshold
                key = name if source == "categorical" else f"vocab:{name}"
                out[key] = {"js": js, "test": "js", "drift": flag}
                if flag:
                    drifted.append(key)
        if self.embed_paths:
            for name, _ in self.embed_paths:
                dist = self._embedding_drift(name, w)
                if dist is None:
                    continue
                flag = dist >= cfg.emb_threshold
                entry = out.setdefault(name, {})
                entry.update({"emb": dist, "emb_drift": flag})
                if flag and name not in drifted:
                    drifted.append(name)
        return out, drifted

    def _embedding_drift(self, name: str, w: Pane) -> float | None:
        cur = w.texts.get(name)
        ref = self.reference.texts.get(name) if self.reference else None
        if not cur or not ref:
            return None
        if self._embedder is None:
            from llmtools.models.embedder import load_embedder

            self._embedder = load_embedder(self.cfg.embedder)
        if self._ref_emb is None or getattr(self, "_ref_emb_for", None) is not self.reference:
            self._ref_emb = _mean(self._embedder.embed(ref))
            self._ref_emb_for = self.reference
        return wd.cosine_distance(self._ref_emb, _mean(self._embedder.embed(cur)))

    def _alert_record(self, alert: Alert, change: str, window: dict) -> dict:
        rec: dict[str, Any] = {"type": "alert", "state": change, "alert": alert.name or alert.text}
        if alert.name:
            rec["rule"] = alert.text
        rec["window"] = window["window"]
        rec["start"], rec["end"] = window.get("start"), window.get("end")
        rec["values"] = dict(alert.values)
        if change == "firing":
            rec["since"] = iso(alert.true_since)  # start of the first window the rule held in
            rec["windows_true"] = alert.true_windows
        if window.get("model") is not None:
            rec["model"] = window["model"]
        return rec


def _mean(vectors: list[list[float]]) -> list[float]:
    if not vectors:
        return []
    n = len(vectors)
    return [sum(col) / n for col in zip(*vectors)]


def _short(field_name: str, default: str) -> str:
    return default if field_name == default else field_name.replace(".", "_")


def _num(v: float) -> float | int:
    return int(v) if float(v).is_integer() else v


def _feedback_score(fb: Any) -> float | None:
    """A number from a feedback value: a number, a bool, thumbs words, or {"score": x}."""
    tv = type(fb)
    if tv is int or tv is float:
        return float(fb)
    if tv is bool:
        return 1.0 if fb else 0.0
    if tv is str:
        word = fb.strip().lower()
        if word in ("up", "good", "positive", "thumbs_up", "like", "yes", "+1"):
            return 1.0
        if word in ("down", "bad", "negative", "thumbs_down", "dislike", "no", "-1"):
            return 0.0
        try:
            return float(word)
        except ValueError:
            return None
    if tv is dict:
        for key in ("score", "rating", "value"):
            if key in fb:
                return _feedback_score(fb[key])
    return None


def _norm_answer(v: Any) -> Any:
    return v.strip().lower() if type(v) is str else v


def _lookup(record: dict, window: Pane) -> Callable[[tuple], Any]:
    """How alert rules read a closed window: metric names and per-field functions."""

    def lookup(node: tuple) -> Any:
        if node[0] == "metric":
            name = node[1]
            if name in record:
                return record[name]
            return get_field(record, name)
        _, fn, fld, extra = node
        if fn in ("gap", "ratio"):
            return group_value(record, fn, fld)
        if fn in ("min", "max") and record.get("by") and fld in record["by"]["disparity"]:
            return group_value(record, fn, fld)
        if fn in ("psi", "ks", "ks_p", "js", "emb"):
            entry = (record.get("drift") or {}).get(fld) or (record.get("drift") or {}).get(f"vocab:{fld}")
            return entry.get(fn) if entry else None
        sk = window.num.get(fld)
        if sk is None or sk.n == 0:
            return 0 if fn == "count" else None
        if fn == "count":
            return sk.n
        if fn == "sum":
            return sk.total
        if fn == "mean":
            return sk.total / sk.n
        if fn == "min":
            return sk.lo
        if fn == "max":
            return sk.hi
        if fn == "quantile":
            return sk.quantile(extra)
        return sk.quantile(float(fn[1:]) / 100.0)

    return lookup


def watch(records: Iterable[dict | None], monitor: Monitor, on_idle: Callable[[], None] | None = None) -> Iterator[dict]:
    """Run records through a monitor, yielding each window's records as it closes and the open
    window's at the end. A None in the input means "quiet now" (live input): a time window whose
    end the clock has passed closes then. `on_idle` is called then, and after every 1024th
    record, so that a live view can refresh."""
    feed = monitor.feed
    for rec in records:
        if rec is None:
            out = monitor.tick()
            if on_idle is not None:
                on_idle()
        else:
            out = feed(rec)
            if on_idle is not None and not monitor.seq & 1023:
                on_idle()
        if out:
            yield from out
    yield from monitor.finish()
