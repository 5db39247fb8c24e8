"""Fixtures of the prior tests."""

import pytest
from ar_synthetic import synthetic_training_set


@pytest.fixture(scope="module")
def data():
    """512 synthetic unit image embeddings in R^16 around 8 captions' directions."""
    return synthetic_training_set()
