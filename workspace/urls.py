"""Browser pages."""
from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from workspace import views

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", views.workspace_list, name="home"),
    path("w/<str:ws>/", views.workspace_detail, name="workspace"),
]

# The page behind an ownership transfer's accept link (issue 4).
from workspace.api.transfers import transfer_accept_page  # noqa: E402

urlpatterns += [
    path("transfers/<str:transfer_id>/accept", transfer_accept_page, name="transfer_accept"),
]
