"""The pinned Zipf recipe (SPEC section 3) and the counts-file reader behind `superkern fit
zipf`: formats, auto-detection, and what it says when it cannot tell."""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from superkern.analysis.zipf import load_counts, zipf_fit


def test_zipf_recipe_exact_counts_and_sample():
    ranks = np.arange(1, 20001)
    for a in (0.8, 1.0, 1.3):
        f = zipf_fit(1e9 * ranks ** -a)
        assert abs(f.alpha - a) < 1e-9 and f.r2 > 1 - 1e-12 and f.points == 1000
        ints = np.floor(1e7 * ranks ** -a)  # integer counts: still recovered closely
        assert abs(zipf_fit(ints).alpha - a) < 0.02, zipf_fit(ints)
    rng = np.random.default_rng(0)
    sample = rng.zipf(2.0, 300_000)
    counts = np.bincount(sample)[1:]
    f = zipf_fit(counts)
    print(f"numpy zipf(2.0): alpha {f.alpha:.3f} R^2 {f.r2:.3f} types {f.n_types}")
    assert abs(f.alpha - 2.0) < 0.25 and f.n_tokens == 300_000
    # the recipe keeps duplicated low ranks: at N=5, all 1000 points fall on ranks 1..5
    g = zipf_fit([50, 20, 10, 5, 1])
    assert g.n_types == 5 and g.alpha > 0
    with pytest.raises(ValueError):
        zipf_fit([3])
    # all counts equal: exactly flat, R^2 undefined (not a -0.0 exponent or a NaN error)
    flat = zipf_fit([7] * 500)
    assert (flat.alpha, flat.stderr) == (0.0, 0.0) and math.copysign(1, flat.alpha) == 1
    assert math.isnan(flat.r2) and math.isclose(flat.intercept, math.log10(7))


def test_load_counts_formats(tmp_path):
    (tmp_path / "c.txt").write_text("100\n50\n\n33\n25\n")
    (tmp_path / "tc.txt").write_text("the 100\nof 50\nand\t33\n")
    (tmp_path / "c.json").write_text(json.dumps({"a": 9, "b": 3, "c": 1}))
    (tmp_path / "t.txt").write_text("The cat the DOG the cat\nthe end\n")
    c, mode = load_counts(tmp_path / "c.txt")
    assert mode == "counts" and sorted(c.tolist()) == [25, 33, 50, 100]
    c, mode = load_counts(tmp_path / "tc.txt")
    assert mode == "counts" and sorted(c.tolist()) == [33, 50, 100]
    c, mode = load_counts(tmp_path / "c.json")
    assert mode == "json" and sorted(c.tolist()) == [1, 3, 9]
    c, mode = load_counts(tmp_path / "t.txt")
    assert mode == "text" and sorted(c.tolist()) == [1, 1, 2, 4]  # the x4, cat x2, dog, end
    with pytest.raises(ValueError):
        load_counts(tmp_path / "t.txt", mode="counts")
    # Header lines, CSV and TSV, counts written as strings: all read as counts, never as text.
    for name, body in (("h.tsv", "token\tcount\nthe\t100\nof\t50\n"),
                       ("h.csv", "token,count\nthe,100\nof,50\n"),
                       ("s.json", json.dumps({"the": "100", "of": "50"}))):
        (tmp_path / name).write_text(body)
        c, mode = load_counts(tmp_path / name)
        assert mode in ("counts", "json") and sorted(c.tolist()) == [50, 100], name
    (tmp_path / "nested.json").write_text(json.dumps({"counts": {"the": 100}}))
    with pytest.raises(ValueError, match="JSON must be"):
        load_counts(tmp_path / "nested.json")  # parsed as JSON: never tokenised as text
    # `sort | uniq -c` writes 'COUNT TOKEN': the counts, not 2n text tokens (alpha 0.23
    # instead of 1.00 when it was read as text); numbered prose stays text.
    (tmp_path / "uniq.txt").write_text("".join(f"{10**6 // i:7d} w{i}\n" for i in range(1, 2001)))
    c, mode = load_counts(tmp_path / "uniq.txt")
    assert mode == "counts, count first" and c.size == 2000 and c.max() == 10**6
    assert zipf_fit(c).alpha == pytest.approx(1.0, abs=2e-3)
    (tmp_path / "numbered.txt").write_text("1 the cat sat\n2 on the mat\n")
    assert load_counts(tmp_path / "numbered.txt")[1] == "text"
    # `tr ' ' '\n' | sort | uniq -c` counts the empty token too (a lone count); a first
    # token that is a word, the rest numbers, is not a header; one stray line is named
    (tmp_path / "u1.txt").write_text("50 the\n     30 \n20 cat\n10 dog\n")
    assert load_counts(tmp_path / "u1.txt")[0].tolist() == [50, 30, 20, 10]
    (tmp_path / "u2.txt").write_text("5 the\n3 1999\n2 2000\n")
    assert load_counts(tmp_path / "u2.txt")[0].tolist() == [5, 3, 2]
    (tmp_path / "u3.txt").write_text("".join(f"{99 - i} w{i}\n" for i in range(20)) + "a b c\n")
    with pytest.raises(ValueError, match=r"1 of 21 lines are not 'count token' \(lines 21\)"):
        load_counts(tmp_path / "u3.txt")
    (tmp_path / "gap.txt").write_text("".join(f"w{i} {100 - i}\n" for i in range(30)) + "oops\n")
    with pytest.raises(ValueError, match=r"1 of 31 lines do not end in a count \(lines 31\)"):
        load_counts(tmp_path / "gap.txt")


def test_zipf_reports_distinct_ranks_and_warns_before_reading_numbers_as_words(tmp_path,
                                                                               capsys):
    """A 4-type vocabulary samples its 1000 pinned points from 4 ranks: the output says so
    (its slope se counts the repeats). A file most of whose lines end in counts, but too few
    for a counts file, is read as text with a warning (it was silent)."""
    from superkern.analysis.zipf import load_counts, zipf_fit
    from superkern.cli import main

    z = zipf_fit([40, 20, 10, 5])
    assert (z.points, z.distinct_ranks) == (1000, 4)
    assert zipf_fit(np.arange(1, 5001)[::-1]).distinct_ranks == 557  # low ranks repeat
    f = tmp_path / "c.txt"
    f.write_text("a 40\nb 20\nc 10\nd 5\n")
    assert main(["fit", "zipf", str(f)]) == 0
    assert "1000 log-rank points (4 distinct: the se counts repeats)" in capsys.readouterr().out
    f.write_text("a 40\nb 20\nc 10\nthis line has words only\n")
    with pytest.warns(UserWarning, match=r"read as text \(its words counted\): 3 of 4 lines "
                                         r"end in a count"):
        _, mode = load_counts(f)
    assert mode == "text"
    f.write_text("some prose\nwith one line that ends in 7\nand more words\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_counts(f)[1] == "text"  # a corpus: no warning
