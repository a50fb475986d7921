"""Progress bars: tqdm on a terminal, a plain line now and then in a log. Apart from the device
code in `runtime` so that reading images (which shows one) does not import torch."""

from __future__ import annotations

import sys

from tqdm import tqdm

PROGRESS_SECONDS = 30  # between progress lines when stderr is a file or a pipe, not a terminal


class _Lines:
    """tqdm's refreshes as whole lines: a log file gets a line per update, no carriage
    returns."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.strip("\r\n ")
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress(iterable=None, **options) -> tqdm:
    """A tqdm progress bar on a terminal; elsewhere (stderr redirected to a log) one plain line
    every PROGRESS_SECONDS, instead of a line per refresh."""
    if sys.stderr.isatty():
        return tqdm(iterable, **options)
    return tqdm(iterable, file=_Lines(sys.stderr), mininterval=PROGRESS_SECONDS, ascii=True,
                **options)
