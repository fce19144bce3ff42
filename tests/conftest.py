import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="session")
def fingernail_dataset1():
    """The real fingernail photos of ../shared, or skip when they are not there."""
    path = SHARED / "data" / "fingernail" / "dataset1"
    if not (path / "image").is_dir():
        pytest.skip(f"{path} not present")
    return path


@pytest.fixture(scope="session")
def drive_training():
    """The 20 real DRIVE training images of ../shared (official layout: images/*.tif, 1st_manual/*.gif,
    mask/*.gif), or skip when they are not there."""
    path = SHARED / "data" / "drive" / "training"
    if not all((path / sub).is_dir() for sub in ("images", "1st_manual", "mask")):
        pytest.skip(f"{path} not present")
    return path
