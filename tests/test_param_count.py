"""Exact and non-embedding parameter counts of the size-width models: the per-family formulas
against published counts, the built-in table against the formulas, and `fit size-width
--params`."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from superkern.analysis.llm_size import BUILTIN, PARAM_COLUMNS, fit_size_width, load_size_csv
from superkern.analysis.param_count import (CONFIGS, exact_counts, load_configs,
                                            param_count)
from superkern.analysis.tables import read_csv_columns

# Exact totals (and non-embedding counts where published), model -> (total, non_embedding).
PUBLISHED = {
    # Pythia model card (EleutherAI, Hugging Face), "Naming convention and parameter count"
    # table: total and non-embedding params (the latter also Table 1 of the Pythia paper).
    "Pythia-70m": (70_426_624, 18_915_328),
    "Pythia-160m": (162_322_944, 85_056_000),
    "Pythia-410m": (405_334_016, 302_311_424),
    "Pythia-1b": (1_011_781_632, 805_736_448),
    "Pythia-1.4b": (1_414_647_808, 1_208_602_624),
    "Pythia-2.8b": (2_775_208_960, 2_517_652_480),
    "Pythia-6.9b": (6_857_302_016, 6_444_163_072),
    "Pythia-12b": (11_846_072_320, 11_327_027_200),
    # GPT-2: the released checkpoints' parameter counts with the tied LM head counted once
    # (what Hugging Face transformers reports for gpt2, gpt2-medium, -large, -xl, and the
    # usual figures for GPT-2 small/medium/large/XL: 124M, 355M, 774M, 1.56B).
    "GPT2": (124_439_808, None),
    "GPT2-Medium": (354_823_168, None),
    "GPT2-Large": (774_030_080, None),
    "GPT2-XL": (1_557_611_200, None),
    # OPT: sum of the parameter sizes of facebook/opt-125m, -350m and -1.3b as loaded by
    # Hugging Face transformers (e.g. PEFT's "all params" for these checkpoints).
    "OPT-125m": (125_239_296, None),
    "OPT-350m": (331_196_416, None),
    "OPT-1.3b": (1_315_758_080, None),
    # Qwen2.5: the parameter totals the Hugging Face Hub reads from each base checkpoint's
    # safetensors metadata (Qwen/Qwen2.5-0.5B ... Qwen/Qwen2.5-72B).
    "Qwen2.5-0.5B": (494_032_768, None),
    "Qwen2.5-1.5B": (1_543_714_304, None),
    "Qwen2.5-3B": (3_085_938_688, None),
    "Qwen2.5-7B": (7_615_616_512, None),
    "Qwen2.5-14B": (14_770_033_664, None),
    "Qwen2.5-32B": (32_763_876_352, None),
    "Qwen2.5-72B": (72_706_203_648, None),
}


def test_formulas_reproduce_published_exact_counts():
    counts = exact_counts()
    for model, (total, non_emb) in PUBLISHED.items():
        assert counts[model]["total"] == total, model
        if non_emb is not None:
            assert counts[model]["non_embedding"] == non_emb, model


def test_qwen_model_cards_rounded_counts():
    """Qwen2.5 model cards: "Number of Parameters: 0.49B, Number of Parameters
    (Non-Embedding): 0.36B" and so on. The four smaller models agree to the card's rounding,
    which also fixes the convention: tied models (0.5B-3B) drop the embedding once, untied
    ones (7B) drop embedding and unembedding. The cards of the 14B, 32B and 72B models give
    non-embedding 13.1B, 31.0B and 70.0B (and 32.5B total for 32B), 0.1-0.2B below what their
    checkpoints hold (13.21B, 31.21B, 70.21B; 32.76B total, matching the safetensors totals
    above); those card figures are not reproducible from the released shapes."""
    counts = exact_counts()
    card = {"Qwen2.5-0.5B": (0.49, 0.36), "Qwen2.5-1.5B": (1.54, 1.31),
            "Qwen2.5-3B": (3.09, 2.77), "Qwen2.5-7B": (7.61, 6.53)}
    for model, (total, non_emb) in card.items():
        assert counts[model]["total"] / 1e9 == pytest.approx(total, abs=0.01), model
        assert counts[model]["non_embedding"] / 1e9 == pytest.approx(non_emb, abs=0.01), model
    for model, non_emb in (("Qwen2.5-14B", 13.1), ("Qwen2.5-32B", 31.0), ("Qwen2.5-72B", 70.0)):
        assert 0.1 < counts[model]["non_embedding"] / 1e9 - non_emb < 0.25, model


def test_equivalent_architectures_share_non_embedding_counts():
    """The Pythia card: "Equivalent" models (GPT-Neo/OPT) have exactly the same architecture
    and number of non-embedding parameters. That holds for OPT-125m, 1.3b, 2.7b and 6.7b
    (and GPT-2 small/medium, the same block shapes). OPT-350m, listed as Pythia-410M's
    equivalent, differs by its 512 <-> 1024 projections less the final LayerNorm it lacks."""
    c = exact_counts()
    ne = {k: v["non_embedding"] for k, v in c.items()}
    for pythia, other in (("Pythia-160m", "OPT-125m"), ("Pythia-1.4b", "OPT-1.3b"),
                          ("Pythia-2.8b", "OPT-2.7b"), ("Pythia-6.9b", "OPT-6.7b"),
                          ("Pythia-160m", "GPT2"), ("Pythia-410m", "GPT2-Medium")):
        assert ne[pythia] == ne[other], (pythia, other)
    assert ne["OPT-350m"] - ne["Pythia-410m"] == 2 * 512 * 1024 - 2 * 1024


def test_builtin_table_is_the_formula_and_near_the_names():
    fams, m, nominal = load_size_csv(BUILTIN)
    _, _, exact = load_size_csv(BUILTIN, "exact")
    _, _, non_emb = load_size_csv(BUILTIN, "non-embedding")
    keys, _ = read_csv_columns(BUILTIN, ("model",), ("m",))
    models = [k[0] for k in keys]
    configs, counts = load_configs(CONFIGS), exact_counts(CONFIGS)
    assert sorted(models) == sorted(configs) and len(models) == 27
    for i, model in enumerate(models):
        assert configs[model]["family"] == fams[i] and configs[model]["hidden"] == m[i]
        assert exact[i] == counts[model]["total"], model  # llm_sizes.csv is in step
        assert non_emb[i] == counts[model]["non_embedding"], model
        # the name rounds the exact count: within 10% (farthest: Qwen2.5-7B's 7.62B, +8.8%;
        # then Qwen2.5-14B's 14.77B, +5.5%, and OPT-350m's 331M, -5.4%)
        assert abs(exact[i] / nominal[i] - 1) < 0.10, model
        assert 0 < non_emb[i] < exact[i]


def test_bad_configurations():
    good = dict(load_configs()["Qwen2.5-7B"])
    assert param_count(good)["total"] == 7_615_616_512
    with pytest.raises(ValueError, match="unknown arch 'llama'; known: gpt2, opt"):
        param_count({**good, "arch": "llama"})
    with pytest.raises(ValueError, match="lacks ffn"):
        param_count({k: v for k, v in good.items() if k != "ffn"})
    with pytest.raises(ValueError, match="hidden must be a whole number, got 3584.5"):
        param_count({**good, "hidden": 3584.5})
    with pytest.raises(ValueError, match="tied and final_norm 0 or 1"):
        param_count({**good, "tied": 2})
    with pytest.raises(ValueError, match="sizes must be > 0"):
        param_count({**good, "layers": 0})
    with pytest.raises(ValueError, match="must divide hidden"):
        param_count({**good, "kv_heads": 3})
    with pytest.raises(ValueError, match="tied must be a whole number, got True"):
        param_count({**good, "tied": True})


def test_a_model_listed_twice_is_refused(tmp_path):
    from superkern.analysis.param_count import CONFIGS

    lines = CONFIGS.read_text().splitlines()
    row = next(ln for ln in lines if ln.startswith("gpt2,"))
    (tmp_path / "twice.csv").write_text("\n".join(lines + [row]) + "\n")
    with pytest.raises(ValueError, match="model 'GPT2' appears twice"):
        load_configs(tmp_path / "twice.csv")


def _three_columns(tmp_path, ks=(2.0, 2.5, 3.0)):
    """A CSV whose nominal, exact and non-embedding columns follow N = a m^k with three
    different k (and a little scatter)."""
    rng = np.random.default_rng(5)
    lines = ["family,m,params,params_exact,params_non_embedding"]
    for fam, a, widths in (("a", 30.0, [512, 1024, 2048, 4096]), ("b", 9.0, [768, 1536, 3072]),
                           ("c", 50.0, [1024, 2048, 4096, 8192])):
        for w in widths:
            vals = [a * w ** k * math.exp(0.02 * rng.standard_normal()) for k in ks]
            lines.append(f"{fam},{w}," + ",".join(f"{v:.6g}" for v in vals))
    path = tmp_path / "sizes.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_each_column_recovers_its_exponent(tmp_path, capsys):
    from superkern.cli import main

    path = _three_columns(tmp_path)
    for option, k in zip(PARAM_COLUMNS, (2.0, 2.5, 3.0)):
        f = fit_size_width(*load_size_csv(path, option))
        assert f.k == pytest.approx(k, abs=4 * f.k_se) and f.k_se < 0.02
        out = tmp_path / f"{option}.json"
        assert main(["fit", "size-width", str(path), "--params", option,
                     "--json", str(out)]) == 0
        d = json.loads(out.read_text())
        assert d["params"] == option and d["k"] == pytest.approx(f.k)
    printed = capsys.readouterr().out
    assert "sizes.csv, column params_non_embedding)" in printed
    with pytest.raises(ValueError, match="params must be one of nominal, exact, non-embedding"):
        load_size_csv(path, "total")


def test_builtin_exact_and_non_embedding_fits(tmp_path, capsys):
    """The values docs/sections/sweep.md quotes (paper: k = 2.51)."""
    from superkern.analysis.fig_llm import size_width_figure
    from superkern.cli import main

    fits = {o: fit_size_width(*load_size_csv(BUILTIN, o)) for o in PARAM_COLUMNS}
    assert fits["nominal"].k == pytest.approx(2.3134, abs=1e-4)
    assert (fits["exact"].k, fits["exact"].k_se) == pytest.approx((2.3184, 0.0653), abs=1e-4)
    assert (fits["non-embedding"].k, fits["non-embedding"].k_se) == pytest.approx(
        (2.5489, 0.0831), abs=1e-4)
    assert main(["fit", "size-width", "--params", "non-embedding",
                 "--plot", str(tmp_path / "n.png")]) == 0
    out = capsys.readouterr().out
    assert "(built in: non-embedding sizes)" in out and "k = 2.549 +- 0.083" in out
    assert (tmp_path / "n.png").read_bytes()[:4] == b"\x89PNG"
    fams, m, n = load_size_csv(BUILTIN, "exact")
    ax = size_width_figure(fams, m, n, fits["exact"], ylabel="parameters N (exact)").axes[0]
    assert ax.get_ylabel() == "parameters N (exact)"


def test_missing_column_and_wrong_target(tmp_path, capsys):
    from superkern.cli import main

    csv = tmp_path / "mine.csv"
    csv.write_text("family,m,params\nx,512,1e8\nx,1024,5e8\nx,2048,3e9\n")
    assert main(["fit", "size-width", str(csv)]) == 0  # nominal needs only these columns
    capsys.readouterr()
    for option, column in (("exact", "params_exact"),
                           ("non-embedding", "params_non_embedding")):
        assert main(["fit", "size-width", str(csv), "--params", option]) == 2
        err = capsys.readouterr().err
        assert f"missing ['{column}']" in err and len(err.strip().splitlines()) == 1
    assert main(["fit", "zipf", str(csv), "--params", "exact"]) == 2
    assert "it does not apply to 'fit zipf'" in capsys.readouterr().err
