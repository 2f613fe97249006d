"""End to end on digits (smoke configs): every mode, exact restarts, rescue, bad input."""

import json
import os

import jax
import numpy as np
import pytest

from certvae_jax import certificate, distributed, train
from certvae_jax.training import modes
from certvae_jax.training.checkpoint import Checkpointer
from tests.conftest import tiny_config
from tests.launcher import ROOT, launch

SUMMARY_SPLIT_KEYS = {"teacher_mi", "alignment", "bare_margin", "margin", "tau", "student_mi",
                      "certified", "psnr", "active_units", "kl", "probe_accuracy",
                      "tau_sensitivity", "mi_estimate", "mean_sq_norm_mu", "probe_fit_rows"}
RECON_KEYS = {"recon_alignment", "recon_margin", "witness_recon_kl",  # with a teacher
              "reconstruction_check_rows", "posthoc_margin", "posthoc_student_mi", "posthoc_certified",
              "posthoc_fit_rows"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """One seed's workdir with every mode run once (live and fixed targets)."""
  wd = str(tmp_path_factory.mktemp("seed0"))
  runner = train.Runner(tiny_config(), wd)
  for target in ("live", "fixed"):
    for mode in ("full", "noalign", "rescue"):
      runner.run_mode(mode, target)
  return wd


@pytest.mark.parametrize("phase", ["warmup", "full", "noalign", "rescue", "full_fixed",
                                   "noalign_fixed", "rescue_fixed"])
def test_every_mode_writes_summary_with_documented_keys(workdir, phase):
  with open(os.path.join(workdir, phase, "summary.json")) as fh:
    s = json.load(fh)
  assert {"mode", "step", "seed", "dataset", "stress_case", "train", "test"} <= set(s)
  assert s["dataset"] == "digits" and s["seed"] == 0
  assert (s["collapse"] is None) == (phase == "warmup")
  for split in ("train", "test"):
    assert SUMMARY_SPLIT_KEYS <= set(s[split])
    assert (RECON_KEYS <= set(s[split])) == (phase != "warmup")
  with open(os.path.join(workdir, phase, "metrics.jsonl")) as fh:
    rows = [json.loads(line) for line in fh]
  assert [r["step"] for r in rows] == sorted({r["step"] for r in rows})
  assert rows[-1]["step"] == s["step"]
  timing = s["timing"]
  assert timing["steps"] == 40 and timing["platform"] == jax.default_backend()
  assert timing["devices"] == jax.device_count()
  assert timing["steps_per_s"] > 0 and timing["examples_per_s"] == pytest.approx(
      timing["steps_per_s"] * 128)
  assert 0 <= timing["eval_seconds"] + timing["checkpoint_seconds"] < timing["seconds"]
  if jax.default_backend() == "cpu":
    assert timing["peak_device_memory_bytes"] is None  # the CPU backend reports none
  else:  # benchmarks/gpu_check.py runs this file on an accelerator
    assert timing["peak_device_memory_bytes"] > 0


@pytest.mark.parametrize("target", ["live", "fixed"])
def test_host_made_batches_give_the_same_run_as_device_resident_data(workdir, tmp_path, target):
  """``data.on_device`` moves the same batches: identical parameters and summaries."""
  c = tiny_config()
  c.data.on_device = False
  host = train.train(c, "full", str(tmp_path), target=target)
  phase = "full" if target == "live" else "full_fixed"
  with open(os.path.join(workdir, phase, "summary.json")) as fh:
    device = json.load(fh)
  assert host["train"] == device["train"] and host["test"] == device["test"]
  a, _ = _params(os.path.join(workdir, phase))
  b, _ = _params(os.path.join(str(tmp_path), phase))
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("phase", ["full", "noalign", "rescue_fixed"])
def test_summary_certificate_equals_report_on_saved_predictions(workdir, phase):
  with open(os.path.join(workdir, phase, "summary.json")) as fh:
    s = json.load(fh)
  pred = np.load(os.path.join(workdir, phase, "predictions.npz"))
  for split in ("train", "test"):
    r = certificate.report(pred[f"{split}_teacher"], pred[f"{split}_witness"], s[split]["tau"])
    for key in ("teacher_mi", "alignment", "margin", "student_mi"):
      assert s[split][key] == pytest.approx(float(getattr(r, key)), abs=2e-5), (split, key)
    assert s[split]["certified"] == bool(r.certified)
    assert s[split]["n"] == len(pred[f"{split}_teacher"])


@pytest.mark.parametrize("phase", ["full", "noalign_fixed"])
def test_test_split_carries_population_bounds_of_its_saved_predictions(workdir, phase):
  with open(os.path.join(workdir, phase, "summary.json")) as fh:
    s = json.load(fh)
  pred = np.load(os.path.join(workdir, phase, "predictions.npz"))
  c = tiny_config()
  b = certificate.margin_bounds(pred["test_teacher"], pred["test_witness"], tau=c.eval.tau,
                                delta=c.eval.delta, num_resamples=c.eval.bootstrap_resamples,
                                key=jax.random.PRNGKey(12345))
  assert s["test"]["bounds"] == pytest.approx(b.to_dict())
  assert s["test"]["bounds"]["sample"] == pytest.approx(s["test"]["margin"], abs=2e-5)
  assert "bounds" not in s["train"]  # the training rows trained the witness: no i.i.d. bound
  assert "population at" in train.summary_line(s["test"])
  assert "population" not in train.summary_line(s["train"])


def test_reconstruction_margin_is_teacher_mi_minus_tau_minus_its_alignment(workdir):
  with open(os.path.join(workdir, "full", "summary.json")) as fh:
    s = json.load(fh)
  for split in ("train", "test"):
    m = s[split]
    assert m["recon_alignment"] >= 0 and m["witness_recon_kl"] >= 0
    assert m["recon_margin"] == pytest.approx(m["teacher_mi"] - m["tau"] - m["recon_alignment"])


def test_variants_share_one_teacher_and_fixed_targets_match_live(workdir):
  ids = set()
  for phase in ("full", "noalign", "rescue", "full_fixed"):
    with open(os.path.join(workdir, phase, "summary.json")) as fh:
      ids.add(json.load(fh)["teacher_id"])
  assert len(ids) == 1
  live = np.load(os.path.join(workdir, "full", "predictions.npz"))["train_teacher"]
  fixed = np.load(os.path.join(workdir, "full_fixed", "predictions.npz"))["train_teacher"]
  np.testing.assert_allclose(live, fixed, atol=1e-6)


def _params(phase_dir, step=None):
  runner = train.Runner(tiny_config(), os.path.dirname(phase_dir))
  with Checkpointer(os.path.join(phase_dir, "checkpoints")) as ckpt:
    state, meta = runner.restore(ckpt, 10, step)
  return state, meta


def test_rescue_continues_exactly_from_noalign_final_state(workdir):
  """Replays rescue by hand: noalign's final checkpoint + full-weight steps == rescue."""
  cfg = tiny_config()
  runner = train.Runner(cfg, workdir)
  runner.ensure_teacher()
  noalign, _ = _params(os.path.join(workdir, "noalign"))
  rescue, meta = _params(os.path.join(workdir, "rescue"))
  assert int(noalign.step) == cfg.train.steps and int(rescue.step) == 2 * cfg.train.steps
  assert meta["lambda_ts"] == cfg.train.lambda_ts
  weights = modes.get("rescue").weights(cfg)
  step_fn = runner.engine.train_step("teacher_guided", 10)
  advance = runner.engine.stepper("replay", step_fn, meta["data_seed"], runner.teachers.function,
                                  None, 10)
  state = noalign.replace(weights=runner.engine.put_weights(weights))
  for t in range(cfg.train.steps, 2 * cfg.train.steps):
    state, _ = advance(state, t)
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(rescue.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def run_cli(*args, cwd=ROOT, subprocess_=False):
  return launch("train.py", *args, code=None, cwd=cwd, subprocess_=subprocess_)


SMOKE = ["--config=" + os.path.join(ROOT, "configs", "digits.py") + ":smoke",
         "--config.train.progress=False", "--config.train.checkpoint_every=20"]


def test_exact_restart_across_processes_is_bit_identical(tmp_path):
  straight, split = str(tmp_path / "a"), str(tmp_path / "b")
  r = run_cli("--mode=warmup", f"--workdir={straight}", *SMOKE, "--config.warmup.steps=60")
  assert r.returncode == 0, r.stderr
  r = run_cli("--mode=warmup", f"--workdir={split}", *SMOKE, "--config.warmup.steps=40",
              subprocess_=True)
  assert r.returncode == 0, r.stderr
  r = run_cli("--mode=warmup", f"--workdir={split}", *SMOKE, "--config.warmup.steps=60",
              subprocess_=True)
  assert r.returncode == 0, r.stderr
  assert "resuming from step 40" in r.stderr
  a, _ = _params(os.path.join(straight, "warmup"), 60)
  b, _ = _params(os.path.join(split, "warmup"), 60)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_cli_full_prints_one_line_certificate_and_reuses_finished_run(tmp_path):
  wd = str(tmp_path / "w")
  r = run_cli("--mode=full", f"--workdir={wd}", *SMOKE)
  assert r.returncode == 0, r.stderr
  lines = [l for l in r.stdout.splitlines() if l.startswith(("train:", "test:"))]
  assert len(lines) == 2 and all("G_tau=" in l and "I_T=" in l for l in lines)
  with open(os.path.join(wd, "full", "metrics.jsonl")) as fh:
    metrics = fh.read()
  again = run_cli("--mode=full", f"--workdir={wd}", *SMOKE)
  assert again.returncode == 0 and again.stdout == r.stdout
  assert f"full: already finished at step 60 in {os.path.join(wd, 'full')}" in again.stderr
  with open(os.path.join(wd, "full", "metrics.jsonl")) as fh:
    assert fh.read() == metrics  # a finished run is returned as it is, its rows untouched


@pytest.mark.parametrize("args,match", [
    (["--config.data.source=mnist"], "unknown source 'mnist'"),
    (["--config.train.lambda_ts=-1.0"], "config.train.lambda_ts"),
    (["--config.teacher.components=(5000,)"], "K=5000 exceeds"),
    (["--config.train.batch_size=0"], "config.train.batch_size"),
    (["--config.nonexistent=1"], "nonexistent"),
    (["--mode=rescue"], "rescue restarts from the final noalign checkpoint"),
])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, args, match):
  r = run_cli(f"--workdir={tmp_path / 'w'}", *SMOKE, *args)
  assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
  err = [l for l in r.stderr.splitlines() if l.startswith("error:")]
  assert len(err) == 1 and match in err[0], r.stderr[-2000:]
  assert "Traceback" not in r.stderr


def test_cli_runs_from_another_directory_with_a_shipped_config_name(tmp_path):
  """The configs ship in the package: ``--config=digits:smoke`` works from any directory."""
  r = run_cli("--mode=warmup", "--config=digits:smoke", "--config.train.progress=False",
              cwd=str(tmp_path))
  assert r.returncode == 0, r.stderr[-2000:]
  assert os.path.isfile(tmp_path / "runs" / "digits_smoke" / "seed0" / "warmup" / "summary.json")


def test_cli_npz_with_nan_is_refused(tmp_path):
  p = tmp_path / "bad.npz"
  x = np.random.default_rng(0).random((40, 8)).astype(np.float32)
  x[3, 2] = np.nan
  np.savez(p, x=x)
  r = run_cli(f"--workdir={tmp_path / 'w'}", *SMOKE, f"--config.data.source=npz:{p}")
  assert r.returncode == 2 and "x: example 3 has NaN" in r.stderr


def test_mismatched_teacher_or_model_in_workdir_is_refused(workdir):
  cfg = tiny_config()
  cfg.teacher.min_mass = 0.3  # a different teacher search than the one on disk
  with pytest.raises(ValueError, match="the teacher in .* different fingerprint"):
    train.Runner(cfg, workdir).run_mode("full")
  cfg = tiny_config()
  cfg.model.latent_dim = 8
  with pytest.raises(ValueError, match="different fingerprint"):
    train.Runner(cfg, workdir).run_mode("full")


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  cfg = tiny_config(learning_rate=1e30)
  wd = str(tmp_path / "w")
  with pytest.raises(train.TrainingDiverged, match=r"non-finite .* at step \d+ \("):
    train.Runner(cfg, wd).run_warmup()
  with Checkpointer(os.path.join(wd, "warmup", "checkpoints")) as ckpt:
    steps = ckpt._manager.all_steps()
  for s in steps:  # whatever was saved is finite
    state, _ = _params(os.path.join(wd, "warmup"), s)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))


class _FakeDevice:
  def __init__(self, stats):
    self._stats = stats

  def memory_stats(self):
    return self._stats


def test_device_resident_data_falls_back_when_it_would_crowd_a_device():
  gib = 2**30
  assert distributed.fits_on_devices(3 * gib, [_FakeDevice({"bytes_limit": 8 * gib})])
  assert not distributed.fits_on_devices(5 * gib, [_FakeDevice({"bytes_limit": 80 * gib}),
                                             _FakeDevice({"bytes_limit": 8 * gib})])
  assert distributed.fits_on_devices(100 * gib, [_FakeDevice(None)])  # the CPU reports no limit
  assert distributed.fits_on_devices(100 * gib, jax.local_devices())


def test_an_uncertified_aligning_phase_says_why_and_what_to_try():
  from certvae_jax.training.phase_loop import uncertified_hint  # pylint: disable=import-outside-toplevel

  def summary(certified=False, train_certified=False, au=5, mi=2.0, lam=5.0):
    test = {"certified": certified, "teacher_mi": mi, "tau": 0.05, "active_units": au}
    return {"test": test, "train": {"certified": train_certified},
            "weights": {"lambda_ts": lam, "alpha_kl": 4.0}}
  assert uncertified_hint(summary(certified=True), {}) is None
  assert uncertified_hint(summary(lam=0.0), {}) is None  # noalign is meant to fail
  assert "I_T=0.010 <= tau" in uncertified_hint(summary(mi=0.01), {})
  collapsed = uncertified_hint(summary(au=0), {})
  assert collapsed.startswith("the code collapsed to the prior (0 active units): the KL term "
                              "won (alpha_KL=4 against lambda_TS=5); try the guard")
  assert "stress case" in uncertified_hint(summary(), {"stress_case": True})
  assert "training split only" in uncertified_hint(summary(train_certified=True), {})
  assert "did not beat the best constant" in uncertified_hint(summary(), {})


def test_the_cli_prints_the_hint_of_an_uncertified_full_run(tmp_path):
  r = run_cli("--mode=full", f"--workdir={tmp_path / 'w'}", *SMOKE, "--config.train.alpha_kl=200",
              "--config.train.lambda_ts=0.01")
  assert r.returncode == 0, r.stderr[-2000:]
  hints = [l for l in r.stdout.splitlines() if l.startswith("hint: ")]
  assert "test: not certified" in r.stdout and len(hints) == 1, r.stdout
  assert "try the guard (--config.guard.policy=raise)" in hints[0]


def test_engines_of_one_config_share_compiled_functions_and_keep_their_own_seed(tmp_path):
  """The compiled functions are shared across runs of one config (seeds included) and
  rebuilt when the config or a registered plug-in changes; each run's seed still
  chooses its parameters."""
  from certvae_jax import objectives  # pylint: disable=import-outside-toplevel
  from certvae_jax.models.vae import init_params  # pylint: disable=import-outside-toplevel
  configs = [tiny_config(), tiny_config()]
  configs[1].seed = 3
  runners = [train.Runner(c, str(tmp_path / f"s{i}")) for i, c in enumerate(configs)]
  assert runners[0].engine._cache is runners[1].engine._cache  # pylint: disable=protected-access
  for runner, config in zip(runners, configs):
    state = runner.fresh_state(10, 0)
    expected = init_params(runner.engine.model(10), jax.random.PRNGKey(config.seed),
                           runner.engine.input_dim, 10)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(expected)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  other = tiny_config()
  other.train.learning_rate *= 2
  assert train.Runner(other, str(tmp_path / "lr")).engine._cache is not (  # pylint: disable=protected-access
      runners[0].engine._cache)  # pylint: disable=protected-access
  original = objectives.base._REGISTRY.entries["teacher_guided"]  # pylint: disable=protected-access
  try:
    objectives.register("teacher_guided")(lambda model, config: original(model, config))
    assert train.Runner(tiny_config(), str(tmp_path / "re")).engine._cache is not (  # pylint: disable=protected-access
        runners[0].engine._cache)  # pylint: disable=protected-access
  finally:
    objectives.register("teacher_guided")(original)
