"""Model versions for blue/green deployment: load beside, health-check, swap, keep, roll back.

A new model is loaded while the current one keeps serving. It takes traffic only after a health
check (a short generation) passes; the swap itself is one pointer change under a lock, so no
request fails during it. The previous version stays loaded (its own worker, its own memory) for
`--keep-previous` (a count, or a duration), so `rollback()` is instant.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from llmtools.models.base import Backend, GenerationParams
from llmtools.ops.serve.runner import SlotRunner

HEALTH_PROMPT = "Hello"


class LoadBusy(Exception):
    """Another model is being loaded."""


class LoadFailed(Exception):
    """The model could not be loaded, or it failed its health check (`stage` says which)."""

    def __init__(self, message: str, stage: str, cause: BaseException | None = None):
        super().__init__(message)
        self.stage = stage
        self.cause = cause


class NothingToRollBack(Exception):
    pass


@dataclass
class KeepPolicy:
    """How long a replaced version stays loaded: at most `count` versions, or for `seconds`."""

    count: int | None = 1
    seconds: float | None = None

    @classmethod
    def parse(cls, text: str) -> "KeepPolicy":
        text = str(text).strip().lower()
        if re.fullmatch(r"\d+", text):
            return cls(count=int(text))
        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|m|h)", text)
        if not m:
            raise ValueError(f"--keep-previous must be a count (2) or a duration (90s, 10m, 1h), got {text!r}")
        scale = {"s": 1, "m": 60, "h": 3600}[m.group(2)]
        return cls(count=None, seconds=float(m.group(1)) * scale)

    def describe(self) -> str:
        return f"{self.count} version(s)" if self.count is not None else f"{self.seconds:g}s"


@dataclass
class ModelSlot:
    version: int
    ref: str
    backend: Backend
    runner: SlotRunner
    loaded_at: float = field(default_factory=time.time)
    activated_at: float | None = None
    replaced_at: float | None = None
    state: str = "standby"  # active | standby | retired

    @property
    def identity(self):
        return self.backend.identity

    def aliases(self) -> set[str]:
        ident = self.identity
        return {a for a in (ident.name, ident.short, self.ref) if a}

    def describe(self) -> dict:
        ident = self.identity
        return {
            "version": self.version,
            "state": self.state,
            "ref": self.ref,
            "id": ident.short,
            "identity": ident.to_dict(),
            "loaded_at": _iso(self.loaded_at),
            "activated_at": _iso(self.activated_at),
            "replaced_at": _iso(self.replaced_at),
        }


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def default_health_check(backend: Backend) -> None:
    """A short greedy generation must return text and sane token counts."""
    done = backend.generate(HEALTH_PROMPT, GenerationParams(max_tokens=2, temperature=0.0))
    if not isinstance(done.text, str) or done.prompt_tokens < 1 or done.completion_tokens < 0:
        raise RuntimeError(f"health check returned an invalid completion: {done!r}")


class ModelManager:
    """The active version, the standby versions kept for rollback, and the one loading now."""

    def __init__(
        self,
        loader: Callable[[str], Backend],
        runner_factory: Callable[[Backend, int], SlotRunner],
        keep: KeepPolicy | None = None,
        health_check: Callable[[Backend], None] = default_health_check,
        on_event: Callable[[str], None] | None = None,
    ):
        self.loader = loader
        self.runner_factory = runner_factory
        self.keep = keep or KeepPolicy()
        self.health_check = health_check
        self.on_event = on_event or (lambda msg: None)
        self.active: ModelSlot | None = None
        self.standby: list[ModelSlot] = []  # newest first
        self.loading: str | None = None
        self.last_error: str | None = None
        self._versions = 0
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()

    # -- loading
    def load(self, ref: str) -> ModelSlot:
        """Load `ref` beside the active version, health-check it, then make it active (blocking)."""
        if not self._load_lock.acquire(blocking=False):
            raise LoadBusy(f"a model is already loading ({self.loading})")
        try:
            self.loading = ref
            started = time.monotonic()
            try:
                backend = self.loader(ref)
            except Exception as exc:
                self.last_error = f"loading {ref}: {exc}"
                raise LoadFailed(f"could not load {ref}: {exc}", "load", exc) from exc
            try:
                self.health_check(backend)
            except Exception as exc:
                backend.close()
                self.last_error = f"health check of {ref}: {exc}"
                raise LoadFailed(f"{ref} failed its health check: {exc}", "health_check", exc) from exc
            with self._lock:
                self._versions += 1
                version = self._versions
            slot = ModelSlot(version, ref, backend, self.runner_factory(backend, version))
            self._activate(slot)
            self.last_error = None
            self.on_event(
                f"version {version} active: {slot.identity.short} from {ref} "
                f"(loaded and checked in {time.monotonic() - started:.1f}s)"
            )
            return slot
        finally:
            self.loading = None
            self._load_lock.release()

    def _activate(self, slot: ModelSlot) -> None:
        now = time.time()
        with self._lock:
            previous = self.active
            slot.state = "active"
            slot.activated_at = now
            slot.replaced_at = None
            if slot in self.standby:
                self.standby.remove(slot)
            self.active = slot
            if previous is not None:
                previous.state = "standby"
                previous.replaced_at = now
                self.standby.insert(0, previous)
            retired = self._evict_locked(now)
        for old in retired:
            self._retire(old)
        if previous is not None and self.keep.seconds is not None:
            # unload on time even when no request comes by to trigger a sweep
            timer = threading.Timer(self.keep.seconds + 0.05, self.sweep)
            timer.daemon = True
            timer.start()

    def rollback(self) -> ModelSlot:
        """Make the most recently replaced version active again (instant: it is still loaded)."""
        with self._lock:
            expired = self._sweep_locked_expired()
            target = self.standby[0] if self.standby else None
        for old in expired:
            self._retire(old)
        if target is None:
            raise NothingToRollBack("no previous version is loaded (see --keep-previous)")
        self._activate(target)
        self.on_event(f"rolled back: version {target.version} ({target.identity.short}) is active again")
        return target

    # -- lookup
    def resolve(self, name: str | None, served_name: str | None = None) -> ModelSlot | None:
        """The slot a request's `model` names: the served name or an alias of the active version
        routes to it; an id that only a standby version has pins that version; else None."""
        self.sweep()
        active = self.active
        if active is None:
            return None
        if not name or name == served_name or name in active.aliases():
            return active
        for slot in list(self.standby):
            if name == slot.identity.short or name == f"{served_name}@v{slot.version}":
                return slot
        if name == f"{served_name}@v{active.version}":
            return active
        return None

    def slots(self) -> list[ModelSlot]:
        with self._lock:
            return ([self.active] if self.active else []) + list(self.standby)

    # -- keeping and retiring
    def sweep(self) -> None:
        if self.keep.seconds is None or not self.standby:
            return
        with self._lock:
            retired = self._sweep_locked_expired()
        for old in retired:
            self._retire(old)

    def _sweep_locked_expired(self) -> list[ModelSlot]:
        if self.keep.seconds is None:
            return []
        now = time.time()
        expired = [s for s in self.standby if s.replaced_at is not None and now - s.replaced_at > self.keep.seconds]
        for s in expired:
            self.standby.remove(s)
        return expired

    def _evict_locked(self, now: float) -> list[ModelSlot]:
        retired = self._sweep_locked_expired()
        if self.keep.count is not None:
            while len(self.standby) > self.keep.count:
                retired.append(self.standby.pop())
        return retired

    def _retire(self, slot: ModelSlot) -> None:
        slot.state = "retired"
        self.on_event(f"version {slot.version} ({slot.identity.short}) unloaded after its queued requests finish")
        slot.runner.close(on_idle=slot.backend.close)

    def close(self) -> None:
        """Stop every version once its queued requests are done, then free it."""
        with self._lock:
            slots = ([self.active] if self.active else []) + list(self.standby)
            self.active = None
            self.standby = []
        self._closed = slots
        for slot in slots:
            slot.state = "retired"
            slot.runner.close(on_idle=slot.backend.close)

    def join(self, timeout: float | None = None) -> None:
        for slot in getattr(self, "_closed", []) or self.slots():
            slot.runner.join(timeout)
