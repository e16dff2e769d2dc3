"""Sphinx configuration of the mne-piunet documentation.

``make html`` runs the tutorials with sphinx-gallery and renders their
figures; ``make html-noplot`` only renders their text. Everything works
offline: intersphinx inventories that cannot be fetched only leave their
cross-references unresolved (a warning, not an error).
"""

# License: BSD-3-Clause

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import mne_piunet

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

project = "mne-piunet"
author = "mne-piunet developers"
copyright = f"{date.today().year}, {author}"
release = mne_piunet.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
templates_path = ["_templates"]
# docs/benchmark/ holds the committed benchmark run; benchmark.md includes it.
exclude_patterns = [
    "_build",
    "benchmark/*",
    "auto_tutorials/*.ipynb",
    "auto_tutorials/*.py",
    "**.codeobj.json",
]
root_doc = "index"
default_role = "py:obj"

# -- API reference -----------------------------------------------------------
autosummary_generate = True
autodoc_typehints = "none"  # numpydoc's Parameters sections give the types
autodoc_member_order = "bysource"
numpydoc_show_class_members = False  # the class template lists the members
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
# Missing sections: no docstring, undocumented parameters, no Returns or Yields.
numpydoc_validation_checks = {"GL08", "PR01", "RT01", "YD01"}
numpydoc_validation_exclude = {
    r"\.__init__$",
    r"\.forward$",  # torch modules: forward's contract is the class docstring's
    r"\.extra_repr$",
}

# -- Cross-references (offline-safe) -----------------------------------------
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "mne": ("https://mne.tools/stable", None),
    "numpy": ("https://numpy.org/doc/stable", None),
    "scipy": ("https://docs.scipy.org/doc/scipy", None),
    "matplotlib": ("https://matplotlib.org/stable", None),
    "torch": ("https://docs.pytorch.org/docs/stable", None),
}
intersphinx_timeout = 5  # offline, fail fast; a failed fetch is a warning only
if os.environ.get("MNE_PIUNET_DOCS_OFFLINE") == "1":
    intersphinx_mapping = {}

# -- Markdown (the model card) -----------------------------------------------
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]  # included Markdown files start below level 1 in places


# -- Tutorials ---------------------------------------------------------------
def _real_data_available() -> bool:
    """Whether the real-data tutorial has data (else it exits, which sphinx-gallery cannot render)."""
    import mne

    sample = mne.datasets.sample.data_path(download=False)
    if sample and Path(sample, "MEG", "sample", "sample_audvis-ave.fif").is_file():
        return True
    test = Path("shared", "data", "mne-test-evoked", "test-ave.fif.gz")
    return any((p / test).is_file() for p in (ROOT, *ROOT.parents))


sphinx_gallery_conf = {
    "examples_dirs": [str(ROOT / "tutorials")],
    "gallery_dirs": ["auto_tutorials"],
    # run every tutorial (``make html-noplot`` runs none)
    "filename_pattern": r"/plot_" if _real_data_available() else r"/plot_0[134]",
    "within_subsection_order": "FileNameSortKey",
    "image_scrapers": ("matplotlib",),
    "matplotlib_animations": False,
    "doc_module": ("mne_piunet",),
    "reference_url": {"mne_piunet": None},
    "backreferences_dir": "generated/backreferences",
    "download_all_examples": False,
    "remove_config_comments": True,
    "show_memory": False,
}

# -- HTML --------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"mne-piunet {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
html_static_path: list[str] = []


# -- The command line page ---------------------------------------------------
def _write_cli_help(app) -> None:
    """Write every subcommand's ``--help`` to generated/cli.txt (always in step with cli.py)."""
    from mne_piunet.cli import build_parser

    os.environ["COLUMNS"] = "100"  # argparse wraps at the terminal width
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    text = ["$ mne-piunet --help", parser.format_help()]
    for name, sub in commands.items():
        text += [f"$ mne-piunet {name} --help", sub.format_help()]
    out = HERE / "generated" / "cli.txt"
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(text))


def setup(app) -> None:
    app.connect("builder-inited", _write_cli_help)
