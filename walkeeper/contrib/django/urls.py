"""path("backups/", include("walkeeper.contrib.django.urls")): the dashboard at
backups/ and its JSON at backups/status.json (names walkeeper:dashboard and
walkeeper:status-json)."""

from django.urls import path

from walkeeper.contrib.django import views

app_name = "walkeeper"
urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("status.json", views.status_json, name="status-json"),
]
