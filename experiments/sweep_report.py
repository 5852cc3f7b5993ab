"""Reports a finished sweep: statistics over seeds, report.md and the plots.

`experiments.sweep` trains the runs and writes results.csv (and, for a sweep
with "evaluate", sampled_eval.csv); `write_report` turns those rows and the
runs' final evaluations into WORKDIR/report.md, WORKDIR/accuracy.png,
WORKDIR/response_length.png and, with "evaluate", WORKDIR/pass_maj_at_k.png
(see `experiments/sweep.py`). Every interval is a 95% Student t-interval
over seeds; every gain is paired with the same seed's SFT policy.
"""

import math
import os
from typing import Optional

import numpy as np

# The shared warm start's run name: every run of a seed starts from its SFT
# policy, and the report pairs every gain with it.
SFT_NAME = "sft"
REPORT_FILE = "report.md"
SAMPLED_PLOT = "pass_maj_at_k.png"
PLOTS = {
    "accuracy.png": ("greedy_acc", "held-out greedy accuracy"),
    "response_length.png": ("response_length", "mean response length (tokens)"),
}
# results.csv columns that are means over the training steps since the
# previous evaluation.
WINDOW_KEYS = ("response_length", "reward_mean", "accuracy", "kl")


def write_report(
    sweep: dict,
    workdir: str,
    rows: list[dict],
    policy_finals: dict[str, list[dict]],
    reward_model_finals: dict[str, list[dict]],
    sampled_table: Optional[list[dict]] = None,
) -> dict:
  """Writes report.md and the plots (with `sampled_table`, the pass@k and
  maj@k plot too) into `workdir`; returns the summary.

  Args:
    sweep: the sweep (its seeds and "evaluate" part).
    workdir: the sweep directory.
    rows: results.csv's rows.
    policy_finals: policy run name (the SFT first) -> the final evaluation
      (eval.json "final") of each seed, in the sweep's seed order.
    reward_model_finals: the same for the reward-model runs.
    sampled_table: sampled_eval.csv's rows, for a sweep with "evaluate".

  Returns:
    Method name -> statistics of its final accuracy (`summarize`).
  """
  names = list(policy_finals)
  summary = summarize(sweep, policy_finals)
  reward = summarize_reward_models(reward_model_finals)
  sampled = None
  if sampled_table is not None:
    sampled = summarize_sampled(sweep, names, sampled_table)
    plot_sampled(sampled, os.path.join(workdir, SAMPLED_PLOT))
  with open(os.path.join(workdir, REPORT_FILE), "w") as f:
    f.write(report(sweep, summary, reward, sampled))
  for filename, (key, label) in PLOTS.items():
    plot(rows, names, key, label, os.path.join(workdir, filename))
  return summary


def evaluate_settings(sweep: dict) -> dict:
  """The sweep's "evaluate" part with its defaults: sorted ks, questions and
  temperature (what experiments.sweep samples with, and the report states).
  """
  spec = sweep["evaluate"]
  return {
      "ks": sorted(spec["k"]),
      "questions": spec["questions"],
      "temperature": float(spec.get("temperature", 1.0)),
  }


# ---------------------------------------------------------------------------
# Statistics over seeds.
# ---------------------------------------------------------------------------


def t_interval(
    values, confidence: float = 0.95
) -> tuple[float, Optional[float], Optional[float]]:
  """(mean, low, high) of Student's t-interval; bounds None for one value."""
  # Imported here: scipy (a JAX dependency) is needed only by reports.
  from scipy import stats  # pylint: disable=import-outside-toplevel

  values = np.asarray(values, dtype=np.float64)
  mean = float(values.mean())
  if values.size < 2:
    return mean, None, None
  half = (
      stats.t.ppf((1 + confidence) / 2, values.size - 1)
      * values.std(ddof=1)
      / math.sqrt(values.size)
  )
  return mean, mean - float(half), mean + float(half)


def summarize(sweep: dict, policy_finals: dict[str, list[dict]]) -> dict:
  """Per policy method: per-seed final accuracies, their t-interval, and the
  t-interval of the paired gain over the same seed's SFT policy.

  `policy_finals`: method name -> the final evaluation of each seed.
  """
  seeds = sweep["seeds"]

  def accuracies(name):
    return [final["greedy_acc"] for final in policy_finals[name]]

  sft = accuracies(SFT_NAME)
  summary = {}
  for name in policy_finals:
    accs = accuracies(name)
    gains = [a - b for a, b in zip(accs, sft)]
    summary[name] = {
        "seeds": seeds,
        "acc": accs,
        "acc_ci": t_interval(accs),
        "gain_ci": t_interval(gains),
    }
  return summary


def _held_out_metric(key: str) -> bool:
  """Accuracies and AUCs of a reward model's held-out evaluation (not the
  training batch's train_acc)."""
  return key.endswith(("_acc", "_auc")) and not key.startswith("train_")


def summarize_reward_models(reward_model_finals: dict[str, list[dict]]) -> dict:
  """Per reward-model run: metric -> (per-seed values, t-interval) for each
  held-out *_acc and *_auc of its final evaluation.

  `reward_model_finals`: run name -> the final evaluation of each seed.
  """
  summary = {}
  for name, finals in reward_model_finals.items():
    keys = [k for k in finals[0] if _held_out_metric(k)]
    summary[name] = {}
    for key in keys:
      values = [float(f[key]) for f in finals]
      summary[name][key] = {"values": values, "ci": t_interval(values)}
  return summary


def summarize_sampled(sweep: dict, names: list[str], rows: list[dict]) -> dict:
  """Per method of `names` and k: t-intervals over seeds of pass@k, maj@k,
  their paired gains over the same seed's SFT, and maj@k's gain minus
  pass@k's; `rows` are sampled_eval.csv's."""
  value = {(r["name"], r["seed"], r["k"]): r for r in rows}
  seeds, ks = sweep["seeds"], evaluate_settings(sweep)["ks"]
  summary = {}
  for name in names:
    per_k = {}
    for k in ks:
      runs = [value[(name, s, k)] for s in seeds]
      sfts = [value[(SFT_NAME, s, k)] for s in seeds]
      gain = {
          m: [r[m] - b[m] for r, b in zip(runs, sfts)]
          for m in ("pass_at_k", "maj_at_k")
      }
      per_k[k] = {
          "pass": t_interval([r["pass_at_k"] for r in runs]),
          "maj": t_interval([r["maj_at_k"] for r in runs]),
          "pass_gain": t_interval(gain["pass_at_k"]),
          "maj_gain": t_interval(gain["maj_at_k"]),
          "maj_minus_pass_gain": t_interval(
              [m - p for m, p in zip(gain["maj_at_k"], gain["pass_at_k"])]
          ),
      }
    summary[name] = per_k
  return summary


# ---------------------------------------------------------------------------
# The markdown report.
# ---------------------------------------------------------------------------


def _pct(mean, lo=None, hi=None) -> str:
  if lo is None:
    return f"{100 * mean:.1f}"
  return f"{100 * mean:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def _label(name: str) -> str:
  return "SFT (no RL)" if name == SFT_NAME else name


def report(
    sweep: dict,
    summary: dict,
    reward: Optional[dict] = None,
    sampled: Optional[dict] = None,
) -> str:
  """The markdown report: greedy accuracy per policy method (the SFT
  baseline first); then the reward models and the sampled evaluation, when
  the sweep has them."""
  n = len(sweep["seeds"])
  lines = [
      "# Sweep report",
      "",
      f"Final held-out greedy accuracy (%), mean over {n} seed(s) "
      f"{sweep['seeds']}. Brackets: 95% Student t-interval over seeds "
      "(t quantile with n-1 degrees of freedom; none with one seed). "
      "Gain: the paired difference from the same seed's SFT policy, which "
      "every RL run starts from.",
      "",
      "| method | accuracy | gain over SFT | per seed |",
      "|---|---|---|---|",
  ]
  for name, s in summary.items():
    gain = "(baseline)" if name == SFT_NAME else _pct(*s["gain_ci"])
    per_seed = ", ".join(f"{100 * a:.1f}" for a in s["acc"])
    lines.append(
        f"| {_label(name)} | {_pct(*s['acc_ci'])} | {gain} | " f"{per_seed} |"
    )
  if reward:
    lines += ["", *_reward_model_table(reward)]
  if sampled:
    lines += ["", *_sampled_table(sweep, sampled)]
  if "findings" in sweep:
    lines += ["", *_findings_table(sweep, summary, sampled)]
  return "\n".join(lines) + "\n"


def verdict(ci: tuple) -> str:
  """A claim's verdict from the t-interval of its paired difference:
  "reproduces" above zero, "contradicted" below, else "undecided"."""
  _, lo, hi = ci
  if lo is None:
    return "undecided (one seed)"
  if lo > 0:
    return "reproduces"
  return "contradicted" if hi < 0 else "undecided"


def finding_difference(
    finding: dict, summary: dict, sampled: Optional[dict]
) -> tuple:
  """The t-interval over seeds of a finding's paired difference: run a's
  final accuracy minus run b's, or run a's maj@k gain over SFT minus its
  pass@k gain."""
  a = finding["a"]
  if a not in summary or finding.get("b", a) not in summary:
    raise ValueError(
        f"finding {finding['claim']!r}: {a!r} and "
        f"{finding.get('b')!r} must be policy runs"
    )
  if "k" in finding:
    if not sampled:
      raise ValueError(
          f"finding {finding['claim']!r} needs the sweep's "
          "sampled evaluation"
      )
    return sampled[a][finding["k"]]["maj_minus_pass_gain"]
  accs = summary[a]["acc"], summary[finding["b"]]["acc"]
  return t_interval([x - y for x, y in zip(*accs)])


def _findings_table(
    sweep: dict, summary: dict, sampled: Optional[dict]
) -> list[str]:
  n = len(sweep["seeds"])
  lines = [
      "## Findings",
      "",
      "Each claim's paired difference over seeds (points; a - b of the "
      "final greedy accuracy, or for maj@k claims a's maj@k gain over SFT "
      "minus its pass@k gain), mean and 95% t-interval. Verdict: "
      "reproduces when the interval lies above zero, contradicted when it "
      f"lies below, undecided otherwise ({n} seed{'s' * (n != 1)}).",
      "",
      "| claim | difference | verdict |",
      "|---|---|---|",
  ]
  for finding in sweep["findings"]:
    ci = finding_difference(finding, summary, sampled)
    lines.append(f"| {finding['claim']} | {_pct(*ci)} | {verdict(ci)} |")
  return lines


def _reward_model_table(reward: dict) -> list[str]:
  lines = [
      "## Reward models",
      "",
      "Held-out metrics (%) of each reward model's final evaluation, on "
      "samples of its seed's SFT policy: orm_* score the last token against "
      "the rule reward; step_* score each step against the true step "
      "labels; solution_* score the lowest step score against the rule "
      "reward. Mean over seeds, 95% t-interval in brackets.",
      "",
      "| reward model | metric | mean | per seed |",
      "|---|---|---|---|",
  ]
  for name, metrics in reward.items():
    for key, s in metrics.items():
      per_seed = ", ".join(f"{100 * v:.1f}" for v in s["values"])
      lines.append(f"| {name} | {key} | {_pct(*s['ci'])} | {per_seed} |")
  return lines


def _sampled_table(sweep: dict, sampled: dict) -> list[str]:
  settings = evaluate_settings(sweep)
  lines = [
      "## Sampled evaluation: pass@k and maj@k",
      "",
      f"pass@k and maj@k (%) on the first {settings['questions']} held-out "
      f"questions, {max(settings['ks'])} samples per question at temperature "
      f"{settings['temperature']:g}, seeded by the run's seed. Mean over "
      "seeds, 95% t-interval in brackets; gains are paired with the same "
      "seed's SFT policy. The last column is the maj@k gain minus the pass@k "
      "gain: positive where RL raises maj@k more than pass@k.",
      "",
      "| method | k | pass@k | maj@k | pass@k gain | maj@k gain | "
      "maj@k gain - pass@k gain |",
      "|---|---|---|---|---|---|---|",
  ]
  for name, per_k in sampled.items():
    for k, s in per_k.items():
      if name == SFT_NAME:
        gains = ["(baseline)"] * 3
      else:
        gains = [
            _pct(*s[g])
            for g in ("pass_gain", "maj_gain", "maj_minus_pass_gain")
        ]
      lines.append(
          f"| {_label(name)} | {k} | {_pct(*s['pass'])} | "
          f"{_pct(*s['maj'])} | {' | '.join(gains)} |"
      )
  return lines


# ---------------------------------------------------------------------------
# Plots.
# ---------------------------------------------------------------------------


def _curve(rows: list[dict], name: str, key: str):
  """Steps, mean over seeds and t-interval band of one method's `key`."""
  by_step = {}
  for row in rows:
    if row["name"] == name and row[key] != "":
      by_step.setdefault(row["step"], []).append(row[key])
  steps = sorted(by_step)
  return (np.array(steps),) + _bands([t_interval(by_step[s]) for s in steps])


def _bands(stats: list[tuple]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Means and band edges of t-intervals; a band of one seed is its mean."""
  mean = np.array([m for m, _, _ in stats])
  lo = np.array([m if l is None else l for m, l, _ in stats])
  hi = np.array([m if h is None else h for m, _, h in stats])
  return mean, lo, hi


def _pyplot():
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel

  return plt


def plot(rows: list[dict], names: list[str], key: str, label: str, path: str):
  """One line per method (mean over seeds) with its 95% band; the SFT run
  is a horizontal line (for response length: its gold training data)."""
  plt = _pyplot()
  from matplotlib import ticker  # pylint: disable=import-outside-toplevel

  fig, ax = plt.subplots(figsize=(7, 4.5))
  for name in names:
    steps, mean, lo, hi = _curve(rows, name, key)
    if not steps.size:
      continue
    if name == SFT_NAME:
      sft_label = (
          "SFT data (gold solutions)" if key in WINDOW_KEYS else "SFT (no RL)"
      )
      ax.axhline(mean[-1], color="black", linestyle="--", label=sft_label)
      ax.axhspan(lo[-1], hi[-1], color="black", alpha=0.08)
      continue
    (line,) = ax.plot(steps, mean, marker="o", markersize=3, label=name)
    ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2)
  ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  ax.set_xlabel("RL step")
  ax.set_ylabel(label)
  ax.set_title(f"{label}: mean over seeds, 95% t-interval band")
  ax.legend(fontsize="small")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_sampled(sampled: dict, path: str):
  """maj@k (solid) and pass@k (dashed) against k on a log2 axis, one colour
  per method, mean over seeds with a 95% t-interval band."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for i, (name, per_k) in enumerate(sampled.items()):
    ks = np.array(sorted(per_k))
    color = "black" if name == SFT_NAME else f"C{i}"
    for metric, style in (("maj", "-"), ("pass", "--")):
      mean, lo, hi = _bands([per_k[k][metric] for k in ks])
      ax.plot(
          ks,
          mean,
          linestyle=style,
          marker="o",
          markersize=3,
          color=color,
          label=f"{_label(name)} {metric}@k",
      )
      ax.fill_between(ks, lo, hi, color=color, alpha=0.12)
  ax.set_xscale("log", base=2)
  ax.set_xticks(ks, [str(k) for k in ks])
  ax.set_xlabel("k (samples per question)")
  ax.set_ylabel("held-out accuracy")
  ax.set_title(
      "maj@k (solid) and pass@k (dashed): mean over seeds, 95% "
      "t-interval band",
      fontsize="medium",
  )
  ax.legend(fontsize="small")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
