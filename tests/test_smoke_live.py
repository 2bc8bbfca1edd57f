"""The live server fixture itself: the launcher serves the API against the test database."""
from __future__ import annotations


def test_live_server_sees_accounts_created_by_the_test(live, make_user):
    """GIVEN a user created in the test WHEN it calls /me on the live server THEN it is recognised."""
    alice = make_user("alice")
    with live.client(alice.token) as api:
        response = api.get("/api/v1/me")
    assert response.status_code == 200
    assert response.json()["username"] == "alice"
    assert response.headers["X-Request-Id"]
