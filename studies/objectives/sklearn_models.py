"""Real scikit-learn models on datasets that ship with scikit-learn (no download).

Kept small so a trial takes well under a second. Parameters missing from a
declared search space keep the defaults below; unknown ones are rejected.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna

from studies.config.errors import ConfigError
from studies.config.search_space import SearchSpace, validate_search_space
from studies.objectives.base import ObjectiveInfo


@functools.cache
def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.data / 16.0, data.target


@functools.cache
def breast_cancer() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_breast_cancer
    from sklearn.preprocessing import StandardScaler

    data = load_breast_cancer()
    return StandardScaler().fit_transform(data.data), data.target


def digits_svc(trial: optuna.Trial, params: dict[str, Any]) -> float:
    from sklearn.model_selection import cross_val_score
    from sklearn.svm import SVC

    x, y = digits()
    model = SVC(C=params.get("C", 1.0), gamma=params.get("gamma", "scale"))
    return float(cross_val_score(model, x, y, cv=3).mean())


def breast_cancer_forest(trial: optuna.Trial, params: dict[str, Any]) -> float:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import cross_val_score

    x, y = breast_cancer()
    model = RandomForestClassifier(
        n_estimators=params.get("n_estimators", 30),
        max_depth=params.get("max_depth"),
        max_features=params.get("max_features", "sqrt"),
        random_state=0,
        n_jobs=1,
    )
    return float(cross_val_score(model, x, y, cv=3).mean())


SGD_EPOCHS = 20


def digits_sgd(trial: optuna.Trial, params: dict[str, Any]) -> float:
    """Validation accuracy after each epoch of SGD goes to the pruner."""
    from sklearn.linear_model import SGDClassifier
    from sklearn.model_selection import train_test_split

    x, y = digits()
    x_train, x_valid, y_train, y_valid = train_test_split(x, y, test_size=0.25, random_state=0)
    model = SGDClassifier(
        loss=params.get("loss", "hinge"),
        alpha=params.get("alpha", 1e-4),
        learning_rate="constant" if "eta0" in params else "optimal",
        eta0=params.get("eta0", 0.01),
        random_state=trial.number,
    )
    classes = np.unique(y)
    rng = np.random.default_rng(trial.number)
    score = 0.0
    for epoch in range(SGD_EPOCHS):
        order = rng.permutation(len(x_train))
        model.partial_fit(x_train[order], y_train[order], classes=classes)
        score = float(model.score(x_valid, y_valid))
        trial.report(score, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch} with accuracy {score:.4f}")
    return score


def _known_params(name: str, space: SearchSpace) -> Callable[[SearchSpace], None]:
    def check(declared: SearchSpace) -> None:
        for param, spec in declared.items():
            if param not in space:
                known = ", ".join(space)
                raise ConfigError(
                    f"search_space.{param}", f"is not a parameter of {name} (it takes {known})"
                )
            if spec["type"] != space[param]["type"]:
                raise ConfigError(
                    f"search_space.{param}.type",
                    f"{name} takes {param} as a {space[param]['type']} parameter",
                )

    return check


def _info(name: str, function: Any, description: str, space: SearchSpace) -> ObjectiveInfo:
    space = validate_search_space(space)
    return ObjectiveInfo(
        name=name,
        description=description,
        directions=["maximize"],
        search_space=space,
        function=function,
        kind="sklearn",
        check_space=_known_params(name, space),
    )


def objectives() -> list[ObjectiveInfo]:
    return [
        _info(
            "digits_svc",
            digits_svc,
            "Support vector classifier on the digits dataset (1797 8x8 images); "
            "maximizes 3-fold cross-validated accuracy.",
            {
                "C": {"type": "float", "low": 1e-2, "high": 1e2, "log": True},
                "gamma": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
            },
        ),
        _info(
            "breast_cancer_forest",
            breast_cancer_forest,
            "Random forest on the breast cancer dataset (569 samples); maximizes 3-fold "
            "cross-validated accuracy.",
            {
                "n_estimators": {"type": "int", "low": 5, "high": 50},
                "max_depth": {"type": "int", "low": 1, "high": 12},
                "max_features": {"type": "categorical", "choices": ["sqrt", "log2"]},
            },
        ),
        _info(
            "digits_sgd",
            digits_sgd,
            f"Linear classifier trained by SGD (partial_fit) on digits for {SGD_EPOCHS} epochs; "
            "reports validation accuracy after every epoch, so pruners stop poor trials early.",
            {
                "loss": {"type": "categorical", "choices": ["hinge", "log_loss", "modified_huber"]},
                "alpha": {"type": "float", "low": 1e-6, "high": 1e-1, "log": True},
                "eta0": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
            },
        ),
    ]
