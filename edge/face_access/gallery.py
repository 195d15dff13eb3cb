"""1:N search: the enrolled templates as one float32 matrix, nearest by L2 distance.

``|q - t|² = |q|² - 2 q·t + |t|²`` turns the search into one matrix-vector product over the
whole gallery (BLAS), plus a precomputed norm per template: 100 000 templates of 128 numbers is
a 51 MB matrix and one pass over it. People with several templates are matched by their
closest one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Match:
    person: str
    distance: float
    second_distance: float | None  # the best distance to anyone else (how clear the match is)


class Gallery:
    def __init__(self, people: Sequence[str], templates: np.ndarray) -> None:
        if templates.ndim != 2 or len(people) != templates.shape[0]:
            raise ValueError(f"{len(people)} people for templates of shape {templates.shape}")
        self.people = list(people)
        names = {p: i for i, p in enumerate(dict.fromkeys(self.people))}
        self._codes = np.fromiter(
            (names[p] for p in self.people), dtype=np.int32, count=len(self.people)
        )
        self.templates = np.ascontiguousarray(templates, dtype=np.float32)
        self._norms = np.einsum("ij,ij->i", self.templates, self.templates)

    @classmethod
    def empty(cls, dim: int = 128) -> Gallery:
        return cls([], np.zeros((0, dim), dtype=np.float32))

    def __len__(self) -> int:
        return len(self.people)

    def templates_of(self, person: str) -> np.ndarray:
        """The templates of one person (K x dim; none: 0 x dim)."""
        rows: np.ndarray = self.templates[[i for i, p in enumerate(self.people) if p == person]]
        return rows

    def distances(self, query: np.ndarray) -> np.ndarray:
        q = np.asarray(query, dtype=np.float32)
        d2 = self._norms - 2.0 * (self.templates @ q) + float(q @ q)
        result: np.ndarray = np.sqrt(np.maximum(d2, 0.0))
        return result

    def search(self, query: np.ndarray) -> Match | None:
        """The closest person (and the distance to the closest other person), or None if empty."""
        if not self.people:
            return None
        d = self.distances(query)
        best = int(np.argmin(d))
        others = d[self._codes != self._codes[best]]
        second = float(others.min()) if others.size else None
        return Match(self.people[best], float(d[best]), second)
