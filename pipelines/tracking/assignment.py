"""Minimum-cost matching of tracks to boxes, where a pair costing `limit` or more is never worth it.

Ultralytics solves it with `lap.lapjv(cost, extend_cost=True, cost_limit=limit)`: every row and
column may also stay unmatched at limit / 2 each, so a pair is matched only where that lowers the
total. The optimum is the same here without lap: pairs under the limit form a graph that splits
into independent parts, nearly always one track and one box, and each part is solved exactly
(shortest augmenting paths on the same extended matrix). Only exact ties between two optimal
matchings, or a pair costing exactly `limit`, could be resolved differently from lapjv.
"""

from __future__ import annotations

import numpy as np


def assign(cost: np.ndarray, limit: float) -> np.ndarray:
    """For each row of cost [R, C], its column in the optimal matching, or -1."""
    cost = np.asarray(cost, dtype=np.float64)  # lapjv works in double; the costs come in float32
    match = np.full(cost.shape[0], -1, dtype=np.int64)
    edge = cost < limit
    pairs = np.nonzero(edge)
    if all(len(np.unique(side)) == len(side) for side in pairs):
        match[pairs[0]] = pairs[1]  # every part is one track and one box (the usual frame): each pair is matched
        return match
    for rows, cols in _parts(edge):
        sub = cost[np.ix_(rows, cols)]
        if len(rows) == 1:
            match[rows[0]] = cols[np.argmin(sub[0])]
        elif len(cols) == 1:
            match[rows[np.argmin(sub[:, 0])]] = cols[0]
        else:
            size = len(rows) + len(cols)
            extended = np.full((size, size), limit / 2)
            extended[len(rows) :, len(cols) :] = 0.0
            extended[: len(rows), : len(cols)] = np.where(edge[np.ix_(rows, cols)], sub, 2 * limit)
            column = _hungarian(extended)[: len(rows)]
            paired = column < len(cols)
            match[rows[paired]] = cols[column[paired]]
    return match


def _parts(edge: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(rows, columns) of each connected part of the bipartite graph `edge` [R, C] that has an edge."""
    n_rows = edge.shape[0]
    parent = list(range(n_rows + edge.shape[1]))

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for r, c in zip(*np.nonzero(edge), strict=True):
        parent[root(int(r))] = root(n_rows + int(c))
    parts: dict[int, tuple[list[int], list[int]]] = {}
    for r in np.flatnonzero(edge.any(axis=1)):
        parts.setdefault(root(int(r)), ([], []))[0].append(int(r))
    for c in np.flatnonzero(edge.any(axis=0)):
        parts.setdefault(root(n_rows + int(c)), ([], []))[1].append(int(c))
    return [(np.array(rows), np.array(cols)) for rows, cols in parts.values()]


def _hungarian(cost: np.ndarray) -> np.ndarray:
    """Column of each row in a minimum-cost perfect matching of the square `cost` (shortest augmenting paths)."""
    n = len(cost)
    u, v = np.zeros(n + 1), np.zeros(n + 1)  # potentials of rows and columns, 1-based; column 0 is the path's start
    owner = np.zeros(n + 1, dtype=np.int64)  # 1-based row holding each column, 0 for none
    way = np.zeros(n + 1, dtype=np.int64)
    for row in range(1, n + 1):
        owner[0], column = row, 0
        slack = np.full(n + 1, np.inf)
        used = np.zeros(n + 1, dtype=bool)
        while owner[column]:
            used[column] = True
            i = owner[column]
            reduced = np.full(n + 1, np.inf)
            reduced[1:] = cost[i - 1] - u[i] - v[1:]
            lower = ~used & (reduced < slack)
            slack[lower], way[lower] = reduced[lower], column
            free = np.where(used, np.inf, slack)
            column = int(np.argmin(free))
            delta = free[column]
            u[owner[used]] += delta
            v[used] -= delta
            slack[~used] -= delta
        while column:
            previous = way[column]
            owner[column] = owner[previous]
            column = previous
    match = np.empty(n, dtype=np.int64)
    match[owner[1:] - 1] = np.arange(n)
    return match
