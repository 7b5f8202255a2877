"""Run every benchmark script in this folder and print their markdown output.

Run: make bench   (or .venv/bin/python benchmarks/run_all.py)
Copy the tables into benchmarks/RESULTS.md together with the machine line.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def main() -> int:
    failed = []
    for script in sorted(HERE.glob("bench_*.py")):
        print(f"\n## {script.stem}\n", flush=True)
        proc = subprocess.run([sys.executable, str(script)], cwd=HERE)
        if proc.returncode:
            failed.append(script.name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
