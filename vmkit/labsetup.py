"""The kit's JupyterLab settings, written into a Jupyter configuration folder.

``make lab`` (and ``make venv``) run this before JupyterLab starts, so every Lab of the kit's
virtual environment behaves as the course expects:

- **Widgets survive a save.** The widget manager saves the widgets' state in the notebook
  (``@jupyter-widgets/jupyterlab-manager`` setting ``saveState: true``): a notebook reopened
  after its kernel is gone shows each widget as it was last drawn, not "Error displaying
  widget: model not found". Each of the kit's widgets also carries a static picture in its
  output (``vmkit.widgets.static``); this module is also a small Jupyter server extension
  whose pre-save hook drops the widget view of an output whose widget state is not saved
  (``saveState`` turned off, a widget from a kernel that is gone), so that the picture shows
  instead of the error (:func:`vmkit.nbtools.drop_orphan_widget_views`).
- **Students see no instructor tools.** nbgrader comes with the kit's test extra (the homework
  is nbgrader-compatible), and it would put its Validate button, its "Nbgrader" menu (Formgrader,
  Course List, Assignment List) and its "Create assignment" cell toolbar into the student's
  Lab. The student set-up turns nbgrader's Lab extension and its server extensions off;
  ``--instructor`` (``make lab NBGRADER=1``) turns them on again.

What is written, under the configuration folder (default: the virtual environment's own,
``<sys.prefix>/etc/jupyter``; a user's ``~/.jupyter`` still takes precedence):

- ``labconfig/default_setting_overrides.d/vmkit.json``: default values of Lab settings (a
  setting the user changed in Settings → Settings Editor still wins);
- ``labconfig/page_config.d/vmkit.json``: nbgrader's Lab extension disabled or enabled;
- ``jupyter_server_config.json`` (updated, other settings kept): nbgrader's server extensions
  disabled or enabled, and this module's server extension (the pre-save hook) enabled. This
  file, unlike the ``jupyter_server_config.d`` files that nbgrader's installation wrote, takes
  precedence over every ``.d`` file of every level.

Command line::

    python -m vmkit.labsetup                 # student set-up (the default)
    python -m vmkit.labsetup --instructor    # nbgrader's tools on
    python -m vmkit.labsetup --config-dir DIR
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vmkit.nbtools import REVEAL_THEME

__all__ = [
    "LAB_SETTINGS",
    "NBGRADER_LAB_EXTENSION",
    "NBGRADER_SERVER_EXTENSIONS",
    "RISE_PLUGIN",
    "RISE_SETTINGS",
    "default_config_dir",
    "install",
    "main",
    "pre_save_hook",
]

#: jupyterlab-rise's settings (its plugin id)
RISE_PLUGIN = "jupyterlab-rise:plugin"
#: RISE as the exported decks look (vmkit.nbtools: REVEAL_THEME, no transition). The slide
#: size stays RISE's (the whole window): RISE lays out JupyterLab's notebook itself, and a
#: fixed 1280x720 box is scaled by reveal.js but not by that layout (at 1600x900 the slide's
#: left edge was cut off). On a 1280x720 screen the slide is the decks' SLIDE_SIZE; a slide too
#: big for the window is shrunk by the vmkit-slides extension (vmkit.rise).
RISE_SETTINGS = {
    "theme": REVEAL_THEME,
    "transition": "none",
    "slideNumber": "c/t",
    # start on the slide of the cell selected in the notebook (View > Render as slideshow)
    "start_slideshow_at": "selected",
}

#: Lab settings the kit changes from JupyterLab's defaults (plugin id -> settings)
LAB_SETTINGS = {
    # keep the widgets' state in the saved notebook (ipywidgets' own setting, default off)
    "@jupyter-widgets/jupyterlab-manager:plugin": {"saveState": True},
    # no "get notified about Jupyter news?" over the notebook, no update checks: a class
    # (a hub's users, a lab's machines) is not asked
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false",
                                                    "checkForUpdates": False},
    # live slides (jupyterlab-rise): the exported decks' theme and transition;
    # notebooks/rise.css (vmkit.rise) brings the decks' style sheet
    RISE_PLUGIN: RISE_SETTINGS,
}

#: nbgrader's Lab extension (all its plugins: the menu, Validate, Create assignment, ...)
NBGRADER_LAB_EXTENSION = "@jupyter/nbgrader"
#: nbgrader's server extensions, as nbgrader's installation enables them
NBGRADER_SERVER_EXTENSIONS = (
    "nbgrader",
    "nbgrader.server_extensions.formgrader",
    "nbgrader.server_extensions.validate_assignment",
    "nbgrader.server_extensions.assignment_list",
    "nbgrader.server_extensions.course_list",
)

#: this module, as a Jupyter server extension (the pre-save hook)
SERVER_EXTENSION = "vmkit.labsetup"

#: the file name in each ``.d`` folder; sorts after ``nbgrader.json``
FILE_NAME = "vmkit.json"


def default_config_dir() -> Path:
    """The virtual environment's Jupyter configuration folder, ``<sys.prefix>/etc/jupyter``."""
    return Path(sys.prefix) / "etc" / "jupyter"


def _write(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def _merge(path: Path, data: dict) -> Path:
    """Update the JSON file at ``path`` with ``data`` (nested keys), keeping everything else."""
    old = {}
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8") or "{}")
        except ValueError as e:
            raise OSError(f"{path} is not valid JSON ({e}); fix or remove it") from None

    def update(into: dict, new: dict) -> None:
        for key, value in new.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                update(into[key], value)
            else:
                into[key] = value

    update(old, data)
    return _write(path, old)


def install(config_dir=None, instructor: bool = False) -> list[Path]:
    """Write the kit's Lab settings into ``config_dir`` (default :func:`default_config_dir`).

    ``instructor``: nbgrader's Lab and server extensions on (else off). Replaces the files
    this function wrote before; touches nothing else. Returns the paths written.
    """
    root = Path(config_dir) if config_dir is not None else default_config_dir()
    on = bool(instructor)
    return [
        _write(root / "labconfig" / "default_setting_overrides.d" / FILE_NAME, LAB_SETTINGS),
        _write(root / "labconfig" / "page_config.d" / FILE_NAME,
               {"disabledExtensions": {NBGRADER_LAB_EXTENSION: not on}}),
        _merge(root / "jupyter_server_config.json",
               {"ServerApp": {"jpserver_extensions": {
                   **{m: on for m in NBGRADER_SERVER_EXTENSIONS}, SERVER_EXTENSION: True}}}),
    ]


# --- the server extension: a pre-save hook ------------------------------------------------------


def pre_save_hook(model, path=None, contents_manager=None, **kwargs) -> None:
    """JupyterLab saves a notebook: drop the widget views it could not show after reopening
    (their widget state is not in the notebook) where a static picture is there instead.
    Changes ``model["content"]`` in place; other files pass unchanged."""
    if model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
        return
    from vmkit.nbtools import drop_orphan_widget_views

    dropped = drop_orphan_widget_views(model["content"])
    if dropped and contents_manager is not None:
        contents_manager.log.debug("vmkit: %s: %d widget view(s) without saved state "
                                   "stored as their static picture", path, dropped)


def _jupyter_server_extension_points():
    return [{"module": SERVER_EXTENSION}]


def _load_jupyter_server_extension(serverapp) -> None:
    serverapp.contents_manager.register_pre_save_hook(pre_save_hook)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vmkit.labsetup",
        description="Write the kit's JupyterLab settings (widget state saved with the "
                    "notebook; nbgrader's instructor tools off unless --instructor).")
    parser.add_argument("--instructor", action="store_true",
                        help="turn nbgrader's Lab extension and server extensions on")
    parser.add_argument("--config-dir", type=Path, default=None,
                        help=f"Jupyter configuration folder (default: {default_config_dir()})")
    args = parser.parse_args(argv)
    try:
        paths = install(args.config_dir, instructor=args.instructor)
    except OSError as e:
        print(f"vmkit.labsetup: cannot write the Lab settings: {e}", file=sys.stderr)
        return 1
    mode = "instructor (nbgrader on)" if args.instructor else "student (nbgrader off)"
    print(f"JupyterLab set up for the {mode}; saveState on:")
    for path in paths:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
