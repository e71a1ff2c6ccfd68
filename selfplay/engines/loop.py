"""A private asyncio event loop on a daemon thread, so one engine serves sync and async callers.

Async clients (vLLM's `AsyncLLM`, `openai.AsyncOpenAI`) are bound to the loop they were created on.
Engines create them on this loop; `run()` blocks a sync caller, `wrap()` awaits from any other loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["BackgroundLoop"]

T = TypeVar("T")


class BackgroundLoop:
    """`loop = BackgroundLoop("engine"); loop.run(coro)`; `await loop.wrap(coro)`; `loop.stop()`."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        if not self._thread.is_alive():
            coro.close()
            raise RuntimeError("the engine is closed")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` on the background loop and block until it is done."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            coro.close()
            raise RuntimeError("a blocking engine call was made from inside the engine's own loop")
        return self.submit(coro).result(timeout)

    async def wrap(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await `coro` (running on the background loop) from the caller's loop."""
        return await asyncio.wrap_future(self.submit(coro))

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=30)
        if not self._thread.is_alive() and not self.loop.is_closed():
            self.loop.close()
