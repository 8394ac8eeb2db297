from django.apps import AppConfig


class WalkeeperConfig(AppConfig):
    name = "walkeeper.contrib.django"
    label = "walkeeper"
    verbose_name = "walkeeper backups"

    def ready(self) -> None:
        from walkeeper.contrib.django import checks  # noqa: F401  (registers the checks)
