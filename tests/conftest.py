"""Shared fixtures: where the public test data lives, and skips that say why."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout; tests that need it skip on a fresh clone without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"public test data not found at {SHARED_DATA} (it lives beside the repo in CI)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def verilog_eval_dir(shared_data: Path) -> Path:
    path = shared_data / "verilog-eval-v2-sample"
    if not path.is_dir():
        pytest.skip(f"{path} missing")
    return path


@pytest.fixture(scope="session")
def rtllm_dir(shared_data: Path) -> Path:
    path = shared_data / "rtllm"
    if not path.is_dir():
        pytest.skip(f"{path} missing")
    return path


@pytest.fixture(scope="session")
def sven_dir(shared_data: Path) -> Path:
    path = shared_data / "sven-python"
    if not path.is_dir():
        pytest.skip(f"{path} missing")
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """On a shared 2-core box, torch's spinning intra-op threads make a tiny model ~10x slower; tests that
    train the tiny model opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
