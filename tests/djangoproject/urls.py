from django.urls import include, path

urlpatterns = [
    path("backups/", include("walkeeper.contrib.django.urls")),
]
