"""The build as a user outside the editable install meets it (from a packaging review): the
sdist carries the C++/CUDA sources, build switches never stick in a reused CMake cache, a
wheel can be built without -march=native, and `superkern --version` exists."""
from __future__ import annotations

import os
import runpy
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import superkern

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup_py():
    """setup.py's functions, without running setup() (it runs only as __main__)."""
    return runpy.run_path(str(ROOT / "setup.py"), run_name="superkern_setup")


def test_build_switches_are_passed_in_both_states(setup_py):
    """Only SUPERKERN_NO_CUDA=ON was ever passed, so after one such build the CMake cache kept
    CUDA off for every later build in that folder; SUPERKERN_PORTABLE, documented as a build
    option, was never passed at all (a wheel got -march=native)."""
    args = setup_py["cmake_args"]("out", environ={})
    assert "-DSUPERKERN_NO_CUDA=OFF" in args and "-DSUPERKERN_PORTABLE=OFF" in args
    args = setup_py["cmake_args"]("out", environ={
        "SUPERKERN_NO_CUDA": "1", "SUPERKERN_PORTABLE": "yes",
        "CMAKE_ARGS": "-DCMAKE_DISABLE_FIND_PACKAGE_OpenMP=ON -DX='a b'"})
    assert "-DSUPERKERN_NO_CUDA=ON" in args and "-DSUPERKERN_PORTABLE=ON" in args
    assert args[-2:] == ["-DCMAKE_DISABLE_FIND_PACKAGE_OpenMP=ON", "-DX=a b"]
    for off in ("0", "off", "False", ""):
        assert "-DSUPERKERN_NO_CUDA=OFF" in setup_py["cmake_args"](
            "out", environ={"SUPERKERN_NO_CUDA": off})
    assert setup_py["version"]() == superkern.__version__  # one version string


def _cache(build: Path) -> dict[str, str]:
    out = {}
    for line in (build / "CMakeCache.txt").read_text().splitlines():
        if ":" in line and "=" in line and not line.startswith(("//", "#")):
            key, value = line.split("=", 1)
            out[key.split(":")[0]] = value
    return out


@pytest.mark.skipif(shutil.which("cmake") is None, reason="no cmake")
def test_a_reused_cmake_cache_follows_the_switches(setup_py, tmp_path):
    """Configure (no compile) twice in one build folder, as a reinstall does: NO_CUDA=ON, then
    unset, gives OFF; a configure that found no nvcc (NOTFOUND cached) looks again once nvcc
    is on PATH."""
    build = tmp_path / "b"
    build.mkdir()

    def configure(environ, path=None):
        env = {**os.environ, "PATH": path or os.environ["PATH"]}
        env.pop("CUDACXX", None)
        run = subprocess.run(["cmake", str(ROOT), *setup_py["cmake_args"](str(tmp_path), environ)],
                             cwd=build, env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        return _cache(build)

    assert configure({"SUPERKERN_NO_CUDA": "1"})["SUPERKERN_NO_CUDA"] == "ON"
    assert configure({})["SUPERKERN_NO_CUDA"] == "OFF"
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc"
                                    if os.path.exists("/usr/local/cuda/bin/nvcc") else None)
    if nvcc is None:
        pytest.skip("no nvcc: the NOTFOUND re-check needs one")
    bare = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                           if not os.path.exists(os.path.join(p, "nvcc")))
    shutil.rmtree(build)
    build.mkdir()
    assert configure({}, path=bare).get("CMAKE_CUDA_COMPILER", "").endswith("NOTFOUND")
    with_nvcc = os.path.dirname(nvcc) + os.pathsep + bare
    assert configure({}, path=with_nvcc)["CMAKE_CUDA_COMPILER"].endswith("nvcc")


def _tracked_copy(dest: Path) -> list[str]:
    """The tracked files only, as a clean clone has them."""
    try:
        files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                               check=True, timeout=60).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    for f in files:
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dest / f)
    return files


def test_the_sdist_carries_what_the_build_needs(tmp_path):
    """The sdist had no csrc/ and no CMakeLists.txt (no MANIFEST.in): building from it failed
    in CMake ('does not appear to contain CMakeLists.txt')."""
    src = tmp_path / "src"
    files = _tracked_copy(src)
    run = subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path)],
                         cwd=src, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    (tarball,) = tmp_path.glob("superkern-*.tar.gz")
    assert tarball.name == f"superkern-{superkern.__version__}.tar.gz"
    with tarfile.open(tarball) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    need = {f for f in files if f.startswith(("csrc/", "superkern/")) or f in (
        "CMakeLists.txt", "setup.py", "pyproject.toml", "README.md")}
    assert not need - names, sorted(need - names)


def test_a_module_gone_from_the_checkout_is_not_installed_again(tmp_path):
    """build/lib*/superkern kept files of earlier builds: a module since deleted or renamed
    went into the next wheel."""
    _tracked_copy(tmp_path)
    ghost = tmp_path / "build" / "lib" / "superkern" / "ghost.py"
    ghost.parent.mkdir(parents=True)
    ghost.write_text("raise ImportError\n")
    run = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "-d", "build/lib"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert not ghost.exists() and (ghost.parent / "cli.py").is_file()


def test_version_option():
    run = subprocess.run([sys.executable, "-m", "superkern", "--version"], capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0 and run.stdout.strip() == f"superkern {superkern.__version__}"


def test_a_missing_extension_in_the_source_tree_says_so(monkeypatch):
    """Run inside a clone after a non-editable install, `superkern env` said only 'No module
    named superkern._C' and everything fell back to torch without a word on why."""
    from superkern import backend

    def fail(name):
        raise ModuleNotFoundError(f"No module named {name!r}")

    monkeypatch.setattr(backend.importlib, "import_module", fail)
    backend.extension_error.cache_clear()
    try:
        msg = backend.extension_error()
    finally:
        backend.extension_error.cache_clear()
    assert msg.startswith("ModuleNotFoundError: No module named 'superkern._C'")
    assert "imported from the source tree" in msg and "pip install --no-build-isolation -e ." in msg
