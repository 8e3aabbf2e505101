"""Build driver: setuptools + CMake for the optional pybind11 extension ``superkern._C``.

Environment variables:
  SUPERKERN_NO_EXT=1          skip the compiled extension entirely (pure-Python install).
  SUPERKERN_NO_CUDA=1         build only the C++ CPU kernels, even where nvcc exists.
  SUPERKERN_CUDA_ARCH="80;90" CUDA architectures (CMAKE_CUDA_ARCHITECTURES); never "native".
  SUPERKERN_BUILD_TYPE        CMake build type (default Release).

Whether CUDA is compiled depends only on CMake finding nvcc, never on a GPU being present.
"""
import os
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name: str, sourcedir: str = "") -> None:
        super().__init__(name, sources=[])
        self.sourcedir = os.fspath(Path(sourcedir).resolve())


class CMakeBuild(build_ext):
    def build_extension(self, ext: CMakeExtension) -> None:
        import pybind11

        extdir = Path(self.get_ext_fullpath(ext.name)).parent.resolve()
        cfg = os.environ.get("SUPERKERN_BUILD_TYPE", "Release")
        args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={extdir}{os.sep}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DCMAKE_BUILD_TYPE={cfg}",
            f"-DSUPERKERN_CUDA_ARCH={os.environ.get('SUPERKERN_CUDA_ARCH', '80;90')}",
        ]
        if os.environ.get("SUPERKERN_NO_CUDA", "0") not in ("", "0"):
            args.append("-DSUPERKERN_NO_CUDA=ON")
        build_temp = Path(self.build_temp) / ext.name
        build_temp.mkdir(parents=True, exist_ok=True)
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
        subprocess.run(["cmake", ext.sourcedir, *args], cwd=build_temp, check=True)
        subprocess.run(["cmake", "--build", ".", "-j", jobs], cwd=build_temp, check=True)


ext_modules = []
if os.environ.get("SUPERKERN_NO_EXT", "0") in ("", "0"):
    ext_modules = [CMakeExtension("superkern._C", sourcedir=str(ROOT))]

setup(
    name="superkern",
    version="0.1.0",
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
    cmdclass={"build_ext": CMakeBuild},
    zip_safe=False,
)
