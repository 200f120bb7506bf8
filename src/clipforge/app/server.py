"""The web app: a JSON API over one CLIP (similarity matrix, zero-shot, search) and the static page
that draws it. Every number the page shows is computed here."""

from __future__ import annotations

import base64
import hashlib
import io
import os
from pathlib import Path
from typing import Annotated
from urllib.parse import urlencode

import torch
from fastapi import FastAPI, Form, HTTPException, UploadFile
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image

import clipforge
from clipforge.applications.localization import Locator, render_overlay
from clipforge.applications.rerank import rank_by_prompt
from clipforge.applications.scores import hessel_clip_score, ref_clip_score, torchmetrics_clip_score
from clipforge.checkpoints.onnx_runtime import OnnxCLIP
from clipforge.evaluation.maps import input_size
from clipforge.evaluation.templates import load_templates, template_set_names
from clipforge.evaluation.zeroshot import ZeroShotClassifier
from clipforge.images import ImageLoadError, ImageTransform, to_rgb
from clipforge.models import CLIP, similarity
from clipforge.search import ImageIndex, Searcher
from clipforge.search import SearchHit as IndexHit

from .demo import demo_set
from .features import BoundedCache, FeatureEncoder, UnknownImage
from .schemas import (MAX_RESULTS, DemoImage, DemoSet, IndexInfo, Info, Limits, MatrixRequest, MatrixResponse,
                      SearchHit, SearchResponse, TemplateSet, TextSearchRequest, UploadedImage, ZeroShotRequest,
                      ZeroShotResponse)
from .schemas import RankedImage, ScoreRequest, ScoreResponse
from .schemas import ImageMap, MapsRequest, MapsResponse
from .uploads import BodySizeLimit, UploadLimits, UploadTooLarge, decode_upload

STATIC = Path(__file__).parent / "static"
MULTIPART_OVERHEAD = 64 * 1024  # room for the form's boundaries and headers around one image
MAP_IMAGES = 256  # images kept, at the size their maps are made at, for /api/maps
OVERLAY_SIDE = 128  # pixels of an overlay's longer side
UPLOAD_ERRORS = {400: {"description": "not a readable image"},
                 413: {"description": "over the byte or pixel limit (see /api/info)"}}


def create_app(model: CLIP | OnnxCLIP, preprocess: ImageTransform, index: ImageIndex | None = None, *,
               model_name: str = "model", limits: UploadLimits = UploadLimits()) -> FastAPI:
    """The app for one model (and optionally the index it searches); raises `IndexModelMismatch`
    when the index was built with another model. An ONNX export serves everything but /api/maps,
    which needs the image tower's dense features (501)."""
    encoder = FeatureEncoder(model, preprocess)
    searcher = None if index is None else Searcher(index, model, preprocess)
    classifiers: BoundedCache[ZeroShotClassifier] = BoundedCache(32)
    demo_images = []
    for number, (image, prompt) in enumerate(demo_set()):
        encoder.add_image(f"demo-{number}", image, pinned=True)
        demo_images.append((_png(image), prompt))
    locator = None if isinstance(model, OnnxCLIP) else Locator(model)  # an ONNX graph gives pooled features only
    map_images: BoundedCache[tuple[tuple[int, int], Image.Image]] = BoundedCache(MAP_IMAGES)
    pinned_map_images = {f"demo-{number}": _map_input(locator, image)
                         for number, (image, _) in enumerate(demo_set())} if locator is not None else {}

    app = FastAPI(title="clipforge", version=clipforge.__version__,
                  description="CLIP similarity matrix, zero-shot classification and image search over one model.")
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_bytes + MULTIPART_OVERHEAD)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def read_upload(file: UploadFile) -> tuple[bytes, Image.Image]:
        data = file.file.read(limits.max_bytes + 1)
        try:
            return data, decode_upload(data, limits)
        except UploadTooLarge as error:
            raise HTTPException(413, str(error)) from None
        except ImageLoadError as error:
            raise HTTPException(400, str(error)) from None

    def known_images(image_ids: list[str]) -> torch.Tensor:
        try:
            return encoder.image_features(image_ids)
        except UnknownImage as error:
            raise HTTPException(404, f"unknown image id {error.args[0]!r}: upload the image again "
                                     "(the server keeps only recent uploads)") from None

    def require_searcher() -> Searcher:
        if searcher is None:
            raise HTTPException(404, "this server has no image index: start it with clipforge serve --index PATH")
        return searcher

    def search_response(hits: list[IndexHit]) -> SearchResponse:
        return SearchResponse(hits=[SearchHit(path=str(hit.path), score=float(hit.score),
                                              url=f"/api/index/image?{urlencode({'path': str(hit.path)})}")
                                    for hit in hits])

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/api/info")
    def info() -> Info:
        scale = encoder.logit_scale()
        index_info = None if index is None else IndexInfo(images=len(index), roots=[str(root) for root in index.roots],
                                                          model_id=index.model_id)
        return Info(model=model_name, embed_dim=model.config.embed_dim, image_size=model.image_size,
                    context_length=model.context_length, logit_scale=scale, temperature=1 / scale, index=index_info,
                    limits=Limits(max_upload_bytes=limits.max_bytes, max_pixels=limits.max_pixels),
                    runtime="torch" if locator is not None else "onnx", maps=locator is not None)

    @app.get("/api/template-sets")
    def template_sets() -> list[TemplateSet]:
        return [TemplateSet(name=name, templates=load_templates(name)) for name in template_set_names()]

    @app.get("/api/demo")
    def demo() -> DemoSet:
        return DemoSet(images=[DemoImage(id=f"demo-{number}", url=f"/api/demo/images/{number}", prompt=prompt)
                               for number, (_, prompt) in enumerate(demo_images)],
                       prompts=[prompt for _, prompt in demo_images])

    @app.get("/api/demo/images/{number}", response_class=Response,
             responses={200: {"content": {"image/png": {}}}, 404: {"description": "no such demo image"}})
    def demo_image(number: int) -> Response:
        if not 0 <= number < len(demo_images):
            raise HTTPException(404, f"the demo has images 0 to {len(demo_images) - 1}")
        return Response(demo_images[number][0], media_type="image/png")

    @app.post("/api/images", responses=UPLOAD_ERRORS)
    def upload_image(file: UploadFile) -> UploadedImage:
        """Encode an image once; its id then stands for it in /api/matrix and /api/zeroshot."""
        data, image = read_upload(file)
        image_id = hashlib.sha256(data).hexdigest()[:32]
        if not encoder.has_image(image_id):
            encoder.add_image(image_id, image)
        if locator is not None and map_images.get(image_id) is None:
            map_images.put(image_id, _map_input(locator, image))
        return UploadedImage(id=image_id, width=image.width, height=image.height)

    @app.post("/api/matrix", responses={404: {"description": "an unknown image id"}})
    def matrix(request: MatrixRequest) -> MatrixResponse:
        scale = encoder.logit_scale()
        cosine = similarity(known_images(request.images), encoder.prompt_features(request.prompts))
        logits = scale * cosine
        return MatrixResponse(images=request.images, prompts=request.prompts, logit_scale=scale,
                              cosine=cosine.tolist(), prompt_probabilities=logits.softmax(dim=1).tolist(),
                              image_probabilities=logits.t().softmax(dim=1).tolist())

    @app.post("/api/zeroshot", responses={404: {"description": "an unknown image id"}})
    def zeroshot(request: ZeroShotRequest) -> ZeroShotResponse:
        templates = request.templates or load_templates(request.template_set)
        if request.mode == "single":
            templates = templates[:1]
        classifier = classifiers.get_or_create(
            (tuple(request.labels), tuple(templates)),
            lambda: encoder.run(ZeroShotClassifier, model, request.labels, templates))
        logits = classifier.logits(known_images([request.image]))[0]
        return ZeroShotResponse(labels=request.labels, templates=templates, mode=request.mode,
                                logit_scale=encoder.logit_scale(), logits=logits.tolist(),
                                probabilities=logits.softmax(dim=0).tolist())

    @app.post("/api/score", responses={404: {"description": "an unknown image id"}})
    def score(request: ScoreRequest) -> ScoreResponse:
        """CLIPScore of every image with every prompt (RefCLIPScore with references), and the images
        reranked for each prompt, best first."""
        images = known_images(request.images)
        prompts = encoder.prompt_features(request.prompts)
        cosine = similarity(images, prompts)  # [image, prompt]
        refs = None
        if request.references is not None:
            reference_cosine = prompts @ encoder.prompt_features(request.references).t()  # [prompt, reference]
            refs = ref_clip_score(cosine, reference_cosine.expand(len(request.images), -1, -1)).tolist()
        ranking = [[RankedImage(image=request.images[hit.index], cosine=hit.cosine, clip_score=hit.clip_score)
                    for hit in rank_by_prompt(images, prompts[column])] for column in range(len(request.prompts))]
        return ScoreResponse(images=request.images, prompts=request.prompts, cosine=cosine.tolist(),
                             clip_score=hessel_clip_score(cosine).tolist(),
                             clip_score_100=torchmetrics_clip_score(cosine).tolist(), ref_clip_score=refs,
                             ranking=ranking)

    @app.post("/api/maps", responses={404: {"description": "an unknown image id"},
                                      501: {"description": "the model is an ONNX export, which has no dense features"}})
    def maps(request: MapsRequest) -> MapsResponse:
        """Where the prompt is in each image: its similarity map (the image tower's dense features, as
        `clipforge locate` makes them), the peak, and the image with the map over it."""
        if locator is None:
            raise HTTPException(501, "similarity maps need the image tower's dense features, which an ONNX export "
                                     "does not hold: serve the PyTorch model (--runtime torch) for maps")
        templates = request.templates or (load_templates(request.template_set) if request.template_set else None)
        if templates is None:
            text = encoder.prompt_features([request.prompt])
        else:
            text = classifiers.get_or_create(
                ((request.prompt,), tuple(templates)),
                lambda: encoder.run(ZeroShotClassifier, model, [request.prompt], templates)).class_embeddings
        found = []
        for image_id in request.images:
            entry = pinned_map_images.get(image_id) or map_images.get(image_id)
            if entry is None:
                raise HTTPException(404, f"unknown image id {image_id!r}: upload the image again "
                                         "(the server keeps only recent uploads)")
            (width, height), image = entry
            [where] = encoder.run(locator.locate, image, [request.prompt], image_id, False, text)
            overlay = base64.b64encode(_png(render_overlay(image, where, side=OVERLAY_SIDE))).decode("ascii")
            found.append(ImageMap(image=image_id, width=width, height=height,
                                  peak=[min(width - 1, int((where.peak[0] + 0.5) * width / image.width)),
                                        min(height - 1, int((where.peak[1] + 0.5) * height / image.height))],
                                  peak_cosine=float(where.map.max()), low_cosine=float(where.map.min()),
                                  overlay=f"data:image/png;base64,{overlay}"))
        return MapsResponse(prompt=request.prompt, templates=templates, maps=found)

    @app.post("/api/search/text", responses={404: {"description": "no index is served"}})
    def search_text(request: TextSearchRequest) -> SearchResponse:
        searching = require_searcher()
        try:
            return search_response(encoder.run(searching.by_text, request.text, k=request.k, folder=request.folder))
        except ValueError as error:
            raise HTTPException(400, str(error)) from None

    @app.post("/api/search/image", responses={**UPLOAD_ERRORS, 404: {"description": "no index is served"}})
    def search_image(file: UploadFile, k: Annotated[int, Form(ge=1, le=MAX_RESULTS)] = 20,
                     folder: Annotated[str | None, Form()] = None) -> SearchResponse:
        searching = require_searcher()
        _, image = read_upload(file)
        try:
            return search_response(encoder.run(searching.by_image, image, k=k, folder=folder))
        except ValueError as error:
            raise HTTPException(400, str(error)) from None

    @app.get("/api/index/image", response_class=FileResponse,
             responses={200: {"content": {"image/*": {}}}, 404: {"description": "not an image of the index"}})
    def index_image(path: str) -> FileResponse:
        """Only files the index holds, inside its roots: any other path is refused, traversal included.
        The path is served as normalized for the check, so a symlink before a `..` cannot redirect it."""
        try:
            candidate = Path(os.path.abspath(path))
            allowed = index is not None and index.contains(candidate) and candidate.is_file()
        except (OSError, ValueError):
            allowed = False
        if not allowed:
            raise HTTPException(404, "not an image of the served index")
        return FileResponse(candidate)

    return app


def _map_input(locator: Locator, image: Image.Image) -> tuple[tuple[int, int], Image.Image]:
    """(the image's size, the image shrunk to the size its maps are made at): all a map needs."""
    width, height = input_size(locator.model, image.width, image.height, locator.short_side)
    return image.size, to_rgb(image).resize((width, height), Image.Resampling.BICUBIC)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
