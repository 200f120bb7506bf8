"""A bounded load test of the web app on loopback: 500 requests, 16 at a time, none may fail."""

from __future__ import annotations

import asyncio
import io
import time

import httpx
import numpy as np

import clipforge
from clipforge.app.background import serve_in_background
from clipforge.app.server import create_app
from colour_model import COLOURS, colour_image

REQUESTS = 500
CONCURRENCY = 16


def png(colour: str, variant: int) -> bytes:
    buffer = io.BytesIO()
    colour_image(colour, variant).save(buffer, format="PNG")
    return buffer.getvalue()


def request_mix(image_ids: list[str]) -> list[tuple[str, str, dict]]:
    """What a page does, in proportion: matrices, zero-shot, uploads, info and demo images."""
    prompts = [f"a {colour} square" for colour in COLOURS]
    cycle = [
        ("POST", "/api/matrix", {"json": {"images": image_ids, "prompts": prompts}}),
        ("POST", "/api/zeroshot", {"json": {"image": image_ids[0], "labels": list(COLOURS),
                                            "templates": ["a {} square", "{}"]}}),
        ("POST", "/api/images", {"files": {"file": ("square.png", png("green", 5), "image/png")}}),
        ("GET", "/api/info", {}),
        ("GET", "/api/demo/images/0", {}),
    ]
    return [cycle[number % len(cycle)] for number in range(REQUESTS)]


async def hammer(base_url: str, requests: list[tuple[str, str, dict]]) -> tuple[list[float], list[int]]:
    limit = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient(base_url=base_url, timeout=30,
                                 limits=httpx.Limits(max_connections=CONCURRENCY)) as client:
        async def timed(method: str, path: str, options: dict) -> tuple[float, int]:
            async with limit:
                start = time.perf_counter()
                response = await client.request(method, path, **options)
                return time.perf_counter() - start, response.status_code

        results = await asyncio.gather(*(timed(*request) for request in requests))
    return [seconds for seconds, _ in results], [status for _, status in results]


def test_500_requests_16_at_a_time_all_succeed(colour_model):
    model, preprocess = clipforge.load(colour_model)
    app = create_app(model, preprocess)
    with serve_in_background(app) as base_url:
        image_ids = [httpx.post(f"{base_url}/api/images", files={"file": ("s.png", png(colour, 2), "image/png")}).json()["id"]
                     for colour in COLOURS]
        start = time.perf_counter()
        latencies, statuses = asyncio.run(hammer(base_url, request_mix(image_ids)))
        elapsed = time.perf_counter() - start
    p50, p95, p99 = np.percentile(np.array(latencies) * 1000, [50, 95, 99])
    print(f"\n{REQUESTS} requests, {CONCURRENCY} concurrent, in {elapsed:.1f} s ({REQUESTS / elapsed:.0f}/s): "
          f"latency p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms")
    failures = {status: statuses.count(status) for status in set(statuses) if status != 200}
    assert not failures, f"responses other than 200: {failures}"
    assert len(latencies) == REQUESTS
