"""setuptools entry point: builds the optional pybind11 paste-back kernel (kernels/cpp/paste.cpp)
as ``nullswap_sdk.kernels._paste``. All metadata lives in pyproject.toml.

The kernel is an accelerator, not a requirement: if pybind11 or a C++ compiler is missing, or
the build fails, the install still succeeds with a loud warning, and the SDK logs once at run
time that paste-back uses the NumPy/OpenCV fallback.
"""
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

BANNER = "=" * 78


_warned = []


def _warn(why: str) -> None:
    if _warned:  # the first failure is the cause; later ones (e.g. the in-place copy) follow from it
        return
    _warned.append(why)
    sys.stderr.write(f"\n{BANNER}\nWARNING: nullswap_sdk.kernels._paste (C++ paste-back kernel) was NOT built:\n"
                     f"  {why}\nThe SDK works, but paste-back falls back to the slower NumPy/OpenCV path.\n"
                     f"Fix: install a C++17 compiler (e.g. `apt-get install g++`) and pybind11, then reinstall.\n"
                     f"{BANNER}\n\n")


class OptionalBuildExt(build_ext):
    """build_ext that turns a failed extension build into a warning."""

    def run(self):
        try:
            super().run()
        except Exception as e:  # noqa: BLE001 - any compiler/toolchain failure
            _warn(f"{type(e).__name__}: {e}")

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as e:  # noqa: BLE001
            _warn(f"{type(e).__name__}: {e}")


ext_modules = []
try:
    from pybind11.setup_helpers import Pybind11Extension

    ext_modules.append(Pybind11Extension(
        "nullswap_sdk.kernels._paste", ["kernels/cpp/paste.cpp"], cxx_std=17,
        extra_compile_args=["-O3"] if sys.platform != "win32" else ["/O2"],
        extra_link_args=["-pthread"] if sys.platform != "win32" else []))
except ImportError as e:
    _warn(f"pybind11 is not importable at build time ({e})")

setup(ext_modules=ext_modules, cmdclass={"build_ext": OptionalBuildExt})
