"""Local scoring speed: our cross-encoder scorer against sentence-transformers and FlagEmbedding.

The benchmark itself lives in the ``benchmarks`` package; ``--help`` describes it.

  python scripts/bench.py --quick        # about a minute: a smoke run
  python scripts/bench.py                # the numbers (about 15 minutes on 2 CPU cores)
"""

from __future__ import annotations

import sys

from benchmarks.suite import main

if __name__ == "__main__":
    sys.exit(main())
