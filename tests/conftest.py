"""Fixtures shared by the test modules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings
from model_factory import make_forecaster, make_text_model

# CI replays the same examples every run, so a landing never hinges on a lucky draw;
# locally hypothesis keeps exploring new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def models_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding two small trained models, ``wave`` (forecaster) and ``words`` (text)."""
    root = tmp_path_factory.mktemp("saved")
    make_forecaster(root)
    make_text_model(root)
    return root / "models"
