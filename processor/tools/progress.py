"""Progress of the long commands (``eval``, ``bench``) on a terminal: a tqdm bar on stderr.

Off when stderr is not a terminal (a pipe, a file, CI), so logs and redirected output stay
clean; the commands' results go to stdout either way.  Lines printed while a bar is shown go
through ``write`` so they do not tear the bar.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

from tqdm import tqdm

T = TypeVar("T")


class Progress:
    """A bar of ``total`` steps on ``stream`` (stderr), shown only if ``stream`` is a terminal."""

    def __init__(self, total: int, desc: str, unit: str, stream: TextIO | None = None) -> None:
        stream = stream if stream is not None else sys.stderr
        self.shown = _is_terminal(stream)
        self._bar = tqdm(total=total, desc=desc, unit=unit, file=stream, disable=not self.shown, leave=False,
                         dynamic_ncols=True)

    def step(self, what: str = "") -> None:
        """One step done; ``what`` comes next (shown after the bar)."""
        if what:
            self._bar.set_postfix_str(what, refresh=False)
        self._bar.update(1)
        self._bar.refresh()  # steps are seconds apart: draw each, not only past tqdm's miniters

    def now(self, what: str) -> None:
        """Say what runs now, without a step."""
        self._bar.set_postfix_str(what)

    def write(self, line: str, out: TextIO | None = None) -> None:
        """Print ``line`` to ``out`` (stdout) above the bar."""
        out = out if out is not None else sys.stdout
        if self.shown:
            tqdm.write(line, file=out)
        else:
            print(line, file=out, flush=True)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def each(items: Iterable[T], total: int, desc: str, unit: str, stream: TextIO | None = None) -> Iterator[T]:
    """``items``, with a bar advancing as each is taken (see ``Progress``)."""
    with Progress(total, desc, unit, stream) as bar:
        for item in items:
            yield item
            bar.step()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed, or not a real stream
        return False
