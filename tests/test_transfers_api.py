"""Ownership transfers (API.md "Ownership transfer"): offer, accept, cancel, expiry, strangers, and the
sign-up page behind the accept link."""
from __future__ import annotations

import hashlib
import re
import time
from datetime import timedelta
from urllib.parse import urlparse

import httpx
import pytest

from tests.helpers import assert_error, create_workspace


@pytest.fixture
def ws(api):
    return create_workspace(api, "deliverable")


@pytest.fixture
def client_account(make_user):
    return make_user("carla", email="carla@client.example")


def offer(api: httpx.Client, ws: str, to: str, **headers: str) -> dict:
    response = api.post(f"/api/v1/workspaces/{ws}/transfers", json={"to": to, "message": "All yours."},
                        headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def roles(api: httpx.Client, ws: str) -> dict[str, str]:
    return {m["username"]: m["role"] for m in api.get(f"/api/v1/workspaces/{ws}/members").json()["results"]}


def test_recipient_accepts_and_becomes_owner(live, api, ws, owner, client_account):
    """GIVEN the owner offers the workspace to carla's email WHEN carla accepts with the link's token THEN
    she is owner, olga is admin, the workspace records where it came from, and the events say so; only the
    token's sha256 is stored."""
    from workspace.models import Transfer

    made = offer(api, ws, "carla@client.example")
    assert made["status"] == "pending" and made["to_user"] == "carla"
    assert made["accept_url"].startswith(live.url + f"/transfers/{made['id']}/accept?token=")
    assert Transfer.objects.get(pk=made["id"]).token_digest == hashlib.sha256(made["token"].encode()).hexdigest()
    with live.client(client_account.token) as carla:
        assert carla.get(f"/api/v1/transfers/{made['id']}").json()["status"] == "pending"
        accepted = carla.post(f"/api/v1/transfers/{made['id']}/accept", json={"token": made["token"]})
        assert accepted.status_code == 200 and accepted.json()["status"] == "accepted"
        workspace = carla.get(f"/api/v1/workspaces/{ws}").json()
    assert workspace["role"] == "owner" and workspace["transferred_from"] == "olga" and workspace["transferred_at"]
    assert roles(api, ws) == {"olga": "admin", "carla": "owner"}
    types = [e["type"] for e in api.get(f"/api/v1/workspaces/{ws}/events", params={
        "type": "transfer.offered,transfer.accepted,workspace.transferred"}).json()["results"]]
    assert types == ["transfer.offered", "transfer.accepted", "workspace.transferred"]
    with live.client(client_account.token) as carla:
        assert_error(carla.post(f"/api/v1/transfers/{made['id']}/accept", json={"token": made["token"]}), 409,
                     "already_accepted")
    # olga is no longer the owner: she cannot offer it again.
    assert_error(api.post(f"/api/v1/workspaces/{ws}/transfers", json={"to": "olga"}), 403, "owner_only")


def test_stranger_is_refused_even_with_the_token(live, api, ws, client_account, make_user):
    """GIVEN an offer to carla WHEN someone else reads, accepts or cancels it, even holding the token, or
    opens the accept page THEN 404, and the offer is still pending."""
    made = offer(api, ws, "carla")
    stranger = make_user("mallory")
    with live.client(stranger.token) as mallory:
        assert_error(mallory.get(f"/api/v1/transfers/{made['id']}"), 404, "not_found")
        assert_error(mallory.post(f"/api/v1/transfers/{made['id']}/accept", json={"token": made["token"]}), 404)
        assert_error(mallory.post(f"/api/v1/transfers/{made['id']}/cancel"), 404)
        assert_error(mallory.get(f"/api/v1/workspaces/{ws}"), 404)
    with live.client(client_account.token) as carla:
        assert_error(carla.post(f"/api/v1/transfers/{made['id']}/accept", json={"token": "wrong"}), 404)
    page = httpx.get(f"{live.url}/transfers/{made['id']}/accept", params={"token": "wrong"})
    assert page.status_code == 404
    assert api.get(f"/api/v1/transfers/{made['id']}").json()["status"] == "pending"


def test_owner_cancels_and_the_offer_is_dead(live, api, ws, client_account):
    """GIVEN a pending offer WHEN the owner cancels it THEN accepting is 410, a second offer is possible,
    and while it is pending a third is 409."""
    made = offer(api, ws, "carla")
    cancelled = api.post(f"/api/v1/transfers/{made['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    with live.client(client_account.token) as carla:
        assert_error(carla.post(f"/api/v1/transfers/{made['id']}/accept", json={"token": made["token"]}), 410,
                     "transfer_cancelled")
    again = offer(api, ws, "carla")
    assert_error(api.post(f"/api/v1/workspaces/{ws}/transfers", json={"to": "carla"}), 409, "transfer_pending")
    with live.client(client_account.token) as carla:  # the recipient may decline
        declined = carla.post(f"/api/v1/transfers/{again['id']}/cancel")
        assert declined.status_code == 200 and declined.json()["status"] == "cancelled"
    assert roles(api, ws) == {"olga": "owner"}
    events = api.get(f"/api/v1/workspaces/{ws}/events", params={"type": "transfer.cancelled"}).json()["results"]
    assert [e["data"]["declined"] for e in events] == [False, True]


def test_offer_expires(live, api, ws, client_account):
    """GIVEN a pending offer whose time has passed WHEN the sweeper runs THEN it is expired with a
    transfer.expired event, and accepting it is 410 transfer_expired."""
    from django.utils import timezone

    from workspace.models import Transfer

    made = offer(api, ws, "carla")
    assert made["expires_at"] > made["created_at"]
    Transfer.objects.filter(pk=made["id"]).update(expires_at=timezone.now() - timedelta(seconds=1))
    deadline = time.monotonic() + 10
    while api.get(f"/api/v1/transfers/{made['id']}").json()["status"] != "expired" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert api.get(f"/api/v1/transfers/{made['id']}").json()["status"] == "expired"
    assert [e["type"] for e in api.get(f"/api/v1/workspaces/{ws}/events",
                                       params={"type": "transfer.expired"}).json()["results"]] == ["transfer.expired"]
    with live.client(client_account.token) as carla:
        assert_error(carla.post(f"/api/v1/transfers/{made['id']}/accept", json={"token": made["token"]}), 410,
                     "transfer_expired")
    assert roles(api, ws) == {"olga": "owner"}


def test_expiry_is_enforced_at_accept_time_without_the_sweeper(db, make_user):
    """GIVEN an offer past its time that no sweep has seen (in-process) WHEN the recipient accepts THEN
    410 transfer_expired, and the expiry is recorded."""
    from django.utils import timezone

    from workspace.access import workspace_for
    from workspace.errors import Gone
    from workspace.models import Transfer
    from workspace.services.transfers import transfer_accept, transfer_offer
    from workspace.services.workspaces import workspace_create

    owner, carla = make_user("olga"), make_user("carla")
    ws = workspace_create(user=owner.user, name="w", intelligence=False)
    made = transfer_offer(access=workspace_for(owner.user, ws.id), to="carla")
    Transfer.objects.filter(pk=made.transfer.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    with pytest.raises(Gone) as refused:
        transfer_accept(user=carla.user, transfer_id=made.transfer.pk, token=made.token)
    assert refused.value.code == "transfer_expired"
    assert Transfer.objects.get(pk=made.transfer.pk).status == "expired"


def test_only_the_owner_offers_and_bad_recipients_are_400(live, api, ws, make_user):
    """GIVEN an admin WHEN it offers the workspace THEN 403; the owner offering to nobody, to itself or to a
    malformed address gets 400."""
    admin = make_user("adam")
    api.put(f"/api/v1/workspaces/{ws}/members/adam", json={"role": "admin"})
    with live.client(admin.token) as adam:
        assert_error(adam.post(f"/api/v1/workspaces/{ws}/transfers", json={"to": "olga"}), 403, "owner_only")
    assert_error(api.post(f"/api/v1/workspaces/{ws}/transfers", json={"to": "nobody-here"}), 400, "unknown_user")
    assert_error(api.post(f"/api/v1/workspaces/{ws}/transfers", json={"to": "olga"}), 400, "self_transfer")
    assert_error(api.post(f"/api/v1/workspaces/{ws}/transfers", json={"to": "a@b@c"}), 400)
    assert_error(api.post(f"/api/v1/workspaces/{ws}/transfers", json={}), 400)
    assert api.get(f"/api/v1/workspaces/{ws}/transfers").json()["results"] == []


def test_idempotent_offer_never_stores_the_token(api, ws, client_account):
    """GIVEN an offer made with an Idempotency-Key WHEN it is retried THEN the same transfer comes back, and
    neither the transfer row nor the stored idempotent answer holds the token itself."""
    from workspace.models import IdempotencyRecord

    first = offer(api, ws, "carla", **{"Idempotency-Key": "offer-1"})
    retry = api.post(f"/api/v1/workspaces/{ws}/transfers", json={"to": "carla", "message": "All yours."},
                     headers={"Idempotency-Key": "offer-1"})
    assert retry.status_code == 201 and retry.json()["id"] == first["id"] and retry.json()["token"] is None
    stored = IdempotencyRecord.objects.get(key="offer-1")
    assert first["token"] not in str(stored.response) and stored.response["token"] is None


def _csrf(page: httpx.Response) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert match, page.text[:500]
    return match.group(1)


def test_email_recipient_signs_up_from_the_link_then_accepts(live, api, ws):
    """GIVEN an offer to an address with no account WHEN its recipient opens the link, signs up with the
    form and accepts THEN the new account owns the workspace and the previous owner is admin."""
    from workspace.models import Membership, Workspace

    made = offer(api, ws, "newcomer@client.example")
    assert made["to_user"] is None
    with httpx.Client(base_url=live.url, follow_redirects=False) as browser:
        path = urlparse(made["accept_url"])
        link = f"{path.path}?{path.query}"
        page = browser.get(link)
        assert page.status_code == 200 and "Create an account" in page.text and "deliverable" in page.text
        mismatch = browser.post(link, data={"csrfmiddlewaretoken": _csrf(page), "token": made["token"],
                                            "action": "signup", "username": "nina", "password": "a long passphrase",
                                            "password2": "something else"})
        assert mismatch.status_code == 400 and "differ" in mismatch.text
        signed = browser.post(link, data={"csrfmiddlewaretoken": _csrf(mismatch), "token": made["token"],
                                          "action": "signup", "username": "nina", "password": "a long passphrase",
                                          "password2": "a long passphrase"})
        assert signed.status_code == 302
        accept_page = browser.get(link)
        assert accept_page.status_code == 200 and "Accept ownership" in accept_page.text
        accepted = browser.post(link, data={"csrfmiddlewaretoken": _csrf(accept_page), "token": made["token"],
                                            "action": "accept"})
        assert accepted.status_code == 302 and accepted.headers["Location"] == f"/w/{ws}/"
        done_page = browser.get(link)
        assert done_page.status_code == 409 and "already been accepted" in done_page.text
    owners = dict(Membership.objects.filter(workspace_id=ws).values_list("user__username", "role"))
    assert owners == {"nina": "owner", "olga": "admin"}
    assert Workspace.objects.get(pk=ws).transferred_from.username == "olga"
