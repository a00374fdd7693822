"""Progress reporting shared by every loop that shows progress (training epochs, image reading,
bench cells, plots).

On a terminal (or in Jupyter), :func:`progress_bar` is a redrawn tqdm bar. When stderr is not a
terminal (a log file, a pipe, CI), redraws would pile up as one endless line of carriage
returns, so it writes plain lines instead: one each time at least :data:`PLAIN_INTERVAL`
seconds have passed since the last one, and a final line when the loop ends, e.g.
``D3: 12/12 epoch 3.4s lr=0.01 acc=94.2``.

:func:`set_progress` switches every bar off (``distox -q``).

Example:
    >>> for epoch in progress_bar(range(10), desc="train", unit="epoch"):
    ...     ...
"""
from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

#: Least seconds between two plain progress lines (stderr not a terminal).
PLAIN_INTERVAL = 5.0

_enabled = True


def set_progress(enabled: bool) -> None:
    """Show (True) or hide (False) every progress bar and progress line of this process."""
    global _enabled
    _enabled = bool(enabled)


def progress_enabled() -> bool:
    """Whether progress may be shown at all (:func:`set_progress`)."""
    return _enabled


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _redraws(stream: Any) -> bool:
    """Whether a redrawn bar displays well: a terminal, or a Jupyter kernel (tqdm.auto's widget)."""
    return _is_terminal(stream) or "ipykernel" in sys.modules


def _fmt_postfix(postfix: dict[str, Any] | str) -> str:
    if isinstance(postfix, str):
        return postfix
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in postfix.items())


class PlainProgress:
    """The non-terminal bar: the subset of tqdm's interface distox uses (iteration, ``update``,
    ``set_postfix``, ``set_postfix_str``, ``close``, context manager), written as whole lines."""

    def __init__(self, iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", initial: int = 0, disable: bool = False,
                 interval: float | None = None, stream: Any = None) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = initial + len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit, self.n = total, desc, unit, int(initial)
        self.disable, self._stream = disable, stream
        self.interval = float(PLAIN_INTERVAL if interval is None else interval)
        self._postfix = ""
        self._t0 = self._last = time.monotonic()
        self._shown_n: int | None = int(initial)  # n of the last line written (initial: nothing to say)
        self._closed = False

    def _line(self) -> str:
        count = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        parts = [f"{self.desc}:" if self.desc else "", count, self.unit,
                 f"{time.monotonic() - self._t0:.1f}s", self._postfix]
        return " ".join(p for p in parts if p)

    def _write(self) -> None:
        stream = self._stream or sys.stderr
        stream.write(self._line() + "\n")
        stream.flush()
        self._last, self._shown_n = time.monotonic(), self.n

    def _maybe_write(self) -> None:
        if not self.disable and time.monotonic() - self._last >= self.interval:
            self._write()

    def update(self, n: int = 1) -> None:
        self.n += int(n)
        self._maybe_write()

    def set_postfix(self, postfix: dict[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None:
        self._postfix = _fmt_postfix({**(postfix or {}), **kwargs})

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self._postfix = s

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable or ():
            yield item
            self.update(1)  # after the loop body: its postfix describes this step
        self.close()  # like tqdm, a finished iteration closes the bar

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.disable and self._shown_n != self.n:
            self._write()

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress_bar(iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", initial: int = 0, enabled: bool = True, **tqdm_kwargs: Any) -> Any:
    """A progress bar over ``iterable`` (or updated by hand with ``total``): tqdm on a terminal,
    :class:`PlainProgress` lines otherwise; silent when ``enabled`` is False or progress is off
    for the process (:func:`set_progress`). ``tqdm_kwargs`` go to tqdm only (e.g. ``leave``)."""
    show = enabled and _enabled
    if _redraws(sys.stderr):
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, disable=not show,
                    **{"leave": False, "dynamic_ncols": True, **tqdm_kwargs})
    return PlainProgress(iterable, total=total, desc=desc, unit=unit, initial=initial, disable=not show)
