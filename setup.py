"""Build hook: the wheel carries the course material an installed kit needs.

Everything else is in pyproject.toml. ``build_py`` copies into ``vmkit/_course/`` of the build
(never into the source tree), where :mod:`vmkit.resources` finds them in an installed kit:

- ``notebooks/NN-*.ipynb``  -> ``_course/notebooks/``  (the lecture notebooks)
- ``exercises/``            -> ``_course/exercises/``  (released homework; never ``solutions/``)
- ``share/slides/``         -> ``_course/slides/``     (the slide template, package.json and
                                                       the lock file that pins its assets)
- ``notebooks/rise.css``    -> ``_course/notebooks/``  (the live slides' style sheet)
- ``share/site/``           -> ``_course/site/``       (the course website's template)
- ``share/labextension/``   -> ``_course/labextension/`` (live slides' shrink-to-fit)
- ``docs/*.md``             -> ``_course/docs/``       (the website's documentation pages)

The sdist carries the same folders (MANIFEST.in), so a wheel built from it is the same. An
editable install (``pip install -e .``) copies nothing: the checkout is found directly.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
#: (folder of the checkout, glob, folder under vmkit/_course)
COURSE = [
    ("notebooks", "[0-9][0-9]-*.ipynb", "notebooks"),
    ("exercises", "*.ipynb", "exercises"),
    ("exercises", "README.md", "exercises"),
    ("share/slides", "**/*", "slides"),
    ("notebooks", "rise.css", "notebooks"),
    ("share/site", "**/*", "site"),
    ("share/labextension", "**/*", "labextension"),
    ("docs", "*.md", "docs"),
]


class BuildWithCourse(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        dest = Path(self.build_lib) / "vmkit" / "_course"
        for folder, pattern, target in COURSE:
            src = HERE / folder
            files = [p for p in src.glob(pattern) if p.is_file()]
            if not files:
                raise SystemExit(f"setup.py: no {folder}/{pattern}: the course material is "
                                 "missing from this source tree")
            for path in files:
                if "node_modules" in path.parts:
                    continue
                out = dest / target / path.relative_to(src)
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, out)


setup(cmdclass={"build_py": BuildWithCourse})
