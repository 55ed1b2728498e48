"""Replace the table between the summarize markers in README.md with ``summarize.py``'s output.

    python benchmarks/update_readme.py
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import summarize

README = Path(__file__).resolve().parents[1] / "README.md"


def main() -> None:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        summarize.main()
    text = README.read_text()
    new = re.sub(r"(<!-- summarize:start -->\n).*?(<!-- summarize:end -->)", lambda m: m.group(1) + buf.getvalue() + m.group(2),
                 text, flags=re.S)
    README.write_text(new)
    print(f"updated {README} ({len(buf.getvalue().splitlines())} table lines)")


if __name__ == "__main__":
    main()
