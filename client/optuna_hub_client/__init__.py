"""Optuna Hub's client: ``HubStorage`` makes a hub study an Optuna storage.

import optuna
from optuna_hub_client import HubStorage

storage = HubStorage("https://hub.example.org", token="...")  # or OPTUNA_HUB_URL / _TOKEN
study = optuna.load_study(study_name="resnet-lr", storage=storage)
study.optimize(objective, n_trials=50)
"""

from optuna_hub_client._http import HubError, HubPermissionError, HubRequestError
from optuna_hub_client.storage import HubStorage

__version__ = "1.1.0"
__all__ = ["HubError", "HubPermissionError", "HubRequestError", "HubStorage", "__version__"]
