"""What the web-app API tests share: the session's colour model served through FastAPI's test client
with small upload limits, and PNG bytes of an image."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from clipforge.app.server import create_app
from clipforge.app.uploads import UploadLimits

LIMITS = UploadLimits(max_bytes=200_000, max_pixels=1_000_000)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def client(colour_parts):
    return TestClient(create_app(*colour_parts, model_name="colour", limits=LIMITS))
