from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from studies.api.views import (
    ID,
    ObtainAuthToken,
    StudyTrialViewSet,
    StudyViewSet,
    TrialViewSet,
    not_found,
)

router = SimpleRouter()
router.register("studies", StudyViewSet, basename="api-study")
router.register(
    rf"studies/(?P<study_id>{ID})/trials", StudyTrialViewSet, basename="api-study-trial"
)
router.register("trials", TrialViewSet, basename="api-trial")

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
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("", include(router.urls)),
    path("", include("studies.api.job_urls")),
    re_path(r"^(?P<path>[\s\S]*)$", not_found),
]
