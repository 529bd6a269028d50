"""Where the course material is: a source checkout or the installed kit.

The kit runs two ways. From a **checkout** (``git clone`` and ``make``), the material lives in
the repository: ``notebooks/``, ``exercises/``, ``solutions/``, ``share/slides/``. From an
**installed** wheel (a hub's users' environment, ``pip install vmkit-*.whl``), the wheel
carries a copy of what a student and the slide builder need in ``vmkit/_course/``
(``notebooks/``, ``exercises/``, ``slides/``, ``site/``, ``labextension/``, ``docs/``: the
setup script puts it there), and nothing
of the instructor's: ``solutions/`` stays in the instructor's checkout and is given to
``vmkit grade --source`` and ``vmkit release --source``.

Each function here answers from the checkout when the kit runs from one, else from the
installed copy, and raises :class:`MaterialMissing` (one line: what is missing and where it
comes from) when neither has it. Nothing here points into site-packages for writing: caches
go to :func:`cache_dir`.
"""

from __future__ import annotations

import os
from pathlib import Path

from vmkit.errors import VmkitError

__all__ = ["MaterialMissing", "PACKAGE_DIR", "INSTALLED_DIR", "checkout_root", "notebooks_dir",
           "exercises_dir", "solutions_dir", "slides_share", "site_share", "labextension_share",
           "docs_dir", "cache_dir", "lecture_notebooks",
           "exercise_notebooks", "copy_course", "pull_link"]

#: the ``vmkit`` package folder
PACKAGE_DIR = Path(__file__).resolve().parent
#: the course material a wheel carries (absent in a checkout)
INSTALLED_DIR = PACKAGE_DIR / "_course"


class MaterialMissing(VmkitError):
    """A piece of course material is neither in a checkout nor in the installed kit."""


def checkout_root() -> Path | None:
    """The source checkout this ``vmkit`` package was imported from, or None (installed)."""
    root = PACKAGE_DIR.parent
    if (root / "pyproject.toml").is_file() and (root / "notebooks").is_dir():
        return root
    return None


def _find(checkout_part: str, installed_part: str, what: str) -> Path:
    root = checkout_root()
    if root is not None and (root / checkout_part).is_dir():
        return root / checkout_part
    if (INSTALLED_DIR / installed_part).is_dir():
        return INSTALLED_DIR / installed_part
    raise MaterialMissing(f"{what} not found: neither a vmkit checkout ({checkout_part}/) nor "
                          f"an installed kit ({INSTALLED_DIR / installed_part}); reinstall "
                          "vmkit from its wheel or run from a checkout")


def notebooks_dir() -> Path:
    """The lecture notebooks' folder (``notebooks/NN-*.ipynb``)."""
    return _find("notebooks", "notebooks", "the lecture notebooks")


def exercises_dir() -> Path:
    """The released homework's folder (``exercises/*.ipynb``)."""
    return _find("exercises", "exercises", "the exercises")


def slides_share() -> Path:
    """The slide template and its pinned assets' recipe (``package.json`` and lock file)."""
    return _find("share/slides", "slides", "the slide template")


def site_share() -> Path:
    """The course website's page template and its own CSS and scripts."""
    return _find("share/site", "site", "the course website's template")


def labextension_share() -> Path:
    """The JupyterLab extensions the kit ships as plain files (live slides' shrink-to-fit)."""
    return _find("share/labextension", "labextension", "the kit's JupyterLab extension")


def docs_dir() -> Path:
    """The documentation pages (``docs/*.md``, the reference card among them)."""
    return _find("docs", "docs", "the documentation")


def solutions_dir() -> Path | None:
    """The instructor's solutions: the checkout's ``solutions/``, or None (an installed kit
    never carries them)."""
    root = checkout_root()
    if root is not None and (root / "solutions").is_dir():
        return root / "solutions"
    return None


def cache_dir() -> Path:
    """Where the kit keeps what it downloads and builds (the slides' npm packages): the
    checkout's ``build/``, else ``$XDG_CACHE_HOME/vmkit`` (default ``~/.cache/vmkit``)."""
    root = checkout_root()
    if root is not None:
        return root / "build"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vmkit"


def lecture_notebooks(folder=None) -> list[Path]:
    """The lecture notebooks, ``NN-*.ipynb`` sorted (default: :func:`notebooks_dir`)."""
    folder = Path(folder) if folder is not None else notebooks_dir()
    return sorted(p for p in folder.glob("[0-9][0-9]-*.ipynb") if p.is_file())


def exercise_notebooks(folder=None) -> list[Path]:
    """The released exercises, ``*.ipynb`` sorted (default: :func:`exercises_dir`)."""
    folder = Path(folder) if folder is not None else exercises_dir()
    return sorted(p for p in folder.glob("*.ipynb") if p.is_file())


def copy_course(dest, force: bool = False) -> tuple[list[Path], list[Path]]:
    """Copy the lecture notebooks into ``dest/notebooks/`` and the exercises (with their
    README) into ``dest/exercises/``; returns (files written, files kept). A file already in
    ``dest`` is kept (a student's work is never overwritten) unless ``force``."""
    import shutil

    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise MaterialMissing(f"{dest}: not a folder")
    plan = [(p, dest / "notebooks" / p.name) for p in lecture_notebooks()]
    rise_css = notebooks_dir() / "rise.css"      # the live slides' style sheet
    if rise_css.is_file():
        plan.append((rise_css, dest / "notebooks" / rise_css.name))
    exercises = exercises_dir()
    plan += [(p, dest / "exercises" / p.name) for p in exercise_notebooks(exercises)]
    if (exercises / "README.md").is_file():
        plan.append((exercises / "README.md", dest / "exercises" / "README.md"))
    written, kept = [], []
    for src, out in plan:
        if out.exists() and not force:
            kept.append(out)
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, out)
        written.append(out)
    return written, kept


def pull_link(hub: str, repo: str, path: str = "notebooks", branch: str = "main") -> str:
    """The nbgitpuller link that hands a student ``path`` of the course repository ``repo``
    on the JupyterHub at ``hub``: the first visit logs in, starts the student's server, clones
    the repository into their home (``~/<repository name>``; later visits pull, keeping their
    changes) and opens ``path`` in JupyterLab."""
    from urllib.parse import urlencode, urlsplit

    parts = urlsplit(hub)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise MaterialMissing(f"{hub!r}: the hub's address must start with https:// "
                              "(or http://)")
    name = repo.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    name = name[:-4] if name.endswith(".git") else name
    if not name:
        raise MaterialMissing(f"{repo!r}: not a git repository's address or path")
    path = path.strip("/")
    query = urlencode({"repo": repo, "branch": branch,
                       "urlpath": f"lab/tree/{name}/{path}" if path else f"lab/tree/{name}"})
    return f"{hub.rstrip('/')}/hub/user-redirect/git-pull?{query}"
