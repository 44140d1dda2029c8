from django.contrib import admin
from django.urls import include, path

from studies.views import ops

urlpatterns = [
    # Operations (issue #13): health checks and Prometheus metrics, outside the app's pages.
    path("healthz", ops.healthz, name="healthz"),
    path("readyz", ops.readyz, name="readyz"),
    path("metrics", ops.metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/", include("studies.api.urls")),
    path("", include("studies.urls")),
]
