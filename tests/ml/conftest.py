"""Fixtures for the escalation-classifier tests: ADFA-LD and the shipped model."""

import pytest

from capsule.ml import adfa
from capsule.ml.model import Classifier


@pytest.fixture(scope="session")
def adfa_dir():
    root = adfa.default_data_dir()
    if not (root / "training").is_dir():
        pytest.skip(f"ADFA-LD is not at {root}: set CAPSULE_ADFA_DIR to run this test")
    return root


@pytest.fixture(scope="session")
def adfa_traces(adfa_dir):
    return adfa.load(adfa_dir)


@pytest.fixture(scope="session")
def classifier():
    return Classifier()
