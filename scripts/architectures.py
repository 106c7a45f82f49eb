"""Custom layers of this project's pipelines, registered with spaCy.

`spacy train`, `spacy evaluate` and `spacy package` get this file with `--code`, and the
packages carry it, so `spacy.load("en_...")` needs nothing from the project checkout.
"""
from typing import List

from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Model, concatenate
from thinc.types import Floats2d


@registry.architectures("multinerd.TransformerWithFeatures.v1")
def transformer_with_features(
    transformer: Model[List[Doc], List[Floats2d]],
    features: Model[List[Doc], List[Floats2d]],
) -> Model[List[Doc], List[Floats2d]]:
    """Token vectors of a transformer (a TransformerListener) concatenated with those of a
    small hash-embedding tok2vec. The tok2vec sees what an uncased or subword encoder
    blurs: the token's case and shape, its prefix and suffix."""
    model = concatenate(transformer, features)
    model.name = "transformer_with_features"
    return model
