"""Text renderings of a ProbeReport: a terminal table and Markdown."""
from __future__ import annotations

import math
import textwrap
from typing import Any

from superkern.probe import baselines
from superkern.probe.frequency import format_frequency


def _f(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, int):
        return str(v)
    if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits}g}"


def _wrap(text: str, first: str, rest: str, width: int = 100) -> str:
    """A verdict sentence wrapped to ``width`` columns (they ran to 250)."""
    return textwrap.fill(text, width=width, initial_indent=first, subsequent_indent=rest,
                         break_long_words=False, break_on_hyphens=False)


def _tok(s: str, width: int = 18) -> str:
    r = repr(s)
    return r if len(r) <= width else r[:width - 3] + "...'"


def _md_tok(s: str) -> str:
    """A token for a Markdown table cell: repr (shows whitespace), pipes and backticks escaped."""
    return "`" + repr(s).replace("`", "'").replace("|", "\\|") + "`"


def _tied(head: dict) -> str:
    t = head["tied"]
    word = "unknown" if t is None else ("yes" if t else "no")
    return f"{word}: {head['tied_reason']}"


def _overlap_rows(d: dict) -> list[list[str]]:
    rows = []
    for b in d["overlaps"].values():
        t = b.get("tiled") or {}
        mark = "*" if t.get("sampled") else ""
        se = b.get("mean_abs_se")
        mean_abs = _f(b.get("mean_abs")) + (f" +- {se:.1g}" if se is not None else "")
        rows.append([b["title"], f"{b['rows_used']}{mark}", _f(float(b["pairs"]), 3),
                     mean_abs, _f(b["mean_sq"]), _f(b["m_mean_sq"], 3),
                     _f(t.get("var_abs")), _f(b.get("max_abs"), 3),
                     "-" if b["welch_bound"] is None else _f(b["welch_bound"], 3)])
    m = d["rows"]["m"]
    rows.append([f"random unit vectors (m={m})", "", "", _f(baselines.random_mean_abs(m)),
                 _f(1.0 / m), "1", _f(baselines.random_var_abs(m)), "", ""])
    return rows


def _in_sample(tiled: dict) -> str:
    """How the largest pairs were found: " in a sample of S rows" when the pass was sampled
    (the head's own largest may be larger and other pairs)."""
    return f" in a sample of {tiled['rows']} rows" if tiled.get("sampled") else ""


_OVERLAP_HEAD = ["rows", "N", "pairs", "mean|c|", "mean c^2", "m*mean c^2", "var|c|",
                 "max|c|", "Welch"]


def _grid(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    fmt = lambda r: ("  " + "  ".join(  # noqa: E731
        str(c).ljust(w) if i == 0 else str(c).rjust(w)
        for i, (c, w) in enumerate(zip(r, widths)))).rstrip()  # empty last cells: no padding
    return [fmt(header)] + [fmt(r) for r in rows]


def _timing(run: dict) -> str:
    parts = ", ".join(f"{k} {v:.1f}" for k, v in run["timings"].items())
    return (f"backend {run['backend']}, precision {run['precision']}, device {run['device']}, "
            f"{run['threads']} threads; {run['seconds']:.1f} s ({parts})")


def format_table(report) -> str:
    d = report.to_dict()
    h, rows, nd, v = d["head"], d["rows"], d["norms"], d["verdict"]
    dup = d["duplicates"]
    out = [f"superkern probe: {h['name'] or h['source']}",
           f"  source  {h['source']} ({h['format']})",
           f"  tensor  {h['tensor']}: {h['shape'][0]} x {h['shape'][1]}, {h['dtype']}",
           f"  tied    {_tied(h)}",
           "  vocab   " + (f"{h['vocab_size']} tokens ({h['vocab_source']})"
                            if h["vocab_size"] else "none (rows shown as #index)"),
           f"  rows    {rows['analysed']} analysed of {rows['n']}"
           + (f" (selected {rows['selected']})" if rows["selected"] is not None else "")
           + f"; excluded {rows['excluded']}; exact duplicates: {dup['groups']} groups, "
             f"{dup['rows_in_groups']} rows ({dup['extra_copies']} extra copies"
           + (", excluded)" if dup["excluded"] else ")"), ""]
    for g in dup["largest"][:3]:
        more = f" +{g['count'] - 6} more" if g["count"] > 6 else ""
        toks = ", ".join(_tok(t, 18) for t in g["tokens"][:3])
        out.insert(-1, f"          duplicate x{g['count']}: rows "
                       f"{', '.join(map(str, g['rows'][:6]))}{more}; tokens {toks}"
                       + (", ..." if g["count"] > 3 and g["tokens"] else ""))
    if dup["groups"] > 3:
        out.insert(-1, f"          ... {dup['groups'] - 3} more group(s) (the 1000 largest in "
                       "--json)")
    out += [f"Row norms: mean {_f(nd['mean'])} +- {_f(nd['std'])}, min {_f(nd['min'])}, "
            f"median {_f(nd['median'])}, max {_f(nd['max'])}, zero rows {nd['n_zero']}"]
    out += _grid(["", "raw", "/ median"],
                 [["phi_1/2 (norm > 1/2)", _f(nd["phi_half"]), _f(nd["phi_half_median"])],
                  ["phi_1   (norm > 1)", _f(nd["phi_1"]), _f(nd["phi_1_median"])]])
    out += ["", "Overlaps c = u_i . u_j of unit rows (mean c^2 exact over all rows of each set)"]
    out += _grid(_OVERLAP_HEAD, _overlap_rows(d))
    if any((b.get("tiled") or {}).get("sampled") for b in d["overlaps"].values()):
        out.append(f"  * mean|c|, var|c| and max|c| on a seeded random sample of "
                   f"{d['run']['sample']} rows of that set: mean|c| +- its standard error; "
                   "max|c| a lower bound")
    main = d["overlaps"]["all"].get("tiled") or {}
    within = _in_sample(main)
    if main.get("max_pair"):
        i, j = main["max_pair"]
        a, b = (_tok(t) for t in main["max_tokens"])
        out += ["", f"Largest |c|{within} = {_f(main['max_abs'])} between rows {i} {a} and "
                    f"{j} {b}"]
    if main.get("topk"):
        out.append(f"Top {len(main['topk'])} pairs by |c|{within}:")
        out += _grid(["c", "i", "j", "token i", "token j"],
                     [[f"{p['cos']:+.4f}", str(p["i"]), str(p["j"]), _tok(p["tokens"][0]),
                       _tok(p["tokens"][1])] for p in main["topk"]])
    out += format_frequency(d.get("frequency"))
    out += ["", f"Verdict: {v['label'].upper()}", _wrap(v["summary"], "  ", "  ")]
    out += [_wrap(note, "  - ", "    ") for note in v["notes"]]
    out += [_wrap(f"phi used {v['norm_scale_text']}", "  ", "  "), "",
            "Run: " + _timing(d["run"])]
    return "\n".join(out)


def format_markdown(report) -> str:
    d = report.to_dict()
    h, rows, nd, v, dup = d["head"], d["rows"], d["norms"], d["verdict"], d["duplicates"]
    md = [f"# superkern probe: {h['name'] or h['source']}", "",
          "| | |", "|---|---|",
          f"| source | `{h['source']}` ({h['format']}) |",
          f"| tensor | `{h['tensor']}`: {h['shape'][0]} x {h['shape'][1]}, {h['dtype']} |",
          f"| tied | {_tied(h)} |",
          f"| vocabulary | {h['vocab_size'] or 'none'} |",
          f"| rows analysed | {rows['analysed']} of {rows['n']} (excluded {rows['excluded']}) |",
          f"| exact duplicates | {dup['groups']} groups, {dup['rows_in_groups']} rows |", "",
          "## Row norms", "",
          f"mean {_f(nd['mean'])} ± {_f(nd['std'])}, min {_f(nd['min'])}, median "
          f"{_f(nd['median'])}, max {_f(nd['max'])}", "",
          "| | raw | / median |", "|---|---:|---:|",
          f"| phi_1/2 | {_f(nd['phi_half'])} | {_f(nd['phi_half_median'])} |",
          f"| phi_1 | {_f(nd['phi_1'])} | {_f(nd['phi_1_median'])} |", "",
          "## Overlaps", "",
          "| " + " | ".join(h.replace("|", "\\|") for h in _OVERLAP_HEAD) + " |",
          "|---" + "|---:" * (len(_OVERLAP_HEAD) - 1) + "|"]
    md += ["| " + " | ".join(r) + " |" for r in _overlap_rows(d)]
    if any((b.get("tiled") or {}).get("sampled") for b in d["overlaps"].values()):
        md += ["", "\\* mean\\|c\\|, var\\|c\\|, max\\|c\\| on a seeded sample of "
                   f"{d['run']['sample']} rows (mean\\|c\\| ± its standard error; max\\|c\\| a "
                   "lower bound); mean c^2 exact over all rows."]
    main = d["overlaps"]["all"].get("tiled") or {}
    if main.get("topk"):
        md += ["", f"## Most overlapping pairs{_in_sample(main)}", "",
               "| c | i | j | token i | token j |",
               "|---:|---:|---:|---|---|"]
        md += [f"| {p['cos']:+.4f} | {p['i']} | {p['j']} | {_md_tok(p['tokens'][0])} | "
               f"{_md_tok(p['tokens'][1])} |" for p in main["topk"]]
    freq = format_frequency(d.get("frequency"))
    if freq:
        md += ["", "## Row norm vs token frequency", "", "```", *freq[1:], "```"]
    md += ["", "## Verdict", "", f"**{v['label']}**: {v['summary']}", ""]
    md += [f"- {note}" for note in v["notes"]]
    md += [f"- phi used {v['norm_scale_text']}", "", f"Run: {_timing(d['run'])}", ""]
    return "\n".join(md)
