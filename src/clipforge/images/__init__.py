"""Image preprocessing: any PIL image or file to a normalized CLIP input tensor."""

from clipforge.images.augment import TrainAugment, random_shift
from clipforge.images.transform import (
    CLIP_MEAN,
    CLIP_STD,
    ImageLoadError,
    ImageTransform,
    load_image,
    to_rgb,
)

__all__ = ["CLIP_MEAN", "CLIP_STD", "ImageLoadError", "ImageTransform", "TrainAugment", "load_image", "random_shift", "to_rgb"]
