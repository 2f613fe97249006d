"""certvae_jax: teacher-guided VAEs with a certificate against constant latent collapse.

Submodules are imported on demand so that ``from certvae_jax import certificate``
stays light (no Orbax, TFDS or scikit-learn import).
"""

__version__ = "0.3.0"
