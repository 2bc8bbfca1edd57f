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
