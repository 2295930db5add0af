#!/usr/bin/env python3
"""Regenerates the output block of README.md's Python example: runs the example (the
```python block of the "## Python" section) with the installed package and writes what it
prints into the ``` block after "prints (…):". With --check, fails instead if the README
differs (the numbers, not the machine-dependent thread count, are what must not drift).

    python scripts/readme_python.py            # rewrite README.md
    python scripts/readme_python.py --check    # exit 1 if README.md is out of date
"""

import contextlib
import io
import os
import re
import sys

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def blocks(text):
    section = text.index("\n## Python\n")
    code = re.compile(r"```python\n(.*?)```\n", re.S).search(text, section)
    out = re.compile(r"prints \([^)]*\):\n\n```\n(.*?)```\n", re.S).search(text, code.end())
    return code, out


def main():
    text = open(README, encoding="utf-8").read()
    code, out = blocks(text)
    printed = io.StringIO()
    # From outside the repository, so that the installed package is the one imported.
    os.chdir("/")
    with contextlib.redirect_stdout(printed):
        exec(compile(code.group(1), "README.md (Python example)", "exec"), {})
    new = printed.getvalue()
    if "--check" in sys.argv[1:]:
        mask = lambda s: re.sub(r"'threads': \d+", "'threads': N", s)  # noqa: E731
        if mask(new) != mask(out.group(1)):
            sys.stderr.write("README.md's Python output is out of date; now it prints:\n" + new)
            return 1
        return 0
    text = text[:out.start(1)] + new + text[out.end(1):]
    with open(README, "w", encoding="utf-8") as f:
        f.write(text)
    sys.stdout.write(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
