"""The JSON API's request and response bodies: FastAPI validates requests against them (a bad body
is a 422 naming the field) and publishes them in the OpenAPI schema at /openapi.json."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, StringConstraints, model_validator

from clipforge.evaluation.templates import check_templates, template_set_names

MAX_IMAGES = 64  # per matrix
MAX_PROMPTS = 64  # per matrix
MAX_LABELS = 100  # per zero-shot request
MAX_TEMPLATES = 100
MAX_TEXT_CHARS = 300
MAX_RESULTS = 100  # search hits per request

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT_CHARS)]
ImageId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


def _one_template(template: str) -> str:
    return check_templates([template], "the request")[0]


def _known_template_set(name: str) -> str:
    if name not in template_set_names():
        raise ValueError(f"unknown template set {name!r}; the sets are {', '.join(template_set_names())}")
    return name


Template = Annotated[Text, AfterValidator(_one_template)]
TemplateSetName = Annotated[str, AfterValidator(_known_template_set)]


class Limits(BaseModel):
    max_upload_bytes: int
    max_pixels: int
    max_images: int = MAX_IMAGES
    max_prompts: int = MAX_PROMPTS
    max_labels: int = MAX_LABELS
    max_results: int = MAX_RESULTS


class IndexInfo(BaseModel):
    images: int
    roots: list[str]
    model_id: str


class Info(BaseModel):
    model: str = Field(description="what the server loaded: a folder, file or published name")
    embed_dim: int
    image_size: int
    context_length: int
    logit_scale: float = Field(description="exp(logit_scale): softmax(logit_scale * cosine) gives the probabilities")
    temperature: float = Field(description="1 / logit_scale")
    index: IndexInfo | None = Field(description="the image index searched, or null when none is served")
    limits: Limits
    runtime: Literal["torch", "onnx"] = Field("torch", description="what runs the model: PyTorch, or ONNX Runtime "
                                                                   "on an exported model")
    maps: bool = Field(True, description="whether /api/maps serves similarity maps (not under ONNX Runtime)")


class TemplateSet(BaseModel):
    name: str
    templates: list[str]


class DemoImage(BaseModel):
    id: str
    url: str
    prompt: str = Field(description="the demo prompt this image matches")


class DemoSet(BaseModel):
    images: list[DemoImage]
    prompts: list[str]


class UploadedImage(BaseModel):
    id: str = Field(description="refer to the image by this id in /api/matrix and /api/zeroshot")
    width: int
    height: int


class MatrixRequest(BaseModel):
    images: list[ImageId] = Field(min_length=1, max_length=MAX_IMAGES)
    prompts: list[Text] = Field(min_length=1, max_length=MAX_PROMPTS)


class MatrixResponse(BaseModel):
    images: list[str]
    prompts: list[str]
    logit_scale: float
    cosine: list[list[float]] = Field(description="[image][prompt] cosine similarity")
    prompt_probabilities: list[list[float]] = Field(
        description="[image][prompt]: softmax over the prompts of logit_scale * cosine, per image")
    image_probabilities: list[list[float]] = Field(
        description="[prompt][image]: softmax over the images of logit_scale * cosine, per prompt")


class ZeroShotRequest(BaseModel):
    image: ImageId
    labels: list[Text] = Field(min_length=1, max_length=MAX_LABELS)
    template_set: TemplateSetName | None = Field(None, description="a name from /api/template-sets")
    templates: list[Template] | None = Field(None, min_length=1, max_length=MAX_TEMPLATES)
    mode: Literal["ensemble", "single"] = Field(
        "ensemble", description="ensemble: average the class embeddings over all templates; single: the first only")

    @model_validator(mode="after")
    def one_template_source(self) -> ZeroShotRequest:
        if (self.template_set is None) == (self.templates is None):
            raise ValueError("give exactly one of template_set and templates")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be distinct")
        return self


class ZeroShotResponse(BaseModel):
    labels: list[str]
    templates: list[str] = Field(description="the templates used: all of them (ensemble) or the first (single)")
    mode: Literal["ensemble", "single"]
    logit_scale: float
    logits: list[float]
    probabilities: list[float]


class TextSearchRequest(BaseModel):
    text: Text
    k: int = Field(20, ge=1, le=MAX_RESULTS)
    folder: str | None = Field(None, description="only images under this folder of the index's roots")


class SearchHit(BaseModel):
    path: str
    url: str = Field(description="where the server serves the image")
    score: float = Field(description="cosine similarity to the query")


class SearchResponse(BaseModel):
    hits: list[SearchHit]


class ScoreRequest(BaseModel):
    images: list[ImageId] = Field(min_length=1, max_length=MAX_IMAGES, description="ids from /api/images")
    prompts: list[Text] = Field(min_length=1, max_length=MAX_PROMPTS)
    references: list[Text] | None = Field(None, min_length=1, max_length=MAX_PROMPTS,
                                          description="reference captions for every image: adds RefCLIPScore")


class RankedImage(BaseModel):
    image: str = Field(description="the image id")
    cosine: float
    clip_score: float = Field(description="Hessel et al.'s CLIPScore, 2.5 * max(cos, 0)")


class ScoreResponse(BaseModel):
    images: list[str]
    prompts: list[str]
    cosine: list[list[float]] = Field(description="[image][prompt] cosine similarity")
    clip_score: list[list[float]] = Field(description="[image][prompt] Hessel et al.'s CLIPScore, 2.5 * max(cos, 0)")
    clip_score_100: list[list[float]] = Field(description="[image][prompt] torchmetrics' CLIPScore, 100 * max(cos, 0)")
    ref_clip_score: list[list[float]] | None = Field(
        description="[image][prompt] RefCLIPScore against the references, or null without them")
    ranking: list[list[RankedImage]] = Field(description="[prompt]: the images reranked for it, best first")


class MapsRequest(BaseModel):
    images: list[ImageId] = Field(min_length=1, max_length=MAX_IMAGES, description="ids from /api/images or the demo")
    prompt: Text = Field(description="what to find; used as it is unless templates are named")
    template_set: TemplateSetName | None = Field(None, description="embed the prompt as zero-shot does: the "
                                                                   "ensemble of this set's templates")
    templates: list[Template] | None = Field(None, min_length=1, max_length=MAX_TEMPLATES,
                                             description="or the ensemble of these templates")

    @model_validator(mode="after")
    def at_most_one_template_source(self) -> MapsRequest:
        if self.template_set is not None and self.templates is not None:
            raise ValueError("give at most one of template_set and templates")
        return self


class ImageMap(BaseModel):
    image: str = Field(description="the image id")
    width: int = Field(description="the uploaded image's width in pixels")
    height: int
    peak: list[int] = Field(description="(x, y) of the map's highest value, in the uploaded image's pixels")
    peak_cosine: float = Field(description="the map's highest cosine similarity")
    low_cosine: float = Field(description="the map's lowest cosine similarity")
    overlay: str = Field(description="a PNG data URL: the image with the map in colour over it (dark violet at "
                                     "low_cosine, yellow at peak_cosine) and the peak marked")


class MapsResponse(BaseModel):
    prompt: str
    templates: list[str] | None = Field(description="the templates whose ensemble embedded the prompt, or null")
    maps: list[ImageMap]
