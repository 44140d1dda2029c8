"""The cost of seeding each trial: a seeded sampler with and without TrialSeededSampler.

    .venv/bin/python benchmarks/seeded_sampler.py [--trials 500] [--rounds 3]

A seeded hub study's sampler is reseeded before every trial from (seed, trial
number), so every process asks alike (studies/config/seeding.py). This runs, in
one process and in alternating rounds, N trials of the same 3-parameter
objective on InMemoryStorage with the plain seeded sampler and with it wrapped,
for TPE and random, and prints ms/trial and the ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optuna  # noqa: E402

from studies.config.seeding import TrialSeededSampler  # noqa: E402


def objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -10, 10)
    n = trial.suggest_int("n", 1, 100)
    kind = trial.suggest_categorical("kind", ["a", "b", "c"])
    return x**2 + n / 100 + {"a": 0.0, "b": 0.5, "c": 1.0}[kind]


def ms_per_trial(sampler: optuna.samplers.BaseSampler, n_trials: int) -> float:
    study = optuna.create_study(sampler=sampler)
    start = time.perf_counter()
    study.optimize(objective, n_trials=n_trials)
    return (time.perf_counter() - start) * 1000 / n_trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    samplers = {"TPE": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}
    print(f"{args.trials} trials per run, {args.rounds} rounds, Optuna {optuna.__version__}")
    print(f"{'sampler':8} {'plain ms/trial':>15} {'per-trial seeded':>17} {'ratio':>7}")
    for name, cls in samplers.items():
        plain = seeded = 0.0
        for seed in range(args.rounds):
            plain += ms_per_trial(cls(seed=seed), args.trials)
            seeded += ms_per_trial(TrialSeededSampler(cls(seed=seed), seed), args.trials)
        plain, seeded = plain / args.rounds, seeded / args.rounds
        print(f"{name:8} {plain:15.3f} {seeded:17.3f} {seeded / plain:6.2f}x")


if __name__ == "__main__":
    main()
