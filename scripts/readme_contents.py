"""Filter for build_readme.sh: replaces the line '<!-- contents -->' of the README on stdin
with a linked list of its ## and ### headings (code blocks skipped), anchors as GitHub makes
them: lowercased, punctuation but '-' and '_' dropped, spaces to '-', repeats numbered."""
import re
import sys

MARK = "<!-- contents -->"


def anchor(title: str, seen: dict) -> str:
    slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
    n = seen.get(slug, 0)
    seen[slug] = n + 1
    return slug if n == 0 else f"{slug}-{n}"


def main() -> None:
    lines = sys.stdin.read().split("\n")
    toc, seen, fence = [], {}, False
    for line in lines:
        if line.startswith("```"):
            fence = not fence
        m = None if fence else re.match(r"(#{1,3}) (.+)", line)
        if m:
            slug = anchor(m.group(2), seen)
            if len(m.group(1)) > 1:
                indent = "  " * (len(m.group(1)) - 2)
                toc.append(f"{indent}- [{m.group(2).replace('`', '')}](#{slug})")
    if lines.count(MARK) != 1:
        sys.exit(f"readme_contents.py: expected one '{MARK}' line, found {lines.count(MARK)}")
    i = lines.index(MARK)
    lines[i:i + 1] = ["## Contents", "", *toc]
    sys.stdout.write("\n".join(lines))


if __name__ == "__main__":
    main()
