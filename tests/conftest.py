"""pytest setup for tests/: the shared helpers in tests/helpers/ (browser_util, equivalence,
machine_util, gas, asm_corpus, oracle_gen) are imported as top-level modules by the tests of
every folder."""

import sys
from pathlib import Path

HELPERS = str(Path(__file__).resolve().parent / "helpers")
if HELPERS not in sys.path:
    sys.path.insert(0, HELPERS)
