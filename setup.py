"""Build driver: setuptools + CMake for the optional pybind11 extension ``superkern._C``.

Environment variables:
  SUPERKERN_NO_EXT=1          skip the compiled extension entirely (pure-Python install).
  SUPERKERN_NO_CUDA=1         build only the C++ CPU kernels, even where nvcc exists.
  SUPERKERN_CUDA_ARCH="80;90" CUDA architectures (CMAKE_CUDA_ARCHITECTURES); never "native".
  SUPERKERN_BUILD_TYPE        CMake build type (default Release).
  SUPERKERN_PORTABLE=1        no -march=native (for a wheel that runs on other CPUs).
  CMAKE_ARGS                  more CMake arguments, e.g. -DCMAKE_DISABLE_FIND_PACKAGE_OpenMP=ON.

Whether CUDA is compiled depends only on CMake finding nvcc, never on a GPU being present.
"""
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def _flag(name: str, environ=os.environ) -> bool:
    return environ.get(name, "").strip().lower() not in ("", "0", "off", "false", "no")


def cmake_args(extdir: str, environ=os.environ) -> list:
    """CMake's arguments. Every switch is passed in both states, every time: a value cached
    by an earlier build in the same build folder (SUPERKERN_NO_CUDA=ON) must not stick."""
    import pybind11

    on = {True: "ON", False: "OFF"}
    return [
        f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={extdir}{os.sep}",
        f"-DPython_EXECUTABLE={sys.executable}",
        f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
        f"-DCMAKE_BUILD_TYPE={environ.get('SUPERKERN_BUILD_TYPE', 'Release')}",
        f"-DSUPERKERN_CUDA_ARCH={environ.get('SUPERKERN_CUDA_ARCH', '80;90')}",
        f"-DSUPERKERN_NO_CUDA={on[_flag('SUPERKERN_NO_CUDA', environ)]}",
        f"-DSUPERKERN_PORTABLE={on[_flag('SUPERKERN_PORTABLE', environ)]}",
        *shlex.split(environ.get("CMAKE_ARGS", "")),
    ]


def version() -> str:
    """The one version string, ``superkern.__version__``."""
    text = (ROOT / "superkern" / "__init__.py").read_text(encoding="utf-8")
    return re.search(r'^__version__ = "([^"]+)"', text, re.M).group(1)


class CMakeExtension(Extension):
    def __init__(self, name: str, sourcedir: str = "") -> None:
        super().__init__(name, sources=[])
        self.sourcedir = os.fspath(Path(sourcedir).resolve())


class CMakeBuild(build_ext):
    def build_extension(self, ext: CMakeExtension) -> None:
        extdir = Path(self.get_ext_fullpath(ext.name)).parent.resolve()
        args = cmake_args(os.fspath(extdir))
        build_temp = Path(self.build_temp) / ext.name
        build_temp.mkdir(parents=True, exist_ok=True)
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
        subprocess.run(["cmake", ext.sourcedir, *args], cwd=build_temp, check=True)
        subprocess.run(["cmake", "--build", ".", "-j", jobs], cwd=build_temp, check=True)


class CleanBuildPy(build_py):
    """Start from an empty build/lib*/superkern: files left there by an earlier build (a module
    since deleted or renamed in the checkout) would otherwise be installed again."""

    def run(self) -> None:
        stale = Path(self.build_lib) / "superkern"
        if not getattr(self, "editable_mode", False) and stale.is_dir():
            shutil.rmtree(stale)
        super().run()


ext_modules = [] if _flag("SUPERKERN_NO_EXT") else [
    CMakeExtension("superkern._C", sourcedir=str(ROOT))]

if __name__ == "__main__":  # how pip runs it; tests import cmake_args and version alone
    setup(
        name="superkern",
        version=version(),
        description="Compiled-kernel analysis of representation superposition and neural scaling",
        long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
        long_description_content_type="text/markdown",
        packages=find_packages(include=["superkern", "superkern.*"]),
        package_data={"superkern": ["experiments/*.toml", "data/*.csv"]},
        python_requires=">=3.10",
        install_requires=[
            "torch>=2.4",
            "numpy>=1.24",
            "safetensors>=0.4",
            "gguf>=0.10",
            "scipy>=1.10",
            "matplotlib>=3.7",
            "tqdm>=4.60",
            "tokenizers>=0.19",  # token counts under a given tokenizer; BPE ignore_merges (Llama 3)
            "huggingface_hub>=0.23",  # ORG/NAME heads: hf_hub_download, offline mode, gated errors
            "sentencepiece>=0.2",  # GGUF SentencePiece tokenizers (Gemma, Llama 2) rebuilt
            "protobuf>=3.20",  # sentencepiece's ModelProto, built from the GGUF's pieces
            "tomli>=2; python_version<'3.11'",
        ],
        extras_require={
            "triton": ["triton>=3.6"],
            "test": ["pytest>=7", "pytest-benchmark>=4"],
        },
        entry_points={"console_scripts": ["superkern=superkern.cli:main"]},
        ext_modules=ext_modules,
        cmdclass={"build_ext": CMakeBuild, "build_py": CleanBuildPy},
        zip_safe=False,
    )
