# The notebooks here are the homework tests' fixtures (an instructor's copy to grade against),
# not notebooks whose outputs nbval should check.
collect_ignore_glob = ["*.ipynb"]
