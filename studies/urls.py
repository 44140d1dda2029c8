from django.urls import path

from studies import views

app_name = "studies"

urlpatterns = [
    path("", views.study_list, name="study_list"),
    path("studies/new/", views.study_new, name="study_new"),
    path("studies/compare/", views.compare, name="compare"),
    path("studies/<int:pk>/", views.study_detail, name="study"),
    path("studies/<int:pk>/edit/", views.study_edit, name="study_edit"),
    path("studies/<int:pk>/delete/", views.study_delete, name="study_delete"),
    path("studies/<int:pk>/run/", views.study_run, name="study_run"),
    path("studies/<int:pk>/status.json", views.study_status, name="study_status"),
    path("studies/<int:pk>/trials/", views.study_trials, name="study_trials"),
    path("studies/<int:pk>/charts/<slug:name>.json", views.chart, name="chart"),
    path("jobs/<int:pk>/cancel/", views.job_cancel, name="job_cancel"),
    path("trials/<int:pk>/", views.trial_detail, name="trial"),
    path("vendor/plotly-<str:version>.min.js", views.plotly_js, name="plotly_js"),
]
