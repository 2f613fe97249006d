"""Encoders, decoders and raw heads by name or import path, for ``config.model``.

``config.model.encoder`` / ``decoder`` / ``head`` name a registered part (``mlp``,
``conv``; ``linear``, ``mlp``, ``simplex``) or an import path ``package.module:Name``.
The interface of each part (flax.linen modules, inputs flattened per example):

=========  ======================================  ========================================
part       called as                               returns
=========  ======================================  ========================================
encoder    ``module(x)``, ``x`` ``(B, D)``         ``(mu, logvar)``, each ``(B, latent_dim)``
decoder    ``module(z)`` (``module(z, t)`` if its  ``(B, D)`` logits (Bernoulli) or
           ``reads_teacher`` is True)              pre-sigmoid means (Gaussian)
head       ``module(z)``, ``z`` ``(B, latent)``    ``(B, K)`` witness logits; must read z only
=========  ======================================  ========================================

An import path may name a ``flax.linen.Module`` subclass, built with one keyword
argument (encoder ``latent_dim``, decoder ``out_dim``, head ``num_classes``), or a
factory ``factory(model_config, dims) -> module`` with ``dims`` a :class:`Dims`. Names
registered with :func:`register` take the same factories.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, NamedTuple

import flax.linen as nn

from certvae_jax import plugins

PARTS = ("encoder", "decoder", "head")
# The keyword a Module subclass named by import path is built with.
_MODULE_KWARG = {"encoder": "latent_dim", "decoder": "out_dim", "head": "num_classes"}


class Dims(NamedTuple):
  """The sizes a part may need: flattened input size, example shape, latent size, K."""
  input_dim: int
  example_shape: tuple[int, ...] | None
  latent_dim: int
  num_classes: int


Factory = Callable[[Any, Dims], nn.Module]
_REGISTRY = {part: plugins.Registry(f"model.{part}", hint=plugins.REGISTRATIONS_HINT)
             for part in PARTS}


def register(part: str, name: str, factory: Factory) -> None:
  """Registers ``factory(model_config, dims) -> module`` as ``config.model.<part> = name``."""
  if part not in PARTS:
    raise ValueError(f"part: expected one of {PARTS}, got {part!r}")
  _REGISTRY[part].register(name, factory)


def names(part: str) -> tuple[str, ...]:
  return _REGISTRY[part].names()


def build(part: str, name: Any, model_config: Any, dims: Dims) -> nn.Module:
  """The ``part`` named ``name`` (registered, or ``package.module:Name``).

  Raises:
    ValueError: naming ``config.model.<part>``, for an unknown name or an import path
      that does not load or is not a module class or factory.
  """
  if not isinstance(name, str):
    raise ValueError(f"model.{part}: expected a name or package.module:Name, got {name!r}")
  obj = _REGISTRY[part].get(name)
  if name in _REGISTRY[part].names():
    return obj(model_config, dims)
  if inspect.isclass(obj) and issubclass(obj, nn.Module):
    size = {"latent_dim": dims.latent_dim, "out_dim": dims.input_dim,
            "num_classes": dims.num_classes}[_MODULE_KWARG[part]]
    return obj(**{_MODULE_KWARG[part]: size})
  if callable(obj):
    module = obj(model_config, dims)
    if not isinstance(module, nn.Module):
      raise ValueError(f"model.{part}: {name} returned {type(module).__name__}, not a "
                       "flax.linen.Module")
    return module
  raise ValueError(f"model.{part}: {name} is neither a flax.linen.Module subclass nor a "
                   "factory function")
