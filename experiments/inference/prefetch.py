"""Decoding ahead in a background thread, so that reading and decoding overlap the network.

PyAV and Pillow release the GIL while they decode, so one thread suffices; the queue is bounded
(``depth`` items), so a fast decoder never holds more than a few frames in memory. An exception
in the thread is re-raised in the consumer, where the loop can report it.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

_DONE = object()


class _Failed:
    """The decoding thread's exception, carried to the consumer."""

    def __init__(self, error: BaseException):
        self.error = error


class Prefetcher:
    """Iterate ``items`` in a daemon thread, up to ``depth`` items ahead of the consumer.

    ``wait_s``: seconds the consumer spent blocked waiting for the next item (the part of
    decoding the overlap did not hide). ``close()`` stops the thread early (Ctrl-C).
    """

    def __init__(self, items: Iterable[Any], depth: int = 8):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self.wait_s = 0.0
        self._thread = threading.Thread(target=self._work, args=(iter(items),), daemon=True,
                                        name="detbench-predict-decode")
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self, items: Iterator[Any]) -> None:
        try:
            for item in items:
                if not self._put(item):
                    return
        except BaseException as error:  # handed to the consumer, raised there
            self._put(_Failed(error))
            return
        finally:
            close = getattr(items, "close", None)
            if close is not None and self._stop.is_set():
                try:
                    close()
                except ValueError:  # a generator still running in this thread cannot be closed
                    pass
        self._put(_DONE)

    def __iter__(self) -> Iterator[Any]:
        while True:
            start = time.perf_counter()
            item = self._queue.get()
            self.wait_s += time.perf_counter() - start
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item

    def close(self) -> None:
        """Stop the thread and let it leave; frames not yet consumed are dropped."""
        self._stop.set()
        self._thread.join(timeout=5)
