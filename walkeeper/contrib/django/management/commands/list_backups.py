"""manage.py list_backups: `walkeeper list`."""

from walkeeper.contrib.django.commands import WalkeeperCommand


class Command(WalkeeperCommand):
    help = "Base backups, dumps, and WAL ranges per timeline with any gaps (walkeeper list)."
    walkeeper_command = "list"

    def run(self, cfg, options) -> None:
        from walkeeper import commands

        self.write("list", commands.list_(cfg), options)
