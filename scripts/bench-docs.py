#!/usr/bin/env python3
"""Run chorus's benchmarks and splice their tables into docs/benchmarks.md.

Each benchmark prints its markdown section between marker lines
`<!-- NAME:begin -->` and `<!-- NAME:end -->` on standard output. This
script runs them, takes every such block from their output and replaces the
block of the same name in docs/benchmarks.md (appending new ones), so the
tables in the docs are always the benchmarks' own output.

    python3 scripts/bench-docs.py                 # every benchmark
    python3 scripts/bench-docs.py raft-core log   # some of them
    python3 scripts/bench-docs.py peers           # chorus against etcd (~20 min)
"""

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
BENCHES = {
    "raft-core": ["cargo", "bench", "-p", "chorus-raft", "--bench", "throughput"],
    "log": ["cargo", "bench", "-p", "chorus-log", "--bench", "log", "--", "--seconds", "10", "--recovery-mib", "1024"],
    "membership": ["cargo", "bench", "-p", "chorus-membership", "--bench", "convergence"],
    "node": ["cargo", "run", "--release", "-p", "chorus-bench", "--bin", "node-bench"],
    # chorus against etcd: peers-bench runs the chorus binary beside it, so
    # that is built first.
    "peers": ["sh", "-c", "cargo build --release -p chorus-server && exec cargo run --release -p chorus-bench --bin peers-bench"],
    "durable": ["cargo", "bench", "-p", "chorus-durable", "--bench", "durable"],
}
BLOCK = re.compile(r"<!-- ([a-z0-9-]+):begin -->\n.*?<!-- \1:end -->", re.S)


def main() -> int:
    names = sys.argv[1:] or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHES)}", file=sys.stderr)
        return 2
    doc = DOC.read_text() if DOC.exists() else "# Benchmarks\n\nWritten by `scripts/bench-docs.py`; do not edit the tables by hand.\n"
    for name in names:
        print(f"== {name}: {' '.join(BENCHES[name])}", file=sys.stderr)
        run = subprocess.run(BENCHES[name], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        sys.stdout.write(run.stdout)
        if run.returncode != 0:
            print(f"{name} failed with exit code {run.returncode}", file=sys.stderr)
            return run.returncode
        blocks = [m for m in BLOCK.finditer(run.stdout)]
        if not blocks:
            print(f"{name} printed no <!-- ...:begin --> block", file=sys.stderr)
            return 1
        for block in blocks:
            block_name = block.group(1)
            pattern = re.compile(rf"<!-- {re.escape(block_name)}:begin -->\n.*?<!-- {re.escape(block_name)}:end -->", re.S)
            if pattern.search(doc):
                doc = pattern.sub(lambda _: block.group(0), doc)
            else:
                doc = doc.rstrip() + "\n\n" + block.group(0) + "\n"
        # Written after each benchmark: a later one may read an earlier
        # one's block (peers-bench quotes node-bench's in its gates).
        DOC.write_text(doc)
        print(f"wrote {DOC}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
