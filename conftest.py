"""pytest setup shared by tests/ and the notebooks that nbval checks (`make test`).

nbval starts each notebook's kernel with this process's environment: give it the environment
that `make notebooks` (vmkit.nbtools.execute_notebook) used to produce the stored outputs.
"""

import os

from vmkit.nbtools import KERNEL_ENV

os.environ.update(KERNEL_ENV)


# --- the order of the files under `make test` ---------------------------------------------------
# pytest-xdist (--dist loadfile --no-loadscope-reorder) hands whole files to the two workers in
# collection order, each worker taking the next file when it is done. Left to itself it would
# order them by their number of tests, which put the longest file (the browser fit check, few
# tests, minutes) last, alone on one worker while the other had nothing left. The longest files
# go first instead (longest processing time first). Figures: seconds a file takes in `make
# test` on two cores (its --durations, summed; last taken from a run on a busy machine, scaled
# to CI's total); a file not listed follows in collection order,
# so an estimate only needs to be right for files that take more than ~20 s.
LONG_FILES = {
    "tests/browser/test_browser_fit.py": 410,   # with notebook 01's and 05's click checks
    "tests/browser/test_lab_classroom.py": 105,
    "tests/course/test_slides.py": 80,    # first of the files that need npm's packages (build/npm)
    "tests/homework/test_nbgrader.py": 75,
    "tests/homework/test_homework_grade.py": 65,
    "tests/homework/test_grade_sandbox.py": 60,
    "tests/isa/test_oracle.py": 55,
    "notebooks/08-comparison.ipynb": 55,
    "tests/course/test_installed.py": 45,
    "tests/vmm/test_many_vms.py": 37,
    "tests/debug/test_debugger.py": 36,
    "notebooks/09-many-vms.ipynb": 33,
    "tests/vmm/test_hw.py": 26,
    "tests/viz/test_exits_view.py": 24,
    "tests/vmm/test_bt_blocks.py": 20,
    "tests/vmm/test_pv.py": 20,
    "tests/machine/test_blocks.py": 20,
    "tests/vmm/test_compare.py": 19,
    "tests/vmm/test_bt.py": 19,
    "tests/browser/test_browser.py": 18,
    "notebooks/05-hardware-assist.ipynb": 18,
    "notebooks/04-binary-translation.ipynb": 16,
    "notebooks/07-paravirtualization.ipynb": 14,
}


def pytest_collection_modifyitems(session, config, items):
    """The files of LONG_FILES first, longest first; a file's tests stay together and in
    order (the sort is stable)."""
    root = config.rootpath

    def seconds(item) -> int:
        try:
            return LONG_FILES.get(item.path.relative_to(root).as_posix(), 0)
        except ValueError:
            return 0

    items.sort(key=lambda item: -seconds(item))
