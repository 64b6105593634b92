"""Just enough of the Prometheus text format for one process: counters, gauges and
histograms, no dependency. Gauges are read from callbacks at scrape time, so the
hot path only ever increments integers."""

from __future__ import annotations

import bisect
from collections.abc import Callable


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in sorted(labels.items())
    )
    return "{" + inner + "}"


class Counter:
    def __init__(self, name: str, help_text: str, label: str | None = None) -> None:
        self.name, self.help, self.label = name, help_text, label
        self.values: dict[str, float] = {}

    def inc(self, amount: float = 1, label_value: str = "") -> None:
        self.values[label_value] = self.values.get(label_value, 0) + amount

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        if not self.values:
            out.append(f"{self.name} 0" if self.label is None else "")
        for lv, v in sorted(self.values.items()):
            lab = _labels({self.label: lv}) if self.label else ""
            out.append(f"{self.name}{lab} {v:g}")
        return [line for line in out if line]


class Gauge:
    def __init__(
        self,
        name: str,
        help_text: str,
        read: Callable[[], dict[str, float] | float],
        label: str | None = None,
    ) -> None:
        self.name, self.help, self.read, self.label = name, help_text, read, label

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} gauge"]
        value = self.read()
        if isinstance(value, dict):
            for lv, v in sorted(value.items()):
                out.append(f"{self.name}{_labels({self.label or 'label': lv})} {v:g}")
        else:
            out.append(f"{self.name} {value:g}")
        return out


class Histogram:
    def __init__(self, name: str, help_text: str, buckets: list[float]) -> None:
        self.name, self.help = name, help_text
        self.bounds = sorted(buckets)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        running = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            running += n
            out.append(f'{self.name}_bucket{{le="{bound:g}"}} {running}')
        out.append(f'{self.name}_bucket{{le="+Inf"}} {self.count}')
        out.append(f"{self.name}_sum {self.sum:.6f}")
        out.append(f"{self.name}_count {self.count}")
        return out


class Registry:
    def __init__(self) -> None:
        self.metrics: list[Counter | Gauge | Histogram] = []

    def counter(self, name: str, help_text: str, label: str | None = None) -> Counter:
        c = Counter(name, help_text, label)
        self.metrics.append(c)
        return c

    def gauge(self, name: str, help_text: str, read, label: str | None = None) -> Gauge:
        g = Gauge(name, help_text, read, label)
        self.metrics.append(g)
        return g

    def histogram(self, name: str, help_text: str, buckets: list[float]) -> Histogram:
        h = Histogram(name, help_text, buckets)
        self.metrics.append(h)
        return h

    def render(self) -> str:
        lines: list[str] = []
        for m in self.metrics:
            lines.extend(m.render())
        return "\n".join(lines) + "\n"
