"""The teacher stage of a run: load the seed's teacher, or make it (paper 1, section 2.2).

GMM teacher: warm up the VAE, collect its encoder means on the training split, fit the
candidate grid on the host (scikit-learn), pick by the QC thresholds, freeze the GMM
and the warm-up encoder as arrays, and cache ``T_fix`` on the training split. Label-
smoothed teacher (paper 2): ``(1 - eps) e_y + eps / K`` from the labels, cached on both
splits. Either way the artifact lives in ``WORKDIR/teacher/`` and every mode of the
seed shares it.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable

import ml_collections
import numpy as np

from certvae_jax import artifact, data as data_lib, distributed, row_teacher, teacher as teacher_lib
from certvae_jax.evaluation.splits import map_batches
from certvae_jax.training.checkpoint import check_compatible
from certvae_jax.training.engine import Engine
from certvae_jax.training.rundir import RunDir, fingerprint

_log = logging.getLogger(__name__)


class TeacherStage:
  """Loads or makes the seed's teacher, and gives its rows on the splits.

  Args:
    config: the run config.
    data: the data set.
    rundir: the seed's run directory.
    engine: the run's compiled functions.
    warmup_encoder: runs (or finds) the warm-up and returns its final encoder params.
  """

  def __init__(self, config: ml_collections.ConfigDict, data: data_lib.Dataset,
               rundir: RunDir, engine: Engine, warmup_encoder: Callable[[], Any]):
    self.config, self.data, self.dir, self.engine = config, data, rundir, engine
    self._warmup_encoder = warmup_encoder
    self.teacher: teacher_lib.FrozenTeacher | None = None
    self.info: dict[str, Any] | None = None

  @property
  def directory(self) -> str:
    return self.dir.phase("teacher")

  def forget(self) -> None:
    """Drops the cached teacher (after ``--overwrite`` cleared the workdir)."""
    self.teacher = self.info = None

  def ensure(self) -> tuple[teacher_lib.FrozenTeacher | None, dict[str, Any]]:
    """``(teacher, info)``: the teacher is ``None`` for a label-smoothed one."""
    if self.info is not None:
      return self.teacher, self.info
    teacher_fp = fingerprint(self.config, "teacher", {"teacher": self._teacher_fields()})
    # Every process must take the same branch below: look only after all arrived, and let
    # nobody write before all have looked.
    distributed.barrier("teacher-look")
    exists = artifact.teacher_exists(self.directory)
    distributed.barrier("teacher-looked")
    if exists:
      teacher, info = artifact.load_teacher(self.directory)
      check_compatible(info, teacher_fp, f"the teacher in {self.directory!r}")
    elif self.config.teacher.kind == "label_smoothed":
      teacher, info = self._make_label_smoothed(teacher_fp)
    elif row_teacher.npz_path(self.config.teacher.kind) is not None:
      teacher, info = self._make_from_rows(teacher_fp)
    else:
      teacher, info = self._make_gmm(teacher_fp)
    self.teacher, self.info = teacher, info
    return teacher, info

  def _teacher_fields(self) -> dict[str, Any]:
    """``config.teacher`` for the fingerprint. ``features='mu'`` (the only choice before
    the field existed) is left out, so that older teacher artifacts stay compatible."""
    fields = self.config.teacher.to_dict()
    if fields.get("features") == "mu":
      del fields["features"]
    path = row_teacher.npz_path(fields["kind"])
    if path is not None:
      fields["rows_digest"] = row_teacher.file_digest(path)
    return fields

  def _make_label_smoothed(self, teacher_fp: dict[str, Any]):
    d, eps = self.data, float(self.config.teacher.eps)
    k = d.num_classes
    train_t = teacher_lib.label_smoothed(d.y_train, k, eps)
    test_t = teacher_lib.label_smoothed(d.y_test, k, eps)
    info = {**teacher_fp, "seed": self.config.seed, "eps": eps,
            "stress_case": False, "selected_scores": teacher_lib.score_teacher(train_t)}
    if self.dir.main:
      artifact.save_label_teacher(self.directory, train_t, test_t, info)
    distributed.barrier("teacher-saved")
    teacher, info = artifact.load_teacher(self.directory)
    _log.info("teacher: label smoothing eps=%s, K=%d, I_T=%.4f", eps, k,
              info["selected_scores"]["teacher_mi"])
    return teacher, info

  def _make_from_rows(self, teacher_fp: dict[str, Any]):
    path = row_teacher.npz_path(self.config.teacher.kind)
    train_t, test_t = row_teacher.load_rows(path, len(self.data.x_train), len(self.data.x_test))
    info = {**teacher_fp, "seed": self.config.seed, "path": os.path.abspath(path),
            "stress_case": False, "selected_scores": teacher_lib.score_teacher(train_t)}
    if self.dir.main:
      artifact.save_label_teacher(self.directory, train_t, test_t, info, kind="rows")
    distributed.barrier("teacher-saved")
    teacher, info = artifact.load_teacher(self.directory)
    _log.info("teacher: rows from %s, K=%d, I_T=%.4f", path, train_t.shape[1],
              info["selected_scores"]["teacher_mi"])
    return teacher, info

  def _make_gmm(self, teacher_fp: dict[str, Any]):
    encoder_params = self._warmup_encoder()
    k = int(self.config.teacher.components[0])
    features = map_batches(lambda xb: self.engine.encode(k)(encoder_params, xb),
                           self.data.x_train, self.config.eval.batch_size)
    t = self.config.teacher
    grid = len(t.components) * len(t.covariance_types) * len(t.seeds)
    _log.info("teacher: fitting %d GMM candidate%s on %dx%d warm-up means%s", grid,
              "" if grid == 1 else "s", *features.shape,
              "" if t.features == "mu" else f" ({t.features})")
    search = teacher_lib.search_teacher(features, self.config.teacher)
    # Fitted on every host; process 0's fit is the one all use (and the one saved).
    gmm, projection = distributed.broadcast((search.gmm, search.projection))
    teacher = teacher_lib.FrozenTeacher(encoder_params=encoder_params, gmm=gmm,
                                        projection=projection)
    if self.dir.main:
      probs = self.engine.teacher_probs(k)
      targets = map_batches(lambda xb: probs(teacher, xb), self.data.x_train,
                            self.config.eval.batch_size)
      info = {**teacher_fp, "seed": self.config.seed,
              "warmup_step": self.config.warmup.steps, "stress_case": search.stress_case,
              "selected": search.selected, "candidates": search.candidates,
              "selected_scores": search.candidates[search.selected]["scores"]}
      artifact.save_teacher(self.directory, teacher, info, train_targets=targets)
    distributed.barrier("teacher-saved")
    teacher, info = artifact.load_teacher(self.directory)
    sel = info["candidates"][info["selected"]]
    _log.info("teacher: selected K=%d %s seed %d, I_T=%.3f%s", sel["components"],
              sel["covariance_type"], sel["seed"], sel["scores"]["teacher_mi"],
              " (STRESS CASE: no feasible candidate)" if info["stress_case"] else "")
    return teacher, info

  def split_targets(self, target: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Teacher rows of the train and test splits, for evaluation (and fixed targets).

    ``target='none'`` (warm-up, before any teacher) gives uniform rows.
    """
    d = self.data
    if target == "none":
      return (np.full((len(d.x_train), k), 1.0 / k, np.float32),
              np.full((len(d.x_test), k), 1.0 / k, np.float32))
    if self.teacher is None:  # label-smoothed or saved rows: the rows are the teacher
      return (artifact.load_train_targets(self.directory),
              artifact.load_test_targets(self.directory))
    probs = self.engine.teacher_probs(k)

    def live(x):
      return map_batches(lambda xb: probs(self.teacher, xb), x, self.config.eval.batch_size)

    train = (artifact.load_train_targets(self.directory) if target == "fixed"
             else live(d.x_train))
    return train, live(d.x_test)
