"""A route's weighted canary `split`: which pool (arm) a new request goes to, sans-IO.

Each arm is picked with probability weight / total weight; an arm of weight 0 is never picked
(a canary switched off without deleting it). Stickiness (a client staying on its arm) is the
sticky filter's job, not this one's.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Sequence

__all__ = ["Split"]


class Split:
    __slots__ = ("_cumulative", "_last", "_names", "_rng", "_total", "arms")

    def __init__(self, arms: Sequence[tuple[str, int]], rng: random.Random | None = None) -> None:
        self.arms: tuple[tuple[str, int], ...] = tuple((name, weight) for name, weight in arms)
        for name, weight in self.arms:
            if weight < 0:
                raise ValueError(f"split arm {name!r}: weight must be >= 0, got {weight}")
        self._names = tuple(name for name, _ in self.arms)
        self._cumulative = list(itertools.accumulate(weight for _, weight in self.arms))
        self._total = self._cumulative[-1] if self._cumulative else 0
        if self._total == 0:
            raise ValueError("split: at least one arm needs a weight above 0")
        # The last arm that can be picked, for a draw that float rounding puts at the very top.
        self._last = max(i for i, (_, weight) in enumerate(self.arms) if weight > 0)
        self._rng = rng if rng is not None else random.Random()

    def pick(self) -> str:
        """The pool name of a weighted random arm."""
        # bisect_right: a weight-0 arm spans the empty interval [c, c), so no draw lands on it.
        i = bisect.bisect_right(self._cumulative, self._rng.random() * self._total)
        return self._names[min(i, self._last)]

    def __repr__(self) -> str:
        return f"<Split {' '.join(f'{name}={weight}' for name, weight in self.arms)}>"
