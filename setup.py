"""Builds pamnet_fast._C, the C++/OpenMP CPU kernels, against the installed torch.

Install with ``pip install --no-build-isolation -e .`` so the build uses the torch already installed
(an isolated build environment would download another, CUDA, torch). If the build fails, the package
still imports and runs on its plain-PyTorch reference ops.
"""
import glob
import os

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

ROOT = os.path.dirname(os.path.abspath(__file__))
SOURCES = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))

# -ffp-contract=off: no fused multiply-add, so distances round exactly as in the reference ops (the
# neighbor search is exact, not approximately right). -fno-trapping-math / -fno-math-errno change no
# result; they let GCC if-convert and vectorize loops with comparisons. Vector ISAs: target_clones.
CXX_FLAGS = ["-O3", "-fopenmp", "-ffp-contract=off", "-fno-trapping-math", "-fno-math-errno", "-std=c++20", "-Wall", "-Wno-unknown-pragmas"]

setup(
    ext_modules=[
        CppExtension(
            "pamnet_fast._C",
            SOURCES,
            include_dirs=[os.path.join(ROOT, "csrc")],
            extra_compile_args={"cxx": CXX_FLAGS},
            extra_link_args=["-fopenmp"],
        )
    ],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
