#!/usr/bin/env python3
"""Checks the relative links of the README, docs/*.md and the SDK guides: every target file
must exist and every #anchor must name a heading of its page, by GitHub's rules (lower case,
spaces to '-', punctuation dropped, '-1', '-2'... for repeats). Links to other sites are not
fetched. Run from anywhere: python3 docs/check-links.py"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["README.md", "docs/*.md", "guest-sdk/README.md", "guest-sdk/*/README.md"]

LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def lines(path, keep_code):
    """The page's lines, numbered as in the file, with fenced code blanked and, unless
    keep_code, inline code removed (a link inside code is not a link)."""
    out, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        fence = FENCE.match(line)
        if fence:
            fenced = not fenced
        if fence or fenced:
            out.append("")
        else:
            out.append(line if keep_code else re.sub(r"`[^`]*`", "", line))
    return out


def anchors(path):
    """GitHub's heading ids: code spans keep their text, links their label."""
    seen, found = {}, set()
    for line in lines(path, keep_code=True):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", m.group(1))
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def main():
    pages = sorted({p for pattern in PAGES for p in ROOT.glob(pattern)})
    bad, count = [], 0
    for page in pages:
        for number, line in enumerate(lines(page, keep_code=False), 1):
            for target in LINK.findall(line):
                if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
                    continue
                count += 1
                file, _, anchor = target.partition("#")
                dest = (page.parent / file).resolve() if file else page
                where = f"{page.relative_to(ROOT)}:{number}: {target}"
                if not dest.exists():
                    bad.append(f"{where}: no such file")
                elif anchor and dest.suffix != ".md":
                    bad.append(f"{where}: an anchor into a file that is not Markdown")
                elif anchor and anchor not in anchors(dest):
                    bad.append(f"{where}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    for b in bad:
        print(b)
    print(f"{len(pages)} pages, {count} relative links, {len(bad)} broken")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
