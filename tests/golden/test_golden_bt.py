"""Does every guest under bt do what the golden file recorded (tests/golden/bt.json)?
See tests/golden/__init__.py; regenerate with `python -m tests.golden.regen bt`."""

from golden import golden_tests

test_case, test_file_matches_the_recorder, test_restore_brings_back_what_the_snapshot_saw = \
    golden_tests("bt")
