r"""Graceful stopping on SIGINT (Ctrl-C) and SIGTERM (e.g. a cluster pre-empting the job)."""
from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType

__all__ = ["StopSignal"]


class StopSignal:
    r"""A context manager that turns the first SIGINT or SIGTERM into a request to stop.

    Inside the block the first signal only sets :attr:`received` (the signal number) and calls
    :obj:`on_signal`, so the training loop can finish its step and write a checkpoint; a second
    signal restores the previous handlers and raises :class:`KeyboardInterrupt` at once. The
    previous handlers are restored on exit. Outside the main thread (where Python cannot
    install handlers) it does nothing.

    Args:
        on_signal (Callable[[int], None], optional): Called with the signal number on the first
            signal. (default: :obj:`None`)
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, on_signal: Callable[[int], None] | None = None) -> None:
        self.on_signal = on_signal
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            self._restore()
            raise KeyboardInterrupt
        self.received = signum
        if self.on_signal is not None:
            self.on_signal(signum)

    def _restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def __enter__(self) -> StopSignal:
        self.received = None
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.getsignal(s) for s in self.SIGNALS}
            for s in self.SIGNALS:
                signal.signal(s, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._restore()
        self.received = None
