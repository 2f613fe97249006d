"""Fixed teachers ``T(.|x)`` on the simplex (paper 1, section 2.2; paper 2, section 5).

The GMM teacher: candidate search on features, quality control and selection
(:mod:`~certvae_jax.teachers.gmm`); frozen as arrays, with the warm-up encoder, so that
``T(x)`` is a pure jit-able function of any input (:mod:`~certvae_jax.teachers.frozen`,
which also holds paper 2's label smoothing ``(1 - eps) e_y + eps / K``); a teacher given
by its rows on both splits (``teacher.kind='npz:PATH'``, :mod:`~certvae_jax.teachers.rows`);
and the artifact a run keeps in ``WORKDIR/teacher/`` (:mod:`~certvae_jax.teachers.artifact`).
Whatever its kind, a run reads the seed's teacher as one :class:`Teacher`; the kinds a
config may name (``teacher.kind``) are a registry (:mod:`~certvae_jax.teachers.kinds`).
The stage of a run that loads or makes the seed's teacher is
:mod:`certvae_jax.training.teacher_stage`. The public path of the GMM search is
:mod:`certvae_jax.teacher`.
"""

from certvae_jax.teachers.frozen import (
  FrozenGMM,
  FrozenPCA,
  FrozenTeacher,
  freeze_sklearn_gmm,
  freeze_sklearn_pca,
  gmm_logits,
  gmm_probs,
  label_smoothed,
  project,
  teacher_logits,
  teacher_probs,
)
from certvae_jax.teachers.gmm import (
  FittedTeacher,
  feasibility,
  fit_teacher,
  frozen,
  score_teacher,
  search_teacher,
)
from certvae_jax.teachers.kinds import RowsMade, Teacher, TeacherKind, register

__all__ = ["FittedTeacher", "FrozenGMM", "FrozenPCA", "FrozenTeacher", "RowsMade", "Teacher",
           "TeacherKind", "feasibility", "fit_teacher", "freeze_sklearn_gmm",
           "freeze_sklearn_pca", "frozen", "gmm_logits", "gmm_probs", "label_smoothed",
           "project", "register", "score_teacher", "search_teacher", "teacher_logits",
           "teacher_probs"]
