"""The teacher stage of a run: load the seed's teacher, or make it (paper 1, section 2.2).

GMM teacher: warm up the VAE, collect its encoder means on the training split, fit the
candidate grid on the host (scikit-learn), pick by the QC thresholds, freeze the GMM
and the warm-up encoder as arrays, and cache ``T_fix`` on the training split. A teacher
given by its rows (label smoothing, paper 2; your own rows): its kind makes the rows of
both splits (:mod:`certvae_jax.teachers.kinds`), cached as the artifact. Either way the
artifact lives in ``WORKDIR/teacher/`` and every mode of the seed shares it, read as one
:class:`~certvae_jax.teachers.kinds.Teacher`.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import ml_collections
import numpy as np

from certvae_jax import data as data_lib, distributed, files, teachers as teacher_lib
from certvae_jax.certificate.validation import validate_simplex
from certvae_jax.configs.schema import teacher_features
from certvae_jax.evaluation.splits import map_batches
from certvae_jax.teachers import artifact, kinds
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
    shared: ``(directory, seed)`` of another seed's teacher artifact to use as it is
      (paper 1's fixed-teacher control, appendix F.2): read, never made or written.
  """

  def __init__(self, config: ml_collections.ConfigDict, data: data_lib.Dataset,
               rundir: RunDir, engine: Engine, warmup_encoder: Callable[[], Any],
               shared: tuple[str, int] | None = None):
    self.config, self.data, self.dir, self.engine = config, data, rundir, engine
    self._warmup_encoder = warmup_encoder
    self.kind, self.kind_arg = kinds.parse(config.teacher.kind)
    self.shared = shared
    self.current: kinds.Teacher | None = None

  @property
  def directory(self) -> str:
    return self.shared[0] if self.shared else self.dir.phase("teacher")

  def forget(self) -> None:
    """Drops the cached teacher (after ``--overwrite`` cleared the workdir)."""
    self.current = None

  @property
  def info(self) -> dict[str, Any] | None:
    """The teacher artifact's record, once loaded or made."""
    return None if self.current is None else self.current.info

  @property
  def function(self) -> teacher_lib.FrozenTeacher | None:
    """``T(x)`` of the loaded teacher; ``None`` for one given by its rows (or none yet)."""
    return None if self.current is None else self.current.function

  def ensure(self) -> kinds.Teacher:
    """The seed's teacher, loaded, or made when the workdir has none."""
    if self.current is not None:
      return self.current
    config = self.config
    if self.shared:  # the fingerprint of the seed that made the shared teacher
      config = ml_collections.ConfigDict(self.config.to_dict())
      config.seed = int(self.shared[1])
    teacher_fp = fingerprint(config, "teacher", {"teacher": self._teacher_fields()})
    # Every process must take the same branch below: look only after all arrived, and let
    # nobody write before all have looked.
    distributed.barrier("teacher-look")
    exists = artifact.teacher_exists(self.directory)
    distributed.barrier("teacher-looked")
    if self.shared and not exists:
      raise ValueError(f"protocol.teacher_seed: seed {self.shared[1]}'s teacher is not in "
                       f"{self.directory!r}; make it first (a protocol run of that seed)")
    if exists:
      try:
        self.current = kinds.load(self.directory)
      except files.DamagedFile as e:  # made again: the same fit from the same warm-up
        if self.shared:
          raise
        _log.warning("%s; making the teacher again", str(e).split("; delete")[0])
        exists = False
    if exists:
      check_compatible(self.current.info, teacher_fp, f"the teacher in {self.directory!r}")
    elif self.kind.make_rows is not None:
      self.current = self._make_from_rows(teacher_fp)
    else:
      self.current = self._make_gmm(teacher_fp)
    return self.current

  def _teacher_fields(self) -> dict[str, Any]:
    """``config.teacher`` for the fingerprint. ``features='mu'`` (the only choice before
    the field existed) is left out, so that older teacher artifacts stay compatible."""
    fields = self.config.teacher.to_dict()
    if fields.get("features") == "mu":
      del fields["features"]
    if self.kind.fingerprint is not None:
      fields.update(self.kind.fingerprint(self.kind_arg))
    return fields

  def _make_from_rows(self, teacher_fp: dict[str, Any]) -> kinds.Teacher:
    made = self.kind.make_rows(self.config.teacher, self.data, self.kind_arg)
    # A kind's rows are the teacher: checked as the npz loader checks a file's.
    for split, rows, n in (("train", made.train, len(self.data.x_train)),
                           ("test", made.test, len(self.data.x_test))):
      rows = validate_simplex(f"teacher kind {self.kind.name!r}: {split} rows", rows)
      if rows.shape[0] != n:
        raise ValueError(f"teacher kind {self.kind.name!r}: {split} rows: expected {n} rows, "
                         f"got {rows.shape[0]}")
    # The QC scores of paper 1, section 3, for every kind: the protocol's tables read them.
    info = {**teacher_fp, "seed": self.config.seed, **made.info, "stress_case": False,
            "selected_scores": teacher_lib.score_teacher(made.train)}
    if self.dir.main:
      artifact.save_rows_teacher(self.directory, made.train, made.test, info,
                                  kind=self.kind.name)
    distributed.barrier("teacher-saved")
    teacher = kinds.load(self.directory)
    _log.info("teacher: %s, K=%d, I_T=%.4f", made.description, teacher.num_classes,
              teacher.info["selected_scores"]["teacher_mi"])
    return teacher

  def _make_gmm(self, teacher_fp: dict[str, Any]) -> kinds.Teacher:
    k = int(self.config.teacher.components[0])
    t = self.config.teacher
    source, _ = teacher_features(t.features)
    if source == "input":  # the training inputs themselves, before any training
      encoder_params, what = None, "training inputs"
      # Fitted in float64 (sklearn keeps float32 inputs in float32): the frozen float32
      # teacher then equals sklearn's float64 PCA + predict_proba within 1e-5.
      features = map_batches(lambda xb: xb.reshape(len(xb), -1), self.data.x_train,
                             self.config.eval.batch_size).astype(np.float64)
    else:
      encoder_params, what = self._warmup_encoder(), "warm-up means"
      features = map_batches(lambda xb: self.engine.encode(k)(encoder_params, xb),
                             self.data.x_train, self.config.eval.batch_size)
    grid = len(t.components) * len(t.covariance_types) * len(t.seeds)
    _log.info("teacher: fitting %d GMM candidate%s on %dx%d %s%s", grid,
              "" if grid == 1 else "s", *features.shape, what,
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
              "warmup_step": None if source == "input" else self.config.warmup.steps,
              "stress_case": search.stress_case,
              "selected": search.selected, "candidates": search.candidates,
              "selected_scores": search.candidates[search.selected]["scores"]}
      artifact.save_teacher(self.directory, teacher, info, train_targets=targets)
    distributed.barrier("teacher-saved")
    teacher = kinds.load(self.directory)
    info = teacher.info
    sel = info["candidates"][info["selected"]]
    _log.info("teacher: selected K=%d %s seed %d, I_T=%.3f%s", sel["components"],
              sel["covariance_type"], sel["seed"], sel["scores"]["teacher_mi"],
              " (STRESS CASE: no feasible candidate)" if info["stress_case"] else "")
    return teacher

  def split_targets(self, target: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Teacher rows of the train and test splits, for evaluation (and fixed targets).

    ``target='none'`` (warm-up, before any teacher) gives uniform rows.
    """
    d = self.data
    if target == "none":
      return (np.full((len(d.x_train), k), 1.0 / k, np.float32),
              np.full((len(d.x_test), k), 1.0 / k, np.float32))
    teacher = self.ensure()
    if teacher.function is None:  # given by its rows: the rows are the teacher
      return teacher.cached_rows("train"), teacher.cached_rows("test")
    probs = self.engine.teacher_probs(k)

    def live(x):
      return map_batches(lambda xb: probs(teacher.function, xb), x, self.config.eval.batch_size)

    train = self._fixed_targets(teacher, live) if target == "fixed" else live(d.x_train)
    return train, live(d.x_test)

  def _fixed_targets(self, teacher: kinds.Teacher, live) -> np.ndarray:
    """The cached ``T_fix``; a damaged or missing cache is computed again, as it was made
    (the frozen teacher on the training split), with a warning."""
    try:
      return teacher.cached_rows("train")
    except files.DamagedFile as e:
      _log.warning("%s; computing it again from the frozen teacher", str(e).split("; delete")[0])
    train = live(self.data.x_train)
    if self.dir.main and not self.shared:
      artifact.save_train_targets(self.directory, train)
    return train
