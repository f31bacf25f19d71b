"""Ctrl-C during a long native call on the main thread.

Python runs signal handlers only between the main thread's bytecodes, so a
KeyboardInterrupt cannot reach a thread that sits in a native call (one
prompt step can take seconds), and one that lands while a ctypes callback is
being entered is lost ("Exception ignored on calling ctypes callback
function").

So while such a call runs, SIGINT's Python handler is swapped for one that
only notes the signal, and the signal wakeup fd (which Python's C-level
handler writes to the moment a signal arrives) is read by a watcher thread
that cancels the native call at once. When the call has returned, the
original handler gets the noted signal: Python's default raises
KeyboardInterrupt there, in ordinary Python code.
"""
from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, List, Optional


class _Watcher:
    """One daemon thread per process, reading the wakeup socket."""

    def __init__(self) -> None:
        import socket  # on first need: keeps `import gpt4all` cheap

        self._recv, self._send = socket.socketpair()
        self._send.setblocking(False)  # set_wakeup_fd requires it
        self.fd = self._send.fileno()
        self.cancels: List[Callable[[], Any]] = []
        self.forward = -1  # the wakeup fd we replaced (asyncio's, say): it still gets its bytes
        threading.Thread(target=self._run, name="gpt4all-sigint", daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                data = self._recv.recv(64)
            except OSError:
                return
            if not data:
                return
            if signal.SIGINT in data:
                for cancel in list(self.cancels):
                    try:
                        cancel()
                    except Exception:  # noqa: BLE001 - a closed model has nothing to cancel
                        pass
            forward = self.forward
            if forward >= 0 and sys.platform != "win32":
                try:
                    import os

                    os.write(forward, data)
                except OSError:
                    pass


_watcher: Optional[_Watcher] = None
_watcher_lock = threading.Lock()


def _get_watcher() -> _Watcher:
    global _watcher
    with _watcher_lock:
        if _watcher is None:
            _watcher = _Watcher()
        return _watcher


@contextmanager
def cancel_on_interrupt(cancel: Callable[[], Any]) -> Iterator[None]:
    """Within the block, Ctrl-C calls ``cancel`` at once; KeyboardInterrupt
    (or whatever the program's SIGINT handler does) follows when the block
    ends. Outside the main thread, or when SIGINT is ignored or left to the
    system, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = signal.getsignal(signal.SIGINT)
    if not callable(handler):
        yield
        return
    watcher = _get_watcher()
    noted: List[tuple] = []

    def note(signum: int, frame: Any) -> None:
        noted.append((signum, frame))

    signal.signal(signal.SIGINT, note)
    try:
        previous_fd = signal.set_wakeup_fd(watcher.fd, warn_on_full_buffer=False)
    except (ValueError, OSError):
        signal.signal(signal.SIGINT, handler)
        yield
        return
    nested = previous_fd == watcher.fd
    if not nested:
        watcher.forward = previous_fd
    watcher.cancels.append(cancel)
    try:
        yield
    finally:
        watcher.cancels.remove(cancel)
        if not nested:
            watcher.forward = -1
            signal.set_wakeup_fd(previous_fd)
        signal.signal(signal.SIGINT, handler)
        if noted:
            handler(*noted[0])
