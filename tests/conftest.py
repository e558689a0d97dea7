import os
import pathlib

# Triton kernels run on CPU tensors through Triton's interpreter when no GPU is present. The variable
# is read when kernels are decorated, so it must be set before anything imports triton.
try:
    import torch
    _has_cuda = torch.cuda.is_available()
except Exception:  # pragma: no cover
    _has_cuda = False
if not _has_cuda:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

# ../shared/data from the repository root; PAMNET_FAST_DATA overrides it (e.g. for a git worktree elsewhere)
DATA = pathlib.Path(os.environ.get("PAMNET_FAST_DATA") or
                    pathlib.Path(__file__).resolve().parents[2] / "shared" / "data")


@pytest.fixture(scope="session")
def shared_data():
    """The project's real structures (../shared/data); tests that need them skip when it is absent."""
    if not DATA.is_dir():
        pytest.skip(f"real data not found at {DATA}")
    return DATA


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny-tensor tests (more threads only add overhead and spin
    under load); ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
