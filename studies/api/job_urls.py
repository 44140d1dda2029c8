"""Routes of the jobs and objectives API (studies/api/jobs.py), under /api/."""

from django.urls import path, re_path

from studies.api.jobs import JobViewSet, ObjectiveViewSet, StudyJobViewSet
from studies.api.views import ID

urlpatterns = [
    path("objectives/", ObjectiveViewSet.as_view({"get": "list"}), name="api-objectives"),
    re_path(
        rf"^studies/(?P<study_id>{ID})/jobs/$",
        StudyJobViewSet.as_view({"get": "list", "post": "create"}),
        name="api-study-jobs",
    ),
    re_path(rf"^jobs/(?P<pk>{ID})/$", JobViewSet.as_view({"get": "retrieve"}), name="api-job"),
    re_path(
        rf"^jobs/(?P<pk>{ID})/cancel/$",
        JobViewSet.as_view({"post": "cancel"}),
        name="api-job-cancel",
    ),
]
