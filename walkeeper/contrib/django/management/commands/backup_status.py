"""manage.py backup_status: `walkeeper status`."""

from walkeeper.contrib.django.commands import WalkeeperCommand


class Command(WalkeeperCommand):
    help = ("What the dashboard shows: last backup and push, failures, stores and free "
            "space, archive lag (walkeeper status).")
    walkeeper_command = "status"

    def run(self, cfg, options) -> None:
        from walkeeper.reports import status
        from walkeeper.reports.writers import WRITERS

        data = status.collect(cfg)
        self.stdout.write(WRITERS["json" if options["as_json"] else "text"](data), ending="")
