"""What a vision app needs besides its models: one worker thread and its models folder.

Models run in the app's own single worker thread (a session sees one call at a time and the
event loop never waits on inference); :meth:`VisionWorker.call` runs a blocking function there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from edge.vision.manifest import ModelStore

P = ParamSpec("P")
R = TypeVar("R")


def models_store(models_dir: Path | None, base_dir: Path) -> ModelStore:
    """The built models: ``models_dir`` (relative to the site file) or the default folder."""
    if models_dir is not None and not models_dir.is_absolute():
        models_dir = base_dir / models_dir
    return ModelStore(models_dir)


class VisionWorker:
    def __init__(self, name: str) -> None:
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"vision-{name}")

    async def call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, lambda: fn(*args, **kwargs))

    async def close(self) -> None:
        await asyncio.to_thread(self.executor.shutdown, wait=True)

    async def serve(
        self,
        frames: Callable[[], Awaitable[None]],
        *helpers: Callable[[], Coroutine[Any, Any, None]],
    ) -> None:
        """Run ``frames()`` until the frames channel closes, ``helpers`` beside it (cancelled
        then), and shut the worker thread down at the end whatever happens."""
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(h()) for h in helpers]
                await frames()
                for t in tasks:
                    t.cancel()
        finally:
            await self.close()
