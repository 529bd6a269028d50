"""pytest setup shared by tests/ and the notebooks that nbval checks (`make test`).

nbval starts each notebook's kernel with this process's environment: give it the environment
that `make notebooks` (vmkit.nbtools.execute_notebook) used to produce the stored outputs.
"""

import os

from vmkit.nbtools import KERNEL_ENV

os.environ.update(KERNEL_ENV)
