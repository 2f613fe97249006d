"""Flax (Linen) modules: encoders, decoders, raw z-only witnesses, and the VAE.

:func:`build_model` turns ``config.model`` into a :class:`TeacherGuidedVAE`; the
train step only uses the VAE's ``encode`` / ``decode`` / ``witness_logits``
methods, so other encoders, decoders and witnesses plug in without touching it.
"""

from certvae_jax.models.conv import ConvDecoder, ConvEncoder
from certvae_jax.models.heads import LinearHead, MLPHead
from certvae_jax.models.mlp import MLPDecoder, MLPEncoder
from certvae_jax.models.vae import TeacherGuidedVAE, build_model

__all__ = ["ConvDecoder", "ConvEncoder", "LinearHead", "MLPHead", "MLPDecoder", "MLPEncoder",
           "TeacherGuidedVAE", "build_model"]
