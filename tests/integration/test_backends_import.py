"""Importing the backends package loads no model library (torch and the rest load with a local model
only); a fresh interpreter, since this test session has long imported them."""

from __future__ import annotations

import subprocess
import sys

from testkit.fleet import REPO


def test_importing_the_package_loads_no_model_library() -> None:
    code = (
        "import sys, worker.backends\n"
        "heavy = ('torch', 'sentence_transformers', 'FlagEmbedding', 'transformers')\n"
        "heavy = [name for name in heavy if name in sys.modules]\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
