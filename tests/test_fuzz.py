"""Fuzzing the public surface: malformed arrays, files, configs and flags.

Every malformed input must give a ``ValueError`` (on the command line: exit code 2
and one ``error:`` line), never another exception, a deep JAX traceback or a hang.
"""


import ml_collections
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from certvae_jax import certificate as cert, data, simplex, train
from tests.conftest import tiny_config
from tests.launcher import launch

dtypes = st.sampled_from([np.float16, np.float32, np.float64, np.int32, np.uint8, np.bool_,
                          np.complex64, "U3", "S2", "M8[D]"])
arrays = dtypes.flatmap(lambda dt: hnp.arrays(
    dt, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)))
junk = st.one_of(arrays, st.none(), st.text(max_size=5), st.integers(), st.floats(),
                 st.lists(st.lists(st.floats(), max_size=3), max_size=3),
                 st.dictionaries(st.text(max_size=2), st.integers(), max_size=2))


def ok_or_value_error(fn, *args, **kwargs):
  try:
    out = fn(*args, **kwargs)
  except ValueError:
    return None
  return out


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(junk, junk, junk)
def test_certificate_functions_take_junk(a, b, tau):
  for fn, args in ((cert.teacher_mi, (a,)), (cert.student_mi, (b,)),
                   (cert.alignment_loss, (a, b)), (cert.alignment_loss_from_logits, (a, b)),
                   (cert.constant_student_cost, (a, b)), (cert.margin, (a, b, tau)),
                   (cert.report, (a, b, tau))):
    out = ok_or_value_error(fn, *args)
    if out is not None and fn is not cert.report:
      value = float(out)
      assert not np.isnan(value), fn.__name__
  stats = cert.CertificateStats.zeros(2)
  ok_or_value_error(stats.update, a, b)
  for fn, args in ((simplex.analytic_code, (a, 1.0)), (simplex.escape_force, (a, 1.0, 1.0)),
                   (simplex.analytic_code_energy, (a, tau))):
    ok_or_value_error(fn, *args)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(st.sampled_from(["x", "y", "x_test", "y_test", "z"]), arrays,
                       max_size=4), st.binary(max_size=64), st.booleans())
def test_npz_loader_takes_junk(tmp_path_factory, arrays_in, raw, use_raw):
  path = tmp_path_factory.mktemp("npz") / "f.npz"
  if use_raw:
    path.write_bytes(raw)
  else:
    try:
      np.savez(path, **arrays_in)
    except (ValueError, TypeError):
      return
  d = ok_or_value_error(data.load_dataset, f"npz:{path}")
  if d is not None:
    x = data.to_unit(d.x_train)
    assert np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1


FIELDS = ["seed", "train.steps", "train.batch_size", "train.learning_rate", "train.alpha_kl",
          "train.lambda_ts", "train.init", "warmup.steps", "eval.tau", "eval.batch_size",
          "model.latent_dim", "model.hidden", "model.head", "model.witness_beta",
          "teacher.components", "teacher.covariance_types", "teacher.seeds", "teacher.kind",
          "teacher.eps", "teacher.min_mass", "data.source", "data.test_fraction",
          "train.skip_nonfinite", "teacher.features", "eval.delta", "eval.bootstrap_resamples",
          "eval.reconstruction_check"]
values = st.one_of(st.integers(-3, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                   st.booleans(), st.text(max_size=6), st.tuples(st.integers(-2, 300)),
                   st.tuples(), st.sampled_from(["linear", "simplex", "full", "banana", "npz:/no"]))


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.sampled_from(FIELDS), values), min_size=1, max_size=3))
def test_config_values_fail_cleanly_before_training(changes):
  cfg = tiny_config()
  for field, value in changes:
    *path, leaf = field.split(".")
    node = cfg
    for p in path:
      node = node[p]
    try:
      node[leaf] = value
    except (TypeError, ValueError, ml_collections.config_dict.MutabilityError):
      # The config's own type checks refuse it; on the CLI that is an exit-2 error.
      continue
  ok_or_value_error(train.make_context, cfg)


@pytest.mark.parametrize("script,args,match", [
    ("train.py", ["--mode=xyz"], "--mode"),
    ("train.py", ["--target=banana"], "--target"),
    ("train.py", ["--config.train.steps=abc"], "steps"),
    ("train.py", ["--config=/nonexistent/config.py"], "config"),
    ("train.py", ["--seed=-4"], "config.seed"),
    ("train.py", ["--config.model.head=banana"], "model.head"),
    ("protocol.py", ["--seeds=0"], "--seeds"),
    ("protocol.py", ["--kl_stress=a,b"], "--kl_stress"),
])
def test_cli_malformed_flags_exit_2_with_one_line(tmp_path, script, args, match):
  r = launch(script, f"--workdir={tmp_path}", *args, code=None)
  assert r.returncode == 2, r.stderr[-2000:]
  lines = [l for l in r.stderr.splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and match in lines[0], r.stderr[-2000:]
  assert "Traceback" not in r.stderr
