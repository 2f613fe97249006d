"""The README and the docs pages: their Python blocks run as pasted, their links resolve."""

import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = [os.path.join(ROOT, "README.md"), *sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))]


def python_blocks(path: str) -> list[str]:
  with open(path, encoding="utf-8") as fh:
    text = fh.read()
  return [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]


@pytest.mark.parametrize("index", range(len(python_blocks(os.path.join(ROOT, "README.md")))))
def test_readme_python_blocks_run_as_pasted(index, capsys):
  exec(python_blocks(os.path.join(ROOT, "README.md"))[index], {})  # pylint: disable=exec-used
  assert capsys.readouterr().out.strip()  # each block prints what it shows


def test_readme_own_model_block_certifies():
  """The own-model block's witness beats the constant baseline: it prints ``certified``."""
  block = next(b for b in python_blocks(os.path.join(ROOT, "README.md"))
               if "fit_teacher" in b)
  ns: dict = {}
  exec(block, ns)  # pylint: disable=exec-used
  from certvae_jax import certificate  # pylint: disable=import-outside-toplevel
  assert certificate.report(ns["t"], ns["logits"], from_logits=True).certified


# docs/extending.md's blocks need a config and a workdir: tests/test_extending.py runs them.
DOC_BLOCKS = [(os.path.relpath(p, ROOT), i) for p in PAGES[1:]
              if not p.endswith("extending.md") for i in range(len(python_blocks(p)))]


@pytest.mark.parametrize("page, index", DOC_BLOCKS)
def test_docs_python_blocks_run_as_pasted(page, index):
  exec(python_blocks(os.path.join(ROOT, page))[index], {})  # pylint: disable=exec-used


@pytest.mark.parametrize("page", PAGES, ids=lambda p: os.path.relpath(p, ROOT))
def test_relative_links_resolve(page):
  with open(page, encoding="utf-8") as fh:
    text = fh.read()
  missing = []
  for target in re.findall(r"\]\(([^)\s]+)\)", text):
    if re.match(r"[a-z]+://", target) or target.startswith("#"):
      continue
    path = target.split("#", 1)[0]
    if not os.path.exists(os.path.join(os.path.dirname(page), path)):
      missing.append(target)
  assert not missing, missing


def _api_packages() -> list[str]:
  with open(os.path.join(ROOT, "docs", "api.md"), encoding="utf-8") as fh:
    return re.findall(r"^   (certvae_jax[\w.]*)$", fh.read(), re.M)


def test_every_public_name_has_a_documented_home_in_the_api_reference():
  """The API reference (autosummary, recursive over docs/api.md's modules) documents each
  public function and class in its home module: that home must be under a listed module,
  and the object must have a docstring."""
  import importlib  # pylint: disable=import-outside-toplevel
  listed = _api_packages()
  assert "certvae_jax.certificate" in listed
  undocumented, homeless = [], []
  for name in listed:
    module = importlib.import_module(name)
    for attr in getattr(module, "__all__", ()):
      obj = getattr(module, attr)
      if not (callable(obj) or isinstance(obj, type)) or not hasattr(obj, "__module__"):
        continue  # constants are documented by the module that defines them
      home = obj.__module__ or ""
      if not home.startswith("certvae_jax"):
        continue
      if not any(home == p or home.startswith(p + ".") for p in listed):
        homeless.append(f"{name}.{attr} ({home})")
      if not (obj.__doc__ or "").strip():
        undocumented.append(f"{name}.{attr}")
  assert not homeless, homeless
  assert not undocumented, undocumented
