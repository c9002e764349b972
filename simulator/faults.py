"""Fault injection: latency, 5xx, 429, connection resets, truncated bodies, 202 on writes."""
from __future__ import annotations

import random
import threading
from dataclasses import dataclass

from simulator.config import ALL_SERVICES, SimulatorConfig

RESET = "reset"
SERVER_ERROR = "5xx"
TOO_MANY = "429"
TRUNCATE = "truncate"
MALFORMED = "malformed"


@dataclass
class FaultDecision:
    latency_seconds: float = 0.0
    action: str | None = None


class FaultInjector:
    KNOBS = ("latency_ms", "latency_jitter_ms", "fault_5xx", "fault_429", "fault_reset", "fault_truncate",
             "fault_malformed", "write_202", "fault_try_again_later", "fault_services")

    def __init__(self, config: SimulatorConfig):
        self._lock = threading.Lock()
        self._rng = random.Random(config.seed * 7919 + 17)
        self.settings = {knob: getattr(config, knob) for knob in self.KNOBS}

    def update(self, changes: dict) -> dict:
        """Validate and apply knob changes; raises ValueError with a readable message."""
        unknown = set(changes) - set(self.KNOBS)
        if unknown:
            raise ValueError(f"unknown fault knobs: {sorted(unknown)}")
        clean = {}
        for knob, value in changes.items():
            if knob == "fault_services":
                if not isinstance(value, (list, tuple)) or set(value) - set(ALL_SERVICES):
                    raise ValueError(f"fault_services must be a list drawn from {list(ALL_SERVICES)}")
                clean[knob] = tuple(value)
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{knob} must be a number")
            if knob.startswith("latency"):
                if value < 0:
                    raise ValueError(f"{knob} must be >= 0")
            elif not 0 <= value <= 1:
                raise ValueError(f"{knob} must be between 0 and 1")
            clean[knob] = float(value)
        with self._lock:
            self.settings.update(clean)
            return dict(self.settings)

    def snapshot(self) -> dict:
        with self._lock:
            result = dict(self.settings)
        result["fault_services"] = list(result["fault_services"])
        return result

    def decide(self, service: str) -> FaultDecision:
        with self._lock:
            s = self.settings
            if service not in s["fault_services"]:
                return FaultDecision()
            latency = 0.0
            if s["latency_ms"] or s["latency_jitter_ms"]:
                latency = max(0.0, self._rng.gauss(s["latency_ms"], s["latency_jitter_ms"])) / 1000.0
            roll = self._rng.random()
            action = None
            for name, knob in ((RESET, "fault_reset"), (SERVER_ERROR, "fault_5xx"), (TOO_MANY, "fault_429"),
                               (TRUNCATE, "fault_truncate"), (MALFORMED, "fault_malformed")):
                if roll < s[knob]:
                    action = name
                    break
                roll -= s[knob]
            return FaultDecision(latency, action)

    def pick(self, choices: tuple[str, ...]) -> str:
        with self._lock:
            return self._rng.choice(choices)

    def answer_write_with_202(self) -> bool:
        with self._lock:
            return self._rng.random() < self.settings["write_202"]

    def refuse_write_try_again_later(self) -> bool:
        with self._lock:
            # no draw when off, so the other faults' sequence for a seed stays as it was
            share = self.settings["fault_try_again_later"]
            return share > 0 and self._rng.random() < share
