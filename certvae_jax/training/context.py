"""A run's context: the validated config, the loaded data, the mesh and K.

Everything that can be checked before training is checked here, so that a bad value
fails in seconds with a message naming it.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from certvae_jax import data as data_lib
from certvae_jax.configs import schema
from certvae_jax.models.vae import build_model
from certvae_jax.objectives import terms as losses
from certvae_jax.teachers import kinds
from certvae_jax.training import hooks as hooks_lib, writers as writers_lib


class Context(NamedTuple):
  """What every part of a run reads."""
  config: ml_collections.ConfigDict
  data: data_lib.Dataset
  mesh: Mesh
  num_classes: int


def make_context(config: ml_collections.ConfigDict) -> Context:
  """Validates the config, loads the data, checks the model builds, makes the mesh.

  Raises:
    ValueError: naming the config field or data problem.
  """
  schema.validate(config)
  data = data_lib.load_dataset(config.data.source, test_fraction=config.data.test_fraction,
                               split_seed=config.data.split_seed,
                               data_dir=config.data.data_dir or None)
  data_lib.steps_per_epoch(len(data.x_train), config.train.batch_size)
  kind, arg = kinds.parse(config.teacher.kind)
  k = kind.num_classes(config.teacher, data, arg)
  # A bad model config fails now, before any work.
  build_model(config.model, int(data.x_train.shape[1]), k, data.example_shape)
  losses.reconstruction_nll(config.model.likelihood, float(config.model.gaussian_scale))
  hooks_lib.check_names(config.train.hooks)
  writers_lib.check_names(writers_lib.run_writer_names(config))
  if "tensorboard" in writers_lib.run_writer_names(config).split(","):
    writers_lib.require_tensorboard()
  mesh = Mesh(np.asarray(jax.devices()), ("data",))
  for name in ("train.batch_size", "eval.batch_size"):
    section, field = name.split(".")
    if config[section][field] % mesh.size:
      raise ValueError(f"config.{name}: {config[section][field]} must divide by the "
                       f"{mesh.size} devices of the data-parallel mesh")
  return Context(config, data, mesh, k)
