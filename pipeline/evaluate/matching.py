"""One-to-one matching of item lists (``line_items``): an optimal assignment, never by position.

Identical items pair first; the rest are paired by the Hungarian algorithm maximising the number of
equal fields, ties broken by the similarity of the description-like ``key`` field.  Pairs that share
no equal field are left unmatched.
"""

from __future__ import annotations

import difflib

from pipeline.evaluate.plan import Item


def _min_cost_assignment(cost: list[list[int]]) -> list[int]:
    """Hungarian algorithm (O(n²m)), ``n <= m`` rows: the column of each row in a minimum-cost assignment."""
    n, m = len(cost), len(cost[0])
    inf = float("inf")
    u, v = [0.0] * (n + 1), [0.0] * (m + 1)
    owner, way = [0] * (m + 1), [0] * (m + 1)  # owner[j]: row (1-based) assigned to column j
    for i in range(1, n + 1):
        owner[0], j0 = i, 0
        minv, used = [inf] * (m + 1), [False] * (m + 1)
        while True:
            used[j0] = True
            i0, delta, j1 = owner[j0], inf, 0
            row = cost[i0 - 1]
            for j in range(1, m + 1):
                if not used[j]:
                    cur = row[j - 1] - u[i0] - v[j]
                    if cur < minv[j]:
                        minv[j], way[j] = cur, j0
                    if minv[j] < delta:
                        delta, j1 = minv[j], j
            for j in range(m + 1):
                if used[j]:
                    u[owner[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if owner[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            owner[j0] = owner[j1]
            j0 = j1
    assignment = [-1] * n
    for j in range(1, m + 1):
        if owner[j]:
            assignment[owner[j] - 1] = j - 1
    return assignment


def max_weight_pairs(weights: list[list[int]]) -> list[tuple[int, int]]:
    """(row, column) pairs of a one-to-one assignment maximising the total weight (rectangular allowed)."""
    if not weights or not weights[0]:
        return []
    n, m = len(weights), len(weights[0])
    if n <= m:
        return list(enumerate(_min_cost_assignment([[-w for w in row] for row in weights])))
    transposed = [[-weights[i][j] for i in range(n)] for j in range(m)]
    return [(i, j) for j, i in enumerate(_min_cost_assignment(transposed))]


def equal_fields(t: Item, p: Item) -> int:
    """Number of fields present in the truth item and equal in the prediction."""
    return sum(1 for a, b in zip(t, p, strict=True) if a is not None and a == b)


def _key_similarity(t: Item, p: Item, key: int | None) -> float:
    if key is None or not isinstance(t[key], str) or not isinstance(p[key], str):
        return 0.0
    return difflib.SequenceMatcher(None, t[key], p[key]).ratio()


def _pair_weight(t: Item, p: Item, key: int | None, scale: int) -> int:
    """Equal fields first; description similarity (0..1000) only breaks ties."""
    return equal_fields(t, p) * scale + int(1000 * _key_similarity(t, p, key))


def _exact_pairs(truth: list[Item], pred: list[Item]) -> list[tuple[int, int]]:
    """Pair identical items first (always part of some optimal assignment; keeps big lists fast)."""
    free: dict[Item, list[int]] = {}
    for j, p in enumerate(pred):
        free.setdefault(p, []).append(j)
    pairs = []
    for i, t in enumerate(truth):
        if free.get(t):
            pairs.append((i, free[t].pop(0)))
    return pairs


def match_items(truth: list[Item], pred: list[Item], key: int | None = None) -> list[tuple[int, int]]:
    """One-to-one (truth index, prediction index) pairs maximising the number of equal fields,
    ties broken by similarity of the ``key`` field; pairs sharing no equal field are left unmatched."""
    pairs = _exact_pairs(truth, pred)
    rest_t = [i for i in range(len(truth)) if i not in {a for a, _ in pairs}]
    rest_p = [j for j in range(len(pred)) if j not in {b for _, b in pairs}]
    if rest_t and rest_p:
        scale = 1000 * min(len(rest_t), len(rest_p)) + 1  # tie-breaks sum to less than one equal field
        weights = [[_pair_weight(truth[i], pred[j], key, scale) for j in rest_p] for i in rest_t]
        for a, b in max_weight_pairs(weights):
            if equal_fields(truth[rest_t[a]], pred[rest_p[b]]) > 0:
                pairs.append((rest_t[a], rest_p[b]))
    return sorted(pairs)
