"""/metrics: every worker's samples, aggregated by prometheus-client's multiprocess mode."""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess


def registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(reg)
    else:  # in-process (tests, single process): the default registry holds everything
        from prometheus_client import REGISTRY

        return REGISTRY
    return reg


def render_metrics() -> tuple[str, bytes]:
    return CONTENT_TYPE_LATEST, generate_latest(registry())


Samples = list[tuple[dict[str, str], float]]


def samples(name: str) -> Samples:
    """(labels, value) of every sample called `name`, across workers."""
    return all_samples().get(name, [])


def all_samples() -> dict[str, Samples]:
    """Every sample by name, in one pass (each pass reads every worker's files)."""
    found: dict[str, Samples] = {}
    for family in registry().collect():
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found
