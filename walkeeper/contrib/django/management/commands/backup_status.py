"""manage.py backup_status: `walkeeper status`."""

from walkeeper.contrib.django.commands import WalkeeperCommand


class Command(WalkeeperCommand):
    help = ("What the dashboard shows: last backup and push, failures, stores and free "
            "space, archive lag (walkeeper status).")
    walkeeper_command = "status"

    def run(self, cfg, options) -> None:
        from walkeeper import commands

        self.write("status", commands.status(cfg), options)
