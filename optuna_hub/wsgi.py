import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "optuna_hub.settings")

application = get_wsgi_application()

# Import every view while the worker starts, not during its first request (the
# charts import SciPy's and Optuna's importance code: about a second).
from django.urls import get_resolver  # noqa: E402

get_resolver().url_patterns  # noqa: B018
