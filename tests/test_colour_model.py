"""The session's colour model (conftest) learns its four colours: the other suites rely on it."""

import torch

import clipforge
from colour_model import COLOURS, colour_image
from clipforge.evaluation.zeroshot import ZeroShotClassifier

def test_colour_model_knows_its_colours(colour_model):
    model, preprocess = clipforge.load(colour_model)
    names = list(COLOURS)
    clf = ZeroShotClassifier(model, names, ["a {} square"])
    images = torch.stack([preprocess(colour_image(c, 7)) for c in names])
    with torch.no_grad():
        feats = model.encode_image(images)
    print(clf.predict_proba(feats))
    assert clf.predict(feats).tolist() == list(range(4))
