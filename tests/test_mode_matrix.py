"""Every mode a shipped config offers, end to end, on both model families (MLP and conv).

Each case runs one phase at smoke size in a workdir whose warm-up and teacher are shared
by every case of its family, then checks that the summary was written and that its
certificate is ``G_tau = I_T - tau - L_TS`` of the rows saved in ``predictions.npz``,
recomputed in float64 NumPy. The conv family reads digits as 8x8x1 images through the
npz loader, so the conv encoder *and* its fast transposed-conv decoder run in every mode
(the rescue diagnostics' forward-mode derivative among them).
"""

import json
import os

import numpy as np
import pytest
from sklearn.datasets import load_digits

from certvae_jax import train
from configs import digits_simplex
from tests.conftest import copy_seed, tiny_config

FAMILIES = ("mlp", "conv")


def _digit_images(path: str) -> str:
  d = load_digits()
  x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # (N, 8, 8, 1)
  np.savez(path, x=x, y=d.target)
  return f"npz:{path}"


def _shrink(c, family: str, images: str) -> None:
  c.warmup.steps = c.train.steps = 20
  c.train.prefit_steps = 10
  c.train.log_every = c.train.checkpoint_every = 10
  c.eval.every = 20
  c.eval.bootstrap_resamples = 100
  c.eval.posthoc_max_iter = 50
  c.guard.every = 5
  c.train.progress = False
  if family == "conv":
    c.data.source = images
    c.model.encoder = "conv"
    c.model.conv_channels = (4, 8)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
  return _digit_images(str(tmp_path_factory.mktemp("data") / "digit_images.npz"))


def paper1_config(family: str, images: str):
  c = tiny_config()
  _shrink(c, family, images)
  return c


def paper2_config(family: str, images: str):
  c = digits_simplex.get_config("smoke")
  _shrink(c, family, images)
  return c


@pytest.fixture(scope="module", params=FAMILIES)
def paper1_seed(request, images, tmp_path_factory):
  """``(family, workdir)`` with warm-up and teacher done, shared by the family's cases."""
  wd = str(tmp_path_factory.mktemp(f"paper1_{request.param}"))
  train.Runner(paper1_config(request.param, images), wd).ensure_teacher()
  return request.param, wd


@pytest.fixture(scope="module", params=FAMILIES)
def paper2_seed(request, images, tmp_path_factory):
  wd = str(tmp_path_factory.mktemp(f"paper2_{request.param}"))
  train.Runner(paper2_config(request.param, images), wd).ensure_teacher()
  return request.param, wd


def read_summary(workdir: str, phase: str) -> dict:
  with open(os.path.join(workdir, phase, "summary.json")) as fh:
    return json.load(fh)


def check_summary(workdir: str, phase: str, summary: dict) -> None:
  """The summary is on disk and its certificate is the closed form of the saved rows."""
  assert read_summary(workdir, phase)["step"] == summary["step"]
  saved = np.load(os.path.join(workdir, phase, "predictions.npz"))
  for split in ("train", "test"):
    t = saved[f"{split}_teacher"].astype(np.float64)
    s = saved[f"{split}_witness"].astype(np.float64)
    tbar = t.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
      teacher_mi = np.mean(np.sum(np.where(t > 0, t * np.log(t / tbar), 0.0), axis=1))
      alignment = np.mean(np.sum(np.where(t > 0, t * np.log(t / s), 0.0), axis=1))
    m = summary[split]
    assert m["margin"] == pytest.approx(m["teacher_mi"] - m["tau"] - m["alignment"], abs=1e-6)
    assert m["teacher_mi"] == pytest.approx(teacher_mi, abs=1e-5)
    assert m["alignment"] == pytest.approx(alignment, abs=1e-4)
    assert m["margin"] == pytest.approx(teacher_mi - m["tau"] - alignment, abs=1e-4)


# (case id, mode, target, config overrides, phase directory)
PAPER1_CASES = [
    ("warmup", "warmup", "live", {}, "warmup"),
    ("full", "full", "live", {}, "full"),
    ("noalign", "noalign", "live", {}, "noalign"),
    ("rescue", "rescue", "live", {}, "rescue"),
    ("full_fixed", "full", "fixed", {}, "full_fixed"),
    ("noalign_fixed", "noalign", "fixed", {}, "noalign_fixed"),
    ("rescue_fixed", "rescue", "fixed", {}, "rescue_fixed"),
    ("vae", "vae", "live", {}, "vae"),
    ("vanilla_vae", "vanilla_vae", "live", {}, "vanilla_vae"),
    ("beta_vae", "beta_vae", "live", {}, "beta_vae_0.5"),
    ("kl_anneal", "kl_anneal", "live", {}, "kl_anneal"),
    ("free_bits", "free_bits", "live", {}, "free_bits"),
    ("vq_vae", "vq_vae", "live", {}, "vq_vae"),
    ("gmvae", "gmvae", "live", {}, "gmvae"),
    ("guard_raise", "full", "live", {"guard.policy": "raise"}, "full_guard_raise"),
    ("guard_rollback", "full", "live", {"guard.policy": "rollback"}, "full_guard_rollback"),
    ("guard_barrier", "full", "live", {"guard.policy": "barrier"}, "full_guard_barrier"),
    ("student_first_rescue", "rescue", "live", {"guard.student_first_steps": 5},
     "rescue_sf5"),
]


def _override(c, overrides: dict) -> None:
  for key, value in overrides.items():
    section, field = key.split(".")
    c[section][field] = value


@pytest.mark.parametrize("case", PAPER1_CASES, ids=[c[0] for c in PAPER1_CASES])
def test_every_paper1_mode_runs_and_certifies_on_both_families(paper1_seed, images, case,
                                                                  tmp_path):
  family, seed_dir = paper1_seed
  _, mode, target, overrides, phase = case
  wd = copy_seed(seed_dir, str(tmp_path / "w"))
  c = paper1_config(family, images)
  _override(c, overrides)
  runner = train.Runner(c, wd)
  if mode == "rescue":
    runner.run_mode("noalign", target)
  summary = runner.run_mode(mode, target)
  assert summary["step"] == (2 if mode == "rescue" else 1) * 20
  check_summary(wd, phase, summary)
  if mode == "rescue":
    diag = summary["rescue_diagnostics"]
    assert np.isfinite(diag["response_correlation"]) and diag["align_grad_norm"] > 0
  if "guard.policy" in overrides:
    assert summary["guard"]["policy"] == overrides["guard.policy"]


@pytest.mark.parametrize("mode", ["vae", "full", "rst_prefit", "rst_alpha_prefit", "escape"])
def test_every_paper2_mode_runs_and_certifies_on_both_families(paper2_seed, images, mode,
                                                                 tmp_path):
  family, seed_dir = paper2_seed
  wd = copy_seed(seed_dir, str(tmp_path / "w"))
  runner = train.Runner(paper2_config(family, images), wd)
  if mode == "escape":
    runner.run_mode("vae")
  summary = runner.run_mode(mode)
  check_summary(wd, mode, summary)
  prefit = {"rst_prefit": "prefit", "rst_alpha_prefit": "prefit_alpha"}.get(mode)
  if prefit:
    check_summary(wd, prefit, read_summary(wd, prefit))
  if mode == "escape":
    assert [p["step"] for p in summary["escape_trajectory"]] == [20, 40]
