"""Does every guest under native do what the golden file recorded (tests/golden/native.json)?
See tests/golden/__init__.py; regenerate with `python -m tests.golden.regen native`."""

from golden import golden_tests

test_case, test_file_matches_the_recorder, test_restore_brings_back_what_the_snapshot_saw = \
    golden_tests("native")


def test_the_regeneration_command_runs():
    """`python -m tests.golden.regen --help`, from the repository's root, as the README says."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-m", "tests.golden.regen", "--help"], cwd=root,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "tests/golden/<monitor>.json" in r.stdout
    assert "python -m tests.golden.regen" in (root / "README.md").read_text(encoding="utf-8")
