"""The numbers ``distox report`` judges a grid by: the clean-model ASR floor, a pass/fail
verdict per defended cell, and per-architecture averages as mean ± std over seeds.

- **Floor**: ``max(2, clean-model ASR + 2)`` percent, where the clean-model ASR is the ASR of a
  model that never saw the trigger on the attack's own backdoor test set (``clean_reference``):
  a defense that restores clean behaviour cannot be asked to go below it.
- **Verdict**: ``pass`` when the defended ASR is at most the floor, else ``fail``.
- **Summary** of one (part, dataset / model) group: per column (no defense and each defense),
  ACC, ASR, ACC drop (no-defense ACC − defended ACC, points) and DER (percent), each first
  averaged over the group's attack rows within a seed, then given as the mean and sample
  standard deviation of those seed-level averages (no std with one seed). A seed counts only
  when all of its cells in that column are done; until every planned seed is, the value is
  unknown (``–``), as an average over some attacks or seeds only would mislead.

Example:
    >>> asr_floor(0.5), asr_floor(39.05), verdict(3.0, asr_floor(0.5))
    (2.5, 41.05, 'fail')
"""
from __future__ import annotations

from dataclasses import dataclass, field
from statistics import mean, stdev

#: Lowest floor (percent): the paper's "ASR < 2 %" bar.
FLOOR_MIN = 2.0
#: Points allowed above the clean-model ASR.
FLOOR_MARGIN = 2.0
#: Summary metrics of a defense column; a no-defense column has only ACC and ASR.
METRICS = ("acc", "asr", "acc_drop", "der")
BASE_METRICS = ("acc", "asr")

#: Per-seed cell results: (row, column) -> seed -> metrics ("acc", "asr"; defense cells also
#: "acc_drop" in points and "der" in percent).
SeedResults = dict[tuple[str, str], dict[int, dict[str, float]]]


def asr_floor(clean_asr: float) -> float:
    """The ASR (percent) a defended model may keep: ``max(2, clean_asr + 2)``."""
    return max(FLOOR_MIN, float(clean_asr) + FLOOR_MARGIN)


def verdict(asr: float, floor: float) -> str:
    """``"pass"`` when ``asr`` is at most ``floor``, else ``"fail"``."""
    return "pass" if asr <= floor else "fail"


@dataclass
class Stat:
    """Mean and sample standard deviation over ``seeds`` seed-level values (``std`` is None
    with one seed; ``mean`` is None while a planned seed is unfinished)."""

    mean: float | None = None
    std: float | None = None
    seeds: int = 0


def mean_std(values: list[float]) -> Stat:
    """:class:`Stat` of ``values`` (one per seed)."""
    if not values:
        return Stat()
    return Stat(mean(values), stdev(values) if len(values) > 1 else None, len(values))


@dataclass
class Summary:
    """One group's averages in one part: ``stats[column][metric]``."""

    part: str
    group: str
    rows: list[str]
    columns: list[str]
    stats: dict[str, dict[str, Stat]] = field(default_factory=dict)




def column_stats(rows: list[str], column: str, metrics: tuple[str, ...], results: SeedResults,
                 planned: dict[tuple[str, str], set[int]]) -> dict[str, Stat] | None:
    """Mean ± std over seeds of the rows' per-seed averages in ``column``; None when no row
    plans that column."""
    rows = [r for r in rows if (r, column) in planned]
    if not rows:
        return None
    seeds = sorted(set().union(*(planned[(r, column)] for r in rows)))
    per_seed: dict[str, list[float]] = {m: [] for m in metrics}
    for seed in seeds:
        cells = [results.get((r, column), {}).get(seed) for r in rows if seed in planned[(r, column)]]
        if any(c is None for c in cells):
            continue
        for m in metrics:
            per_seed[m].append(mean(c[m] for c in cells))  # type: ignore[arg-type]
    complete = len(per_seed[metrics[0]]) == len(seeds)
    return {m: mean_std(v) if complete else Stat(seeds=len(v)) for m, v in per_seed.items()}


def summarize(part: str, group: str, rows: list[str], columns: list[str], defenses: set[str],
              results: SeedResults, planned: dict[tuple[str, str], set[int]]) -> Summary:
    """The :class:`Summary` of ``rows`` (one part of a group) over ``columns``; the columns in
    ``defenses`` get all :data:`METRICS`, the others ACC and ASR only."""
    out = Summary(part, group, list(rows), [])
    for col in columns:
        stats = column_stats(rows, col, METRICS if col in defenses else BASE_METRICS, results, planned)
        if stats is not None:
            out.columns.append(col)
            out.stats[col] = stats
    return out
