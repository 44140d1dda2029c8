"""Routes of the REST API, under /api/."""

from django.contrib.auth.decorators import login_required
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import SimpleRouter

from studies.api.audit import AuditViewSet
from studies.api.base import ID, not_found
from studies.api.jobs import JobViewSet, ObjectiveViewSet, StudyJobViewSet
from studies.api.remote_storage import storage_call
from studies.api.studies import StudyViewSet
from studies.api.teams import TeamViewSet
from studies.api.token_views import ApiTokenViewSet
from studies.api.tokens import ObtainAuthToken
from studies.api.trials import StudyTrialViewSet, TrialViewSet

router = SimpleRouter()
router.register("studies", StudyViewSet, basename="api-study")
router.register(
    rf"studies/(?P<study_id>{ID})/trials", StudyTrialViewSet, basename="api-study-trial"
)
router.register(rf"studies/(?P<study_id>{ID})/jobs", StudyJobViewSet, basename="api-study-job")
router.register("trials", TrialViewSet, basename="api-trial")
router.register("jobs", JobViewSet, basename="api-job")
router.register("objectives", ObjectiveViewSet, basename="api-objective")
router.register("tokens", ApiTokenViewSet, basename="api-token-own")
router.register("teams", TeamViewSet, basename="api-team")
router.register("audit", AuditViewSet, basename="api-audit")

urlpatterns = [
    path("auth/token/", ObtainAuthToken.as_view(), name="api-token"),
    re_path(
        rf"^studies/(?P<pk>{ID})/trials\.csv$",
        StudyViewSet.as_view({"get": "export_csv"}, pagination_class=None),
        name="api-study-trials-csv",
    ),
    re_path(
        rf"^studies/(?P<pk>{ID})/trials\.json$",
        StudyViewSet.as_view({"get": "export_json"}, pagination_class=None),
        name="api-study-trials-json",
    ),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # A page for people: signed out, it sends them to the login page. Its script
    # is a separate request (the split view), so the page needs no inline script.
    path(
        "docs/",
        login_required(SpectacularSwaggerSplitView.as_view(url_name="api-schema")),
        name="api-docs",
    ),
    # The remote Optuna storage (optuna_hub_client.HubStorage); PROTOCOL is in the path.
    # 1.0 clients speak v1, which v2 only extends: both are served.
    re_path(r"^storage/v[12]/(?P<method>[a-z_]{1,64})/$", storage_call, name="api-storage"),
    path("", include(router.urls)),
    re_path(r"^(?P<path>[\s\S]*)$", not_found),
]
