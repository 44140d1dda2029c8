"""The rights matrix (issue #12): every role, on every face, against every kind of study.

A case is one role (none, viewer, editor, admin, owner, staff), one study (a
team's or a personal one, private or internal) and one operation of one face:
the API, the pages, a chart's JSON, the exports, the remote storage, and the
lists and searches. What each should answer comes from the hub's rules, written
out again below as READERS and WRITERS, never from what the code answers: a
study one may not read is a 404 (and the same answer as a study that does not
exist), one that may be read but not changed is a 403, and a refused write
changes nothing.

Also: read-scope, team-limited and expired tokens, and removing a member, which
ends their access with their next request.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.http import HttpResponse
from django.utils import timezone
from rest_framework.test import APIClient, ForceAuthClientHandler

from studies.actions import do_create_study
from studies.config.study import clean_study_config
from studies.models import ApiToken, Membership, Study, Team, Trial
from studies.storage import optuna_study_for
from studies.teams import do_create_team, do_remove_member
from tests.conftest import token_for

pytestmark = pytest.mark.django_db

ROLES = ("none", "viewer", "editor", "admin", "owner", "staff")
STUDIES = ("team-private", "team-internal", "personal-private", "personal-internal")

# Team t: alice is its admin, vera a viewer, eddie an editor. olive made the
# team's studies (as an editor, since made a viewer: owning a team's study gives
# no right of its own) and owns the personal ones. nora is in no team; sam is staff.
USERNAMES = {
    "none": "nora",
    "viewer": "vera",
    "editor": "eddie",
    "admin": "alice",
    "owner": "olive",
    "staff": "sam",
}
TEAM_ROLES = {"vera": "viewer", "eddie": "editor", "olive": "viewer"}

# The rules: staff read and change everything; every signed-in user reads an
# internal study; a team's private study is its members'; a personal private
# study is its owner's. A team's editors and admins change its studies; only
# the owner changes a personal one.
READERS = {
    "team-private": {"viewer", "editor", "admin", "owner", "staff"},
    "team-internal": set(ROLES),
    "personal-private": {"owner", "staff"},
    "personal-internal": set(ROLES),
}
WRITERS = {
    "team-private": {"editor", "admin", "staff"},
    "team-internal": {"editor", "admin", "staff"},
    "personal-private": {"owner", "staff"},
    "personal-internal": {"owner", "staff"},
}

OK, FORBIDDEN, HIDDEN = "ok", "forbidden", "hidden"
N_TRIALS = 3
MISSING_ID = 987_654_321


def outcome(role: str, study: str, writes: bool) -> str:
    if role not in READERS[study]:
        return HIDDEN
    if writes and role not in WRITERS[study]:
        return FORBIDDEN
    return OK


# The world each case runs in

# A new test client loads the middleware on its first request, and WhiteNoise's
# scan of the static files then takes longer than the request: the clients share
# one handler (it keeps nothing between requests; cookies and credentials are
# each client's own).
HANDLER = ForceAuthClientHandler(enforce_csrf_checks=False)


def new_client() -> APIClient:
    client = APIClient()
    client.handler = HANDLER
    return client


class Actor:
    """One user's clients: an API token (API, exports, remote storage) and a browser session."""

    def __init__(self, user: Any, **token: Any) -> None:
        self.user, self.token = user, token

    @cached_property
    def key(self) -> str:
        if not self.token:
            return token_for(self.user)
        return ApiToken.issue(self.user, "matrix", **self.token)[1]

    @cached_property
    def api(self) -> APIClient:
        client = new_client()
        client.credentials(HTTP_AUTHORIZATION=f"Token {self.key}")
        return client

    @cached_property
    def browser(self) -> APIClient:
        client = new_client()
        client.force_login(self.user)
        return client

    def remote(self, method: str, **args: Any) -> HttpResponse:
        return new_client().post(
            f"/api/storage/v2/{method}/",
            data=json.dumps(args),
            content_type="application/json",
            headers={"Authorization": f"Token {self.key}"},
        )


@dataclass
class World:
    team: Team
    users: dict[str, Any]

    def actor(self, role: str, **token: Any) -> Actor:
        return Actor(self.users[USERNAMES[role]], **token)


@pytest.fixture
def world() -> World:
    # No passwords (hashing them would be most of the matrix's time), and the
    # members in one insert: do_add_member is tested in tests/test_teams.py.
    User = get_user_model()
    made = User.objects.bulk_create(
        [User(username=name, is_staff=name == "sam") for name in USERNAMES.values()]
    )
    users = {user.username: user for user in made}
    team = do_create_team(users["alice"], "t")
    Membership.objects.bulk_create(
        [Membership(team=team, user=users[name], role=role) for name, role in TEAM_ROLES.items()]
    )
    return World(team, users)


def make_study(world: World, kind: str, owner: str = "olive", team: Team | None = None) -> Study:
    placement, visibility = kind.split("-")
    team = (team or world.team) if placement == "team" else None
    config = clean_study_config(
        {"name": f"{kind}-sweep", "search_space": {"x": {"type": "float", "low": 0, "high": 10}}}
    )
    study = do_create_study(world.users[owner], {**config, "team": team, "visibility": visibility})
    optuna_study = optuna_study_for(study)
    for _ in range(N_TRIALS):
        trial = optuna_study.ask()
        optuna_study.tell(trial, trial.suggest_float("x", 0, 10))
    study.refresh_from_db()
    return study


def first_trial(study: Study) -> Trial:
    return study.trials.order_by("number").first()


def snapshot(study: Study) -> tuple[Any, ...]:
    """What a write could change; a refused one must leave it as it was."""
    row = Study.objects.filter(pk=study.pk).values_list("name", "user_attrs", "sampler").first()
    attrs = Trial.objects.filter(study_id=study.pk).values_list("user_attrs", flat=True)
    return row, Trial.objects.filter(study_id=study.pk).count(), sorted(map(str, attrs))


def stand_in() -> tuple[Study, Trial]:
    """A study and a trial that do not exist: a hidden one must answer as they do."""
    return Study(pk=MISSING_ID, name="no-such-sweep"), Trial(pk=MISSING_ID)


# Operations


Send = Callable[[Actor, Study, Trial], HttpResponse]


@dataclass(frozen=True)
class Op:
    face: str
    send: Send
    ok: int = 200  # the status when allowed; a refused write is 403, a hidden study 404
    writes: bool = False
    # Lists and searches answer 200 either way: this says whether the study is in it.
    lists: Callable[[HttpResponse, Study], bool] | None = None
    # For an allowed operation: what the user should see, or what the write did.
    shows: Callable[[HttpResponse, Study], bool] | None = None


def names_in_results(response: HttpResponse, study: Study) -> bool:
    return study.name in [s["name"] for s in response.json()["results"]]


def names_in_remote(response: HttpResponse, study: Study) -> bool:
    return study.name in [s["name"] for s in response.json()["result"]]


def name_on_page(response: HttpResponse, study: Study) -> bool:
    return study.name in response.content.decode()


def edit_form(study: Study) -> dict[str, str]:
    return {
        "name": study.name,
        "sampler": "random",
        "sampler_seed": "",
        "sampler_options": "",
        "pruner": "median",
        "pruner_options": "",
        "objective": "",
        "params-TOTAL_FORMS": "1",
        "params-INITIAL_FORMS": "1",
        "params-0-name": "x",
        "params-0-type": "float",
        "params-0-low": "0",
        "params-0-high": "10",
    }


def trials_listed(response: HttpResponse, study: Study) -> bool:
    return response.json()["count"] == N_TRIALS


def csv_rows(response: HttpResponse, study: Study) -> bool:
    text = b"".join(response.streaming_content).decode()
    return len(text.strip().splitlines()) == 1 + N_TRIALS


def json_rows(response: HttpResponse, study: Study) -> bool:
    return len(json.loads(b"".join(response.streaming_content))) == N_TRIALS


def study_gone(response: HttpResponse, study: Study) -> bool:
    return not Study.objects.filter(pk=study.pk).exists()


def attr_set(response: HttpResponse, study: Study) -> bool:
    study.refresh_from_db()
    return study.user_attrs.get("note") == "changed"


def one_more_trial(response: HttpResponse, study: Study) -> bool:
    return Trial.objects.filter(study_id=study.pk).count() == N_TRIALS + 1


def sampler_changed(response: HttpResponse, study: Study) -> bool:
    study.refresh_from_db()
    return study.sampler["type"] == "random"


OPS: dict[str, Op] = {
    # API
    "api-read": Op(
        "api",
        lambda a, s, t: a.api.get(f"/api/studies/{s.pk}/"),
        shows=lambda r, s: r.json()["name"] == s.name,
    ),
    "api-trials": Op(
        "api", lambda a, s, t: a.api.get(f"/api/studies/{s.pk}/trials/"), shows=trials_listed
    ),
    "api-change": Op(
        "api",
        lambda a, s, t: a.api.patch(
            f"/api/studies/{s.pk}/", {"user_attrs": {"note": "changed"}}, format="json"
        ),
        writes=True,
        shows=attr_set,
    ),
    "api-ask": Op(
        "api",
        lambda a, s, t: a.api.post(f"/api/studies/{s.pk}/ask/", {}, format="json"),
        ok=201,
        writes=True,
        shows=one_more_trial,
    ),
    "api-delete": Op(
        "api",
        lambda a, s, t: a.api.delete(f"/api/studies/{s.pk}/"),
        ok=204,
        writes=True,
        shows=study_gone,
    ),
    # Pages
    "page-study": Op(
        "page", lambda a, s, t: a.browser.get(f"/studies/{s.pk}/"), shows=name_on_page
    ),
    "page-trials": Op("page", lambda a, s, t: a.browser.get(f"/studies/{s.pk}/trials/")),
    "page-trial": Op("page", lambda a, s, t: a.browser.get(f"/trials/{t.pk}/")),
    "page-status": Op("page", lambda a, s, t: a.browser.get(f"/studies/{s.pk}/status.json")),
    "page-edit": Op("page", lambda a, s, t: a.browser.get(f"/studies/{s.pk}/edit/"), writes=True),
    "page-save": Op(
        "page",
        lambda a, s, t: a.browser.post(f"/studies/{s.pk}/edit/", edit_form(s)),
        ok=302,
        writes=True,
        shows=sampler_changed,
    ),
    "page-delete": Op(
        "page",
        lambda a, s, t: a.browser.post(f"/studies/{s.pk}/delete/"),
        ok=302,
        writes=True,
        shows=study_gone,
    ),
    # Chart JSON
    "chart-history": Op(
        "chart",
        lambda a, s, t: a.browser.get(f"/studies/{s.pk}/charts/history.json"),
        shows=lambda r, s: bool(r.json()["figure"]["data"]),
    ),
    # Exports
    "export-csv": Op(
        "export", lambda a, s, t: a.api.get(f"/api/studies/{s.pk}/trials.csv"), shows=csv_rows
    ),
    "export-json": Op(
        "export", lambda a, s, t: a.api.get(f"/api/studies/{s.pk}/trials.json"), shows=json_rows
    ),
    # Remote storage
    "remote-study-id": Op(
        "remote",
        lambda a, s, t: a.remote("get_study_id_from_name", study_name=s.name),
        shows=lambda r, s: r.json()["result"] == s.pk,
    ),
    "remote-trials": Op(
        "remote",
        lambda a, s, t: a.remote("get_trials", study_id=s.pk, after=0, ids=[]),
        shows=lambda r, s: len(r.json()["result"]["trials"]) == N_TRIALS,
    ),
    "remote-trial": Op("remote", lambda a, s, t: a.remote("get_trial", trial_id=t.pk)),
    "remote-set-attr": Op(
        "remote",
        lambda a, s, t: a.remote("set_study_user_attr", study_id=s.pk, key="note", value="changed"),
        writes=True,
        shows=attr_set,
    ),
    "remote-new-trial": Op(
        "remote",
        lambda a, s, t: a.remote("create_new_trial", study_id=s.pk),
        writes=True,
        shows=one_more_trial,
    ),
    "remote-delete": Op(
        "remote",
        lambda a, s, t: a.remote("delete_study", study_id=s.pk),
        writes=True,
        shows=study_gone,
    ),
    # Lists and searches
    "api-search": Op(
        "list",
        lambda a, s, t: a.api.get("/api/studies/", {"search": s.name}),
        lists=names_in_results,
    ),
    "api-list": Op("list", lambda a, s, t: a.api.get("/api/studies/"), lists=names_in_results),
    # The page repeats the query in its search box: search a part of the name.
    "page-search": Op(
        "list",
        lambda a, s, t: a.browser.get("/", {"q": s.name.rsplit("-", 1)[0]}),
        lists=name_on_page,
    ),
    "remote-all-studies": Op(
        "list", lambda a, s, t: a.remote("get_all_studies"), lists=names_in_remote
    ),
    "page-compare": Op(
        "list",
        lambda a, s, t: a.browser.get("/studies/compare/", {"ids": s.pk}),
        lists=name_on_page,
    ),
}
TOKEN_FACES = ("api", "export", "remote")


def normalized(response: HttpResponse, study: Study) -> tuple[int, str]:
    body = response.content.decode().replace(study.name, "NAME")
    return response.status_code, re.sub(r"\d+", "N", body)


def is_json(response: HttpResponse) -> bool:
    return response.get("Content-Type", "").startswith("application/json")


def check(op: Op, expected: str, actor: Actor, study: Study) -> None:
    """Send ``op`` as ``actor`` and check the answer is ``expected`` (ok, forbidden or hidden)."""
    trial = first_trial(study)
    before = snapshot(study)
    response = op.send(actor, study, trial)
    body = response.content[:500] if not response.streaming else b"(streamed)"
    if op.lists is not None:
        assert response.status_code == 200, body
        assert op.lists(response, study) == (expected == OK), body
        return
    status = {OK: op.ok, FORBIDDEN: 403, HIDDEN: 404}[expected]
    assert response.status_code == status, body
    if expected == OK:
        assert op.shows is None or op.shows(response, study), body
        return
    assert snapshot(study) == before, "a refused write changed the study"
    if expected == FORBIDDEN and op.face == "page":
        assert "Only the owner can do that" in response.content.decode()
    if expected == HIDDEN and is_json(response):
        missing = op.send(actor, *stand_in())
        assert normalized(response, study) == normalized(missing, stand_in()[0])
    elif expected == HIDDEN:
        assert study.name not in response.content.decode()


# The matrix


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("kind", STUDIES)
@pytest.mark.parametrize("role", ROLES)
def test_each_role_gets_what_the_rules_say_on_each_face(world, role, kind, op):
    study = make_study(world, kind)
    expected = outcome(role, kind, OPS[op].writes)
    check(OPS[op], expected, world.actor(role), study)


# Tokens narrow what their user may do

WRITE_OPS = [name for name, op in OPS.items() if op.writes and op.face in TOKEN_FACES]
READ_OPS = [name for name, op in OPS.items() if not op.writes and op.face in TOKEN_FACES]
LIST_OPS = ["api-search", "api-list", "remote-all-studies"]


@pytest.mark.parametrize("op", WRITE_OPS)
@pytest.mark.parametrize(
    ("role", "kind"), [("staff", "team-private"), ("owner", "personal-private")]
)
def test_a_read_token_reads_but_every_write_is_a_403(world, role, kind, op):
    study = make_study(world, kind)
    reader = world.actor(role, scope="read")
    check(OPS[op], FORBIDDEN, reader, study)
    check(OPS["api-read"], OK, reader, study)
    check(OPS["remote-trials"], OK, reader, study)


@pytest.mark.parametrize("op", WRITE_OPS)
def test_a_read_token_writing_to_a_hidden_study_learns_nothing(world, op):
    # The API refuses a read token's write before it looks the study up (403),
    # the remote storage after (404): either way, as for a study that does not exist.
    study = make_study(world, "personal-private")
    reader = world.actor("editor", scope="read")
    hidden = OPS[op].send(reader, study, first_trial(study))
    missing = OPS[op].send(reader, *stand_in())
    assert hidden.status_code in (403, 404)
    assert normalized(hidden, study) == normalized(missing, stand_in()[0])


@pytest.mark.parametrize("op", READ_OPS + LIST_OPS)
@pytest.mark.parametrize("kind", ["personal-internal", "other-team-internal"])
@pytest.mark.parametrize("role", ["editor", "staff"])
def test_a_team_token_sees_only_its_teams_studies(world, role, kind, op):
    other = do_create_team(world.users["olive"], "u")
    study = make_study(world, kind.removeprefix("other-"), team=other)
    own = make_study(world, "team-private")
    limited = world.actor(role, team=world.team)
    check(OPS[op], HIDDEN, limited, study)
    check(OPS[op], OK, limited, own)


@pytest.mark.parametrize("op", WRITE_OPS)
def test_a_team_token_writes_to_its_teams_studies_only(world, op):
    study = make_study(world, "personal-internal", owner="eddie")
    own = make_study(world, "team-internal")
    limited = world.actor("editor", team=world.team)
    check(OPS[op], HIDDEN, limited, study)
    check(OPS[op], OK, limited, own)


@pytest.mark.parametrize("op", READ_OPS + WRITE_OPS + LIST_OPS)
def test_an_expired_token_is_a_401(world, op):
    study = make_study(world, "team-internal")
    actor = world.actor("admin", expires_in_days=1)
    assert OPS["api-read"].send(actor, study, first_trial(study)).status_code == 200
    ApiToken.objects.filter(user=actor.user).update(expires_at=timezone.now() - timedelta(1))
    before = snapshot(study)
    response = OPS[op].send(actor, study, first_trial(study))
    assert response.status_code == 401, response.content[:300]
    assert snapshot(study) == before


# Removing a member


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("kind", ["team-private", "team-internal"])
@pytest.mark.parametrize("role", ["viewer", "editor", "owner"])
def test_removing_a_member_ends_their_access_with_their_next_request(world, role, kind, op):
    study = make_study(world, kind)
    member = world.actor(role)
    for warm_up in ("api-read", "remote-trials", "page-study"):
        check(OPS[warm_up], OK, member, study)  # the same clients, already in
    do_remove_member(world.team, world.users["alice"], USERNAMES[role])
    check(OPS[op], outcome("none", kind, OPS[op].writes), member, study)
