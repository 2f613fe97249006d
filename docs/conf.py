"""Sphinx configuration: MyST pages and an autosummary API reference (as optax, orbax and flax
build theirs). Build: ``sphinx-build -W --keep-going -b html docs docs/_build/html``."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import certvae_jax  # noqa: E402

project = "certvae_jax"
release = version = certvae_jax.__version__
extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "results/README.md"]
myst_heading_anchors = 3
autosummary_generate = True
autosummary_imported_members = False
# Each name is documented once, in its home module: a package face's re-exports are not.
autodoc_default_options = {"members": True, "ignore-module-all": True}
# The measured tables in results/ are data written by the commands, without titles.
suppress_warnings = ["toc.no_title"]
autodoc_typehints = "signature"
autodoc_member_order = "bysource"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# "Attributes:" sections as fields: a NamedTuple's fields are members autodoc documents too.
napoleon_use_ivar = True
html_theme = "alabaster"
html_title = f"certvae_jax {release}"
