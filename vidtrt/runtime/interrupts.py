"""Ctrl-C and SIGTERM land between frames: a frame reaches every output or none.

Python raises KeyboardInterrupt at whatever line is running when SIGINT (or
SIGTERM, which the CLI turns into one) arrives. Landing between two writers'
``write()`` of one frame, it left the JSON lines with that frame and the
annotated video without it; landing inside a writer's ``write()``, that writer
discards its whole output. So while a frame goes to the writers these signals
are held, and their handler runs as soon as the frame is in every output.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable

HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def install_handler(number: int, handler) -> object:
    """``signal.signal`` that keeps system calls restarting after the handler.

    Python's handlers otherwise make a signal interrupt system calls (EINTR):
    one landing in FFmpeg's write of the annotated video left a corrupt file
    that was then published as complete. Restarted calls finish, and the
    handler still runs at the next bytecode. Returns the previous handler.
    """
    previous = signal.signal(number, handler)
    signal.siginterrupt(number, False)
    return previous


class InterruptsBetweenFrames:
    """Holds SIGINT / SIGTERM inside :meth:`frame` blocks while entered.

    Only Python-level handlers are wrapped (the default Ctrl-C handler, the
    CLI's SIGTERM one); a signal left at its default action or ignored keeps
    it. Off the main thread, where handlers cannot be installed, nothing is
    held.
    """

    def __init__(self) -> None:
        self._handlers: dict[int, Callable] = {}
        self._holding = False
        self._held: list[int] = []

    def __enter__(self) -> "InterruptsBetweenFrames":
        if threading.current_thread() is threading.main_thread():
            for number in HELD_SIGNALS:
                current = signal.getsignal(number)
                if callable(current):
                    self._handlers[number] = current
                    install_handler(number, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._handlers.items():
            install_handler(number, handler)
        self._handlers.clear()

    def _on_signal(self, number, frame) -> None:
        if self._holding:
            self._held.append(number)
            return
        self._handlers[number](number, frame)

    @contextlib.contextmanager
    def frame(self):
        """A block no held signal interrupts; one that came meanwhile is
        handled (usually: KeyboardInterrupt raised) when the block ends."""
        self._holding = True
        try:
            yield
        except BaseException:
            # The block failed on its own: that error ends the run; a signal
            # held meanwhile is dropped rather than masking it.
            self._held.clear()
            raise
        finally:
            self._holding = False
        if self._held:
            number = self._held[0]
            self._held.clear()
            self._handlers[number](number, None)
