"""Uploads within byte and pixel bounds, so that a huge or broken upload is refused with a reason
(413 or 400) instead of exhausting memory or failing mid-request."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clipforge.images import ImageLoadError, to_rgb

_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError)  # what Pillow raises for bad data


class UploadTooLarge(ValueError):
    """An upload over the byte or pixel bound (HTTP 413)."""


@dataclass(frozen=True)
class UploadLimits:
    """Bounds on one uploaded image: its encoded size in bytes and its width x height in pixels."""

    max_bytes: int = 16 * 1024 * 1024
    max_pixels: int = 25_000_000

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_pixels < 1:
            raise ValueError(f"upload limits must be positive, got {self}")


def decode_upload(data: bytes, limits: UploadLimits) -> Image.Image:
    """Decode ``data`` fully, as RGB; raises ``UploadTooLarge`` over the bounds (checked before decoding the
    pixels) and ``ImageLoadError`` for anything Pillow cannot read."""
    if len(data) > limits.max_bytes:
        raise UploadTooLarge(f"the upload is over the limit of {limits.max_bytes:,} bytes")
    if not data:
        raise ImageLoadError("the upload is empty")
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        raise UploadTooLarge(f"the image has too many pixels: {error}") from error
    except UnidentifiedImageError:
        raise ImageLoadError("the upload is not an image in a format Pillow can read") from None
    except _DECODE_ERRORS as error:
        raise ImageLoadError(f"cannot read the upload as an image: {error}") from error
    pixels = image.width * image.height
    if pixels > limits.max_pixels:
        raise UploadTooLarge(f"the image is {image.width}x{image.height} = {pixels:,} pixels; "
                             f"the limit is {limits.max_pixels:,} pixels")
    try:
        image.load()
        return to_rgb(image)
    except _DECODE_ERRORS as error:
        raise ImageLoadError(f"cannot decode the uploaded image: {error}") from error


class BodySizeLimit:
    """ASGI middleware: a request body over `max_bytes` is refused with a 413 that names the limit,
    whether its Content-Length declares it (refused unread) or it streams in (refused on the
    first byte over), so no handler ever spools a huge upload."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes
        self.message = f"the request body is over the limit of {max_bytes:,} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await JSONResponse({"detail": self.message}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise HTTPException(413, self.message)
            return message

        await self.app(scope, counting_receive, send)
