from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

urlpatterns = [
    path("api/v1/", include("workspace.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("admin/", admin.site.urls),
    path("", include("workspace.urls")),
]

handler400 = "workspace.api.errors.handler400"
handler403 = "workspace.api.errors.handler403"
handler404 = "workspace.api.errors.handler404"
handler500 = "workspace.api.errors.handler500"
