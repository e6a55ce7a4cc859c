"""Sphinx configuration for the pyg_infdiff documentation (builds offline)."""
import os
import sys

sys.path.insert(0, os.path.abspath(".."))
sys.path.insert(0, os.path.abspath("_ext"))  # api_names: the local extension

project = "pyg_infdiff"
author = "pyg_infdiff developers"
copyright = "2026, pyg_infdiff developers"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_parser",
    "api_names",  # docs/_ext/api_names.py: re-exported constants, short names in docstrings
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "figures/*.py"]
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# Only the options to turn on: autodoc reads any value given here, False included, as "on".
# This default also replaces a directive's own list (":members: a, b" documents every member), so
# the API pages pick members with "automodule" + ":no-members:", then one auto* entry per name.
autodoc_default_options = {"members": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_custom_sections = [("Shapes", "params_style")]
html_theme = "furo" if os.environ.get("PYG_INFDIFF_DOCS_THEME", "furo") == "furo" else "alabaster"
# No network at build time: mathjax is loaded by the reader's browser, nothing is fetched here.
suppress_warnings = ["myst.header"]
