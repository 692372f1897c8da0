"""An ASGI response that sends one byte range of a file, as cheaply as the ASGI server allows.

- When the server offers the ASGI ``http.response.zerocopysend`` extension, the file
  descriptor is handed over and the kernel copies the bytes (sendfile), like nginx.
- Otherwise the range is read with ``os.pread`` on a worker thread in large chunks (one
  thread hop per MiB instead of one per small chunk), each chunk handed to the server as
  it is read: memory stays bounded by the chunk and the server's write buffer, and the
  event loop never waits for the disk.

A client that goes away stops the transfer (the ``http.disconnect`` message cancels it).
Status and headers (Content-Length, Content-Range, ETag...) are the caller's.
"""

import os
from collections.abc import Mapping
from pathlib import Path

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

CHUNK_BYTES = 1 << 20
ZERO_COPY = "http.response.zerocopysend"


class FileRangeResponse(Response):
    def __init__(self, path: Path, start: int, length: int, status_code: int, headers: Mapping[str, str],
                 media_type: str = "application/octet-stream") -> None:
        super().__init__(status_code=status_code, headers=headers, media_type=media_type)
        self.path = path
        self.start = start
        self.length = length

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        if scope.get("method") == "HEAD" or self.length == 0:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        async with anyio.create_task_group() as group:

            async def transfer() -> None:
                await self._send_range(scope, send)
                group.cancel_scope.cancel()

            group.start_soon(transfer)
            while (await receive())["type"] != "http.disconnect":
                pass
            group.cancel_scope.cancel()

    async def _send_range(self, scope: Scope, send: Send) -> None:
        fd = await anyio.to_thread.run_sync(os.open, self.path, os.O_RDONLY)
        try:
            if ZERO_COPY in scope.get("extensions", {}):
                with os.fdopen(os.dup(fd), "rb") as handle:
                    await send({"type": ZERO_COPY, "file": handle, "offset": self.start, "count": self.length,
                                "more_body": False})
                return
            offset, remaining = self.start, self.length
            while remaining > 0:
                chunk = await anyio.to_thread.run_sync(os.pread, fd, min(CHUNK_BYTES, remaining), offset)
                if not chunk:  # the file shrank: content-addressed files never do; end the body short
                    raise OSError(f"{self.path} ended {remaining} bytes early")
                offset += len(chunk)
                remaining -= len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": remaining > 0})
        finally:
            os.close(fd)
