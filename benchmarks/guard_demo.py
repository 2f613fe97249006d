"""Guarded training on digits: find where plain ``full`` loses the certificate, then guard it.

Paper 1, appendices G and H. Three stages, all on the default digits config:

1. ``--stage=sweep``: plain ``full`` runs (no guard) under settings that should make the
   witness easier to abandon: a larger ``alpha_KL``, a smaller ``lambda_TS``, and the
   decoder reading the teacher (the bypass route). Each run is evaluated every
   ``--eval_every`` steps; a run *loses* the certificate when a train-split evaluation
   after its first certified one has ``G_tau <= 0``, or when it ends uncertified.
2. ``--stage=guard --setting=NAME``: that setting on ``--seeds`` seeds, plain and with
   each guard policy, reporting the final test margin, the lowest guard-set margin after
   the first certified guard evaluation, PSNR and reconstruction nats, wall time and the
   number of interventions.
3. ``--stage=rescue``: ``noalign`` then each rescue of ``--rescues``: plain (``sf=0``),
   with ``N`` student-first steps (``sf=N``), and with the shared-safe used head
   (``shared_safe``, appendix E.2's question), with appendix H's rescue diagnostics at
   the rescue's start and the used head's margin beside the raw one.

Every run of one seed shares its warm-up and teacher (copied from a seed directory), so
settings differ only in what is swept. Results go to ``--out`` as JSON (``guard_sweep.json``, ``guard_demo.json``,
``guard_rescue.json``).

    python benchmarks/guard_demo.py --stage=sweep --seeds=1
    python benchmarks/guard_demo.py --stage=guard --setting=alpha_kl=16 --seeds=3
    python benchmarks/guard_demo.py --stage=rescue --seeds=3 --eval_every=20
"""

import argparse
import json
import os
import platform
import shutil
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from certvae_jax import train  # noqa: E402
from certvae_jax.training import phase_loop, writers  # noqa: E402
from configs import digits  # noqa: E402

SWEEP = {
    "default": {},
    "alpha_kl=8": {"train.alpha_kl": 8.0},
    "alpha_kl=16": {"train.alpha_kl": 16.0},
    "alpha_kl=32": {"train.alpha_kl": 32.0},
    "lambda_ts=1": {"train.lambda_ts": 1.0},
    "lambda_ts=0.2": {"train.lambda_ts": 0.2},
    "alpha_kl=16,lambda_ts=1": {"train.alpha_kl": 16.0, "train.lambda_ts": 1.0},
    "bypass": {"model.decoder_reads_teacher": True},
    "bypass,alpha_kl=16": {"model.decoder_reads_teacher": True, "train.alpha_kl": 16.0},
}
POLICIES = {
    "plain": {},
    "raise": {"guard.policy": "raise"},
    "raise+student_first": {"guard.policy": "raise", "guard.student_first": True},
    "rollback": {"guard.policy": "rollback"},
    "barrier": {"guard.policy": "barrier"},  # the default kappa = 1
    "barrier,kappa=0.1": {"guard.policy": "barrier", "guard.kappa": 0.1},
    "barrier,kappa=5": {"guard.policy": "barrier", "guard.kappa": 5.0},
}


def config_for(seed: int, overrides: dict, eval_every: int):
  cfg = digits.get_config()
  cfg.seed = seed
  cfg.train.progress = False
  cfg.eval.every = eval_every
  for dotted, value in overrides.items():
    section, field = dotted.split(".")
    cfg[section][field] = value
  return cfg


def rescue_overrides(name: str) -> dict:
  """A rescue of ``--rescues``: ``sf=N`` (N student-first steps) or ``shared_safe``."""
  if name == "shared_safe":
    return {"train.used_head": "shared_safe"}
  if name.startswith("sf="):
    return {"guard.student_first_steps": int(name[3:])}
  raise ValueError(f"--rescues: expected sf=N or shared_safe, got {name!r}")


def seed_dir(root: str, seed: int, overrides: dict, eval_every: int) -> str:
  """A workdir with the seed's warm-up and teacher (made once per model config: a
  decoder that reads the teacher is another model, with its own warm-up)."""
  model = {k: v for k, v in overrides.items() if k.startswith("model.")}
  path = os.path.join(root, f"base_seed{seed}" + "".join(f"_{k}{v}" for k, v in model.items()))
  train.Runner(config_for(seed, model, eval_every), path).ensure_teacher()
  return path


def run_one(root: str, seed: int, name: str, overrides: dict, eval_every: int,
            mode: str = "full", workdir: str | None = None) -> dict:
  """``mode`` under ``overrides`` in a copy of the seed directory; its trajectory."""
  wd = os.path.join(root, (workdir or name).replace(",", "+").replace("=", "") + f"_seed{seed}")
  if not os.path.exists(wd):
    shutil.copytree(seed_dir(root, seed, overrides, eval_every), wd,
                    ignore=shutil.ignore_patterns(".lock"))
  cfg = config_for(seed, overrides, eval_every)
  if mode == "rescue":
    train.train(config_for(seed, {}, eval_every), "noalign", wd)
  tick = time.perf_counter()
  summary = train.train(cfg, mode, wd)
  wall = time.perf_counter() - tick
  phase = phase_loop.phase_name(cfg, mode)
  rows = writers.read_jsonl(os.path.join(wd, phase, "metrics.jsonl"))
  evals = [(r["step"], r["train/margin"]) for r in rows if "train/margin" in r]
  guard_rows = [(r["step"], r["guard/margin"]) for r in rows if "guard/margin" in r]
  first = next((s for s, m in evals if m > 0), None)
  after = [m for s, m in evals if first is not None and s >= first]
  lost = first is None or min(after) <= 0 or evals[-1][1] <= 0
  t = summary["test"]
  timing = summary["timing"]
  start = summary["step"] - cfg.train.steps if mode == "rescue" else 0
  out = {"seed": seed, "setting": name, "wall_s": wall, "phase_seconds": timing["seconds"],
         "steps_per_s": timing["steps_per_s"],
         "first_certified_eval": first, "min_train_margin_after_certified":
         min(after) if after else None, "final_train_margin": evals[-1][1],
         "final_test_margin": t["margin"], "test_psnr": t["psnr"], "test_rec": t["rec"],
         "test_student_mi": t["student_mi"], "active_units": t["active_units"],
         "lost": bool(lost), "trajectory": evals,
         "steps_to_certify": None if first is None else first - start}
  if "used_head" in summary:
    out.update(final_test_used_margin=t["used_margin"],
               final_train_used_margin=summary["train"]["used_margin"],
               used_head_steps=summary["used_head"]["active_steps"])
  if "rescue_diagnostics" in summary:
    out["rescue_diagnostics"] = summary["rescue_diagnostics"]
  if "guard" in summary:
    g = summary["guard"]
    out.update(interventions=g["interventions"], raises=g["raises"], decays=g["decays"],
               rollbacks=g["rollbacks"],
               min_guard_margin_after_certified=g["min_margin_after_certified"],
               guard_evaluations_below_zero_after_certified=sum(
                   1 for s, m in guard_rows
                   if g["first_certified_step"] is not None and s >= g["first_certified_step"]
                   and m <= 0),
               final_lambda_ts=summary["weights"]["lambda_ts"])
  return out


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--stage", choices=("sweep", "guard", "rescue"), required=True)
  p.add_argument("--rescues", default="sf=0,sf=200,sf=500,shared_safe",
                 help="--stage=rescue: these rescues (sf=N student-first steps; shared_safe)")
  p.add_argument("--setting", default="alpha_kl=16", help="a sweep setting, for --stage=guard")
  p.add_argument("--settings", default=";".join(SWEEP), help="sweep settings, ';'-separated")
  p.add_argument("--policies", default=";".join(POLICIES))
  p.add_argument("--seeds", type=int, default=1)
  p.add_argument("--eval_every", type=int, default=100)
  p.add_argument("--root", default="/tmp/guard_demo")
  p.add_argument("--out", default=os.path.join(ROOT, "docs", "results"))
  a = p.parse_args()
  results = []
  if a.stage == "sweep":
    names = [n for n in SWEEP if n in a.settings.split(";")]
    for seed in range(a.seeds):
      for name in names:
        results.append(run_one(a.root, seed, name, SWEEP[name], a.eval_every))
        r = results[-1]
        print(f"{name:26s} seed {seed}: first certified {r['first_certified_eval']}, min after "
              f"{_f(r['min_train_margin_after_certified'])}, final train "
              f"{r['final_train_margin']:+.3f} test {r['final_test_margin']:+.3f}, "
              f"lost={r['lost']} ({r['wall_s']:.0f} s)", flush=True)
  elif a.stage == "rescue":
    for seed in range(a.seeds):
      for name in a.rescues.split(","):
        results.append(dict(run_one(a.root, seed, name, rescue_overrides(name), a.eval_every,
                                    "rescue", "rescue"), policy=name))
        r = results[-1]
        d = r["rescue_diagnostics"]
        print(f"{name:12s} seed {seed}: first certified {r['first_certified_eval']}, "
              f"test {r['final_test_margin']:+.3f} (used "
              f"{_f(r.get('final_test_used_margin'))}), psnr {r['test_psnr']:.2f}; "
              f"diagnostics: grad {d['align_grad_norm']:.3g}, corr "
              f"{d['response_correlation']:+.3f}", flush=True)
  else:
    for seed in range(a.seeds):
      for policy in a.policies.split(";"):
        overrides = dict(SWEEP[a.setting], **POLICIES[policy])
        results.append(dict(run_one(a.root, seed, f"{a.setting},{policy}", overrides,
                                    a.eval_every), policy=policy))
        r = results[-1]
        print(f"{policy:20s} seed {seed}: test {r['final_test_margin']:+.3f}, min train after "
              f"{_f(r['min_train_margin_after_certified'])}, min guard after "
              f"{_f(r.get('min_guard_margin_after_certified'))}, psnr {r['test_psnr']:.2f}, "
              f"interventions {r.get('interventions', 0)} ({r['wall_s']:.0f} s)", flush=True)
  meta = {"stage": a.stage, "setting": a.setting, "seeds": a.seeds, "eval_every": a.eval_every,
          "machine": platform.processor() or platform.machine(), "python": platform.python_version()}
  os.makedirs(a.out, exist_ok=True)
  stem = {"sweep": "guard_sweep", "guard": "guard_demo", "rescue": "guard_rescue"}[a.stage]
  with open(os.path.join(a.out, stem + ".json"), "w") as fh:
    json.dump({"meta": meta, "runs": results}, fh, indent=1)
  table = markdown(results, a.stage)
  with open(os.path.join(a.out, stem + ".md"), "w") as fh:
    fh.write(f"<!-- python benchmarks/guard_demo.py --stage={a.stage} --seeds={a.seeds}"
             + (f" --setting={a.setting}" if a.stage == "guard" else "")
             + (f" --eval_every={a.eval_every}" if a.eval_every != 100 else "")
             + " -->\n" + table)
  print(table)


def _f(v) -> str:
  return "-" if v is None else f"{v:+.3f}"


def _mean_sd(values) -> str:
  values = [v for v in values if v is not None]
  if not values:
    return "-"
  return f"{np.mean(values):+.3f} ± {np.std(values):.3f}" if len(values) > 1 else f"{values[0]:+.3f}"


def _mean(key: str, fmt: str = ".2f"):
  return lambda name, rs: format(float(np.mean([r[key] for r in rs])), fmt)


def _spread(get):
  return lambda name, rs: _mean_sd([get(r) for r in rs])


COLUMNS = {
    "sweep": [
        ("setting", lambda name, rs: name),
        ("runs that lost it", lambda name, rs: f"{sum(r['lost'] for r in rs)}/{len(rs)}"),
        ("first certified eval", lambda name, rs: ", ".join(
            "never" if r["first_certified_eval"] is None else str(r["first_certified_eval"])
            for r in rs)),
        ("lowest train G_tau after", _spread(lambda r: r["min_train_margin_after_certified"])),
        ("final train G_tau", _spread(lambda r: r["final_train_margin"])),
        ("final test G_tau", _spread(lambda r: r["final_test_margin"])),
        ("test PSNR", _mean("test_psnr")),
    ],
    "guard": [
        ("policy", lambda name, rs: name),
        ("final test G_tau", _spread(lambda r: r["final_test_margin"])),
        ("certified at the end", lambda name, rs:
         f"{sum(r['final_test_margin'] > 0 for r in rs)}/{len(rs)}"),
        ("lowest guard G_tau after first certified",
         _spread(lambda r: r.get("min_guard_margin_after_certified"))),
        ("guard evals <= 0 after", lambda name, rs: str(sum(
            r.get("guard_evaluations_below_zero_after_certified", 0) for r in rs))),
        ("interventions per run (raise/decay/rollback, all seeds)", lambda name, rs:
         f"{np.mean([r.get('interventions', 0) for r in rs]):.1f} (" + "/".join(
             str(sum(r.get(k, 0) for r in rs)) for k in ("raises", "decays", "rollbacks")) + ")"),
        ("final lambda_TS", _spread(lambda r: r.get("final_lambda_ts"))),
        ("test PSNR", _mean("test_psnr")),
        ("test rec (nats)", _mean("test_rec", ".1f")),
        ("phase wall s", _mean("phase_seconds", ".1f")),
        ("steps/s", _mean("steps_per_s", ".0f")),
    ],
    "rescue": [
        ("rescue", lambda name, rs: name),
        ("steps to the first certified train eval", lambda name, rs: ", ".join(
            str(r["steps_to_certify"]) for r in rs)),
        ("final test G_tau (raw)", _spread(lambda r: r["final_test_margin"])),
        ("final test used G_tau", _spread(lambda r: r.get("final_test_used_margin"))),
        ("steps through the used head", lambda name, rs: ", ".join(
            str(r.get("used_head_steps", "-")) for r in rs)),
        ("test PSNR", _mean("test_psnr")),
        ("align grad norm", _spread(lambda r: r["rescue_diagnostics"]["align_grad_norm"])),
        ("response correlation",
         _spread(lambda r: r["rescue_diagnostics"]["response_correlation"])),
        ("input-dependent fraction", lambda name, rs: format(float(np.mean(
            [r["rescue_diagnostics"]["input_dependent_fraction"] for r in rs])), ".3f")),
    ],
}


def markdown(results: list[dict], stage: str) -> str:
  """One row per setting (sweep) or policy (guard, rescue): means ± SD over seeds."""
  key = "setting" if stage == "sweep" else "policy"
  groups: dict[str, list[dict]] = {}
  for r in results:
    groups.setdefault(r[key], []).append(r)
  columns = COLUMNS[stage]
  lines = ["| " + " | ".join(title for title, _ in columns) + " |",
           "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(cell(name, rs) for _, cell in columns) + " |"
            for name, rs in groups.items()]
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  main()
