from django.urls import path

from studies.views import assets, charts, jobs, studies, study_page, teams, tokens, trials

app_name = "studies"

urlpatterns = [
    path("", studies.study_list, name="study_list"),
    path("studies/new/", studies.study_new, name="study_new"),
    path("studies/compare/", charts.compare, name="compare"),
    path("studies/<int:pk>/", study_page.study_detail, name="study"),
    path("studies/<int:pk>/edit/", studies.study_edit, name="study_edit"),
    path("studies/<int:pk>/delete/", studies.study_delete, name="study_delete"),
    path("studies/<int:pk>/run/", jobs.study_run, name="study_run"),
    path("studies/<int:pk>/status.json", study_page.study_status, name="study_status"),
    path("studies/<int:pk>/trials/", study_page.study_trials, name="study_trials"),
    path("studies/<int:pk>/charts/<slug:name>.json", charts.chart, name="chart"),
    path("jobs/<int:pk>/cancel/", jobs.job_cancel, name="job_cancel"),
    path("trials/<int:pk>/", trials.trial_detail, name="trial"),
    path("tokens/", tokens.token_list, name="tokens"),
    path("tokens/<int:pk>/revoke/", tokens.token_revoke, name="token_revoke"),
    path("teams/", teams.team_list, name="teams"),
    path("teams/<int:pk>/", teams.team_detail, name="team"),
    path("teams/<int:pk>/members/add/", teams.member_add, name="member_add"),
    path("teams/<int:pk>/members/<str:username>/role/", teams.member_role, name="member_role"),
    path(
        "teams/<int:pk>/members/<str:username>/remove/", teams.member_remove, name="member_remove"
    ),
    path("client/<str:filename>", assets.client_wheel, name="client_wheel"),
    path("vendor/plotly-<str:version>.min.js", assets.plotly_js, name="plotly_js"),
]
