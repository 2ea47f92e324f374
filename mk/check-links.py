#!/usr/bin/env python3
"""Checks every relative link in the Markdown files git tracks.

For each `git ls-files '*.md'` file, every link `[text](path#anchor)`,
image `![alt](path)`, reference definition `[id]: path` and HTML
`href="..."` / `src="..."` outside fenced code blocks and inline code is
checked: the path (relative to the file, or to the repository root when it
starts with `/`) must be tracked by git or exist on disk without being
ignored, and a `#anchor` into a Markdown file must name one of its headings
(GitHub's slugs: lower case, punctuation dropped, spaces to hyphens, `-1`,
`-2`, ... for repeats) or an HTML `id`/`name`. Links with a scheme
(`https:`, `mailto:`, ...) are skipped. Prints `file:line: broken link ...`
for each broken one and exits 1 if there is any.

Standard library only: `python3 mk/check-links.py [FILE.md ...]`.
"""

import os
import re
import subprocess
import sys
import unicodedata
from urllib.parse import unquote

FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
# [text](target) and ![alt](target); the text may hold one level of brackets.
INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^()\s]*(?:\([^()\s]*\)[^()\s]*)*)"
    r"(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*\)"
)
REF_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
HTML_ATTR = re.compile(r"""<[a-zA-Z][^>]*?\s(?:href|src)\s*=\s*["']([^"']*)["']""")
HTML_ID = re.compile(r"""<[a-zA-Z][^>]*?\s(?:id|name)\s*=\s*["']([^"']+)["']""")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def git(*args):
    return subprocess.run(
        ["git", *args], check=True, capture_output=True, text=True
    ).stdout


def strip_inline_code(line):
    """Blanks code spans (same length, so columns stay), keeping backticks."""
    return INLINE_CODE.sub(lambda m: m.group(1) + " " * len(m.group(2)) + m.group(1), line)


def prose_lines(text):
    """(line number, line) outside fenced code blocks."""
    fence = None
    for number, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if fence is None:
            if m:
                fence = m.group(1)
                continue
            yield number, line
        elif m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) \
                and not line.strip()[len(m.group(1)):].strip():
            fence = None


def slug(heading):
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    out = []
    for ch in text.strip().lower():
        if ch == " ":
            out.append("-")
        elif ch in "-_" or ch.isalnum() or unicodedata.category(ch).startswith("M"):
            out.append(ch)
    return "".join(out)


def anchors(text):
    """Every anchor a Markdown file defines."""
    seen = {}
    found = set()
    previous = None
    for _, line in prose_lines(text):
        heading = None
        m = ATX.match(line)
        if m:
            heading = m.group(2) or ""
        elif previous is not None and previous.strip() and SETEXT.match(line) \
                and not ATX.match(previous) and not previous.lstrip().startswith(("|", "-", "*", ">")):
            heading = previous.strip()
        if heading is not None:
            base = slug(heading)
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
        for m in HTML_ID.finditer(line):
            found.add(m.group(1))
        previous = line
    return found


def links(text):
    """(line number, target) of every link outside code."""
    for number, line in prose_lines(text):
        bare = strip_inline_code(line)
        for m in INLINE_LINK.finditer(bare):
            yield number, m.group(1)
        m = REF_DEF.match(bare)
        if m:
            yield number, m.group(1)
        for m in HTML_ATTR.finditer(bare):
            yield number, m.group(1)


def main(argv):
    root = git("rev-parse", "--show-toplevel").strip()
    os.chdir(root)
    tracked = set(git("ls-files", "-z").split("\0")) - {""}
    tracked_dirs = {os.path.dirname(p) for p in tracked}
    for d in list(tracked_dirs):
        while d:
            d = os.path.dirname(d)
            tracked_dirs.add(d)
    files = argv or sorted(p for p in tracked if p.endswith(".md"))

    def exists(path):
        if path in tracked or path in tracked_dirs or path == "":
            return True
        if not os.path.exists(path):
            return False
        ignored = subprocess.run(["git", "check-ignore", "-q", path]).returncode == 0
        return not ignored

    cache = {}

    def anchors_of(path):
        if path not in cache:
            with open(path, encoding="utf-8") as f:
                cache[path] = anchors(f.read())
        return cache[path]

    broken = 0
    for md in files:
        with open(md, encoding="utf-8") as f:
            text = f.read()
        for number, target in links(text):
            target = target.strip("<>")
            if not target or SCHEME.match(target):
                continue
            path, _, anchor = target.partition("#")
            path = unquote(path.split("?", 1)[0])
            if path.startswith("/"):
                resolved = os.path.normpath(path.lstrip("/"))
            elif path:
                resolved = os.path.normpath(os.path.join(os.path.dirname(md), path))
            else:
                resolved = md
            if resolved == ".":
                resolved = ""
            if resolved.startswith(".."):
                print(f"{md}:{number}: broken link {target}: leaves the repository")
                broken += 1
                continue
            if not exists(resolved):
                print(f"{md}:{number}: broken link {target}: no file {resolved}")
                broken += 1
                continue
            if anchor and resolved.endswith(".md") and os.path.isfile(resolved):
                if unquote(anchor) not in anchors_of(resolved):
                    print(f"{md}:{number}: broken link {target}: no heading #{anchor} in {resolved}")
                    broken += 1
    if broken:
        print(f"{broken} broken link(s)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
