"""Paper 1's protocol on scikit-learn's bundled digits: the default config.

    python launch/train.py --mode=full                       # this config, runs/digits/seed0
    python launch/train.py --mode=full --config=configs/digits.py:smoke   # tiny CPU run
    python launch/protocol.py --seeds=3                      # full/noalign/rescue x 3 seeds

MLP 64-256-256, d = 16, Bernoulli decoder, GMM teacher (K = 10) on the warm-up means,
linear raw head. Warm-up at alpha_KL = 1 (a strong teacher needs a low KL weight), then
alpha_KL = 4, lambda_TS = 5, lambda_bal = 1 for every variant. The KL weight of 4 is
chosen so that removing alignment drives every latent unit below the active-unit
threshold (0 active units) and the witness to a constant; a post-hoc linear head still
certifies the code (docs/results.md has the measured tables). Expect on the default: full
G_tau around +1.9, noalign slightly below 0 with student MI ~0, rescue around +1.8.
"""

import ml_collections

from certvae_jax.configs import is_smoke


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the digits config; ``arg='smoke'`` gives a seconds-long CPU run."""
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.source = "digits"
  c.data.test_fraction = 0.2
  c.data.split_seed = 0
  c.data.data_dir = ""              # TFDS data directory for tfds:NAME sources ("" = default)
  c.data.on_device = True           # keep the training split on every device; False: host batches

  c.model = ml_collections.ConfigDict()
  c.model.encoder = "mlp"           # or 'conv' for (H, W, C) images, or package.module:Name
  c.model.decoder = ""              # "" = the encoder's kind; or package.module:Name
  c.model.hidden = (256, 256)
  c.model.conv_channels = (32, 64, 128, 256)  # conv encoder: one stride-2 stage each
  c.model.fast_conv = True          # exact fast rewrites of the stride-2 (transposed) convs
  c.model.likelihood = "bernoulli"  # or 'gaussian' (fixed scale) for natural images
  c.model.gaussian_scale = 0.1
  c.model.latent_dim = 16
  c.model.head = "linear"          # raw z-only witness: 'linear', 'mlp', or package.module:Name
  c.model.head_hidden = (128,)
  c.model.witness_beta = 5.0       # gain of paper 2's fixed simplex witness (head='simplex')
  c.model.decoder_reads_teacher = False  # paper 1's bypass route p(x | z, T(x))

  c.warmup = ml_collections.ConfigDict()
  c.warmup.steps = 2000
  c.warmup.alpha_kl = 1.0

  c.teacher = ml_collections.ConfigDict()
  c.teacher.kind = "gmm"            # or 'label_smoothed' (paper 2; uses the labels)
  c.teacher.eps = 0.05              # label smoothing of the 'label_smoothed' teacher
  c.teacher.features = "mu"         # GMM on the warm-up means, or 'pca:N': on their N PCA axes
  c.teacher.components = (10,)
  c.teacher.covariance_types = ("full", "diag")
  c.teacher.seeds = (0, 1, 2)
  c.teacher.max_iter = 200
  c.teacher.reg_covar = 1e-6
  c.teacher.high_margin = 0.5       # top-1 margin counted as "high"
  # Feasibility thresholds, checked in this order (minimum mass first).
  c.teacher.min_mass = 0.02
  c.teacher.min_mi = 0.1
  c.teacher.min_mean_margin = 0.0
  c.teacher.max_hard_balance_kl = 0.5
  c.teacher.max_soft_usage_kl = 0.5

  c.train = ml_collections.ConfigDict()
  c.train.steps = 2000              # per variant; rescue adds this many after noalign
  c.train.batch_size = 128
  c.train.learning_rate = 1e-3
  c.train.alpha_kl = 4.0
  c.train.lambda_ts = 5.0
  c.train.lambda_bal = 1.0
  c.train.align_on_mean = False     # align s(mu) instead of s(z sampled)
  c.train.init = "warmup"           # variants start from the warm-up weights, or 'fresh'
  # 'shared_safe': aligning phases train the alignment through a calibrated head shared by
  # all rows while the raw training margin is <= used_head_trigger (paper 1, appendix
  # E.9); the certificate always reads the raw head. 'raw': the raw head alone.
  c.train.used_head = "raw"
  c.train.used_head_trigger = 0.0
  c.train.prefit_steps = 500        # rst_prefit: steps regressing mu onto the analytic code
  # rst_alpha_prefit regresses mu onto alpha * the analytic code: a number in [0, 1] (as a
  # string), or "balance": the alpha minimising lambda_TS L(alpha) + alpha_KL alpha^2 E*.
  c.train.prefit_alpha = "balance"
  c.train.log_every = 50
  c.train.checkpoint_every = 1000
  c.train.progress = True
  c.train.skip_nonfinite = False    # skip (and count) non-finite batches instead of stopping
  c.train.steps_per_call = 10       # training steps per compiled call (device-resident data)
  c.train.unroll_steps = False      # with steps_per_call > 1: unroll instead of lax.scan
  c.train.hooks = ""                # loop hooks, comma-separated: names or package.module:Name
  c.train.writers = "jsonl"         # metric writers, comma-separated: names or package.module:Name

  c.eval = ml_collections.ConfigDict()
  c.eval.every = 500
  c.eval.batch_size = 1024
  c.eval.tau = 0.05
  c.eval.active_unit_threshold = 0.01
  c.eval.mi_batch_size = 256
  c.eval.delta = 0.05               # population bounds on the test margin at confidence 1 - delta
  c.eval.bootstrap_resamples = 1000  # resamples of the bootstrap bound
  c.eval.posthoc_max_iter = 500     # L-BFGS iterations of the post-hoc linear head, ...
  c.eval.posthoc_fit_rows = 10000   # ... fitted on a fixed random subset of the training
                                    # split (0: every row); certified on every row
  c.eval.probe_fit_rows = 10000     # the linear probe's fit, likewise; scored on every row
  c.eval.reconstruction_check = True  # T(x_hat) diagnostics for decoder bypass (GMM teachers)
  # The reconstruction side (the check, rec and PSNR) reads a fixed random subset of each
  # split (0: all); the certificate and the latent statistics read every row.
  c.eval.reconstruction_check_rows = 10000

  # Paper 1's baselines (table 3): raw head with balance, no alignment; only the KL differs.
  c.baselines = ml_collections.ConfigDict()
  c.baselines.methods = ("vanilla_vae", "beta_vae", "kl_anneal", "free_bits", "vq_vae",
                         "gmvae")     # what --baselines runs
  c.baselines.beta = 0.5            # --mode=beta_vae's KL weight
  c.baselines.betas = (0.5, 4.0)    # the beta-VAE weights --baselines runs (below and above 1)
  c.baselines.anneal_start = 0.0    # kl_anneal: alpha_KL at step 0, rising linearly to 1 ...
  c.baselines.anneal_steps = 0      # ... over this many steps (0: half of train.steps)
  c.baselines.free_bits = 0.25      # free_bits: lambda, nats per latent dimension
  c.baselines.vq_codes = 0          # vq_vae: number of codes (0: the teacher's K)
  c.baselines.vq_commitment = 0.25  # vq_vae: the commitment weight beta
  c.baselines.gmvae_components = 0  # gmvae: mixture components (0: the teacher's K)

  # Guarded training (paper 1, appendices G and H); 'off' leaves every run as it was.
  c.guard = ml_collections.ConfigDict()
  c.guard.policy = "off"            # 'raise', 'rollback' or 'barrier' guard full/rescue runs
  c.guard.every = 50                # guard-set margin every this many steps (and at checkpoints)
  c.guard.fraction = 0.1            # of the training split held out as the guard set
  c.guard.gamma = 0.1               # raise lambda_TS when the guard margin falls below this ...
  c.guard.gamma_release = 0.3       # ... and decay it back once the margin is above this
  c.guard.factor = 2.0              # raise: multiply (decay: divide) lambda_TS by this
  c.guard.max_lambda = 80.0         # cap of the raised lambda_TS
  c.guard.student_first = False     # raise: while raised, train the encoder and head on alignment only
  c.guard.max_rollbacks = 3         # rollback: at most this many per phase
  c.guard.kappa = 1.0               # barrier: weight of -kappa log G_batch
  c.guard.barrier_floor = 0.05      # barrier: below this margin, its tangent line (finite)
  c.guard.student_first_steps = 0   # rescue: student-first steps before the full objective

  c.log = ml_collections.ConfigDict()
  c.log.tensorboard = False         # also write TensorBoard event files (pip install -e ".[tensorboard]")

  c.protocol = ml_collections.ConfigDict()
  c.protocol.variants = ("full", "noalign", "rescue")
  c.protocol.target = "live"        # default --target: 'live' teacher or cached 'fixed' T_fix
  c.protocol.kl_stress_variants = ("full",)  # the modes --kl_stress runs at each KL weight
  # >= 0: every seed trains against this seed's teacher (paper 1's fixed-teacher control,
  # appendix F.2; tables protocol_fixed_teacher.*); -1: each seed searches its own.
  c.protocol.teacher_seed = -1

  if is_smoke(arg):
    c.warmup.steps = 60
    c.train.steps = 60
    c.train.prefit_steps = 30
    c.train.log_every = 10
    c.train.checkpoint_every = 30
    c.eval.every = 30
    c.teacher.covariance_types = ("diag",)
    c.teacher.seeds = (0,)
  return c
