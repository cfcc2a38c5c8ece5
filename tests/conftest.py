import os
import pickle
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"real-data fixtures missing at {FIXTURES}")
        pytest.skip(f"real-data fixtures not found at {FIXTURES}")
    return FIXTURES


@pytest.fixture(scope="session")
def h36m_fixture(fixtures_dir):
    data = dict(np.load(fixtures_dir / "h36m" / "test_h36m_body3d.npz"))
    with open(fixtures_dir / "h36m" / "cameras.pkl", "rb") as f:
        cameras = pickle.load(f, encoding="latin1")
    return data, cameras


@pytest.fixture(scope="session")
def tiny_studio(tmp_path_factory) -> Path:
    """The tiny studio preset, rendered once per test session."""
    from metricpose.studio.generate import generate, synth_config

    out = tmp_path_factory.mktemp("studio") / "tiny"
    generate(out, synth_config("tiny"), progress=False)
    return out
