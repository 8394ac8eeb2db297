"""manage.py list_backups: `walkeeper list`."""

from walkeeper.contrib.django.commands import WalkeeperCommand


class Command(WalkeeperCommand):
    help = "Base backups, dumps, and WAL ranges per timeline with any gaps (walkeeper list)."
    walkeeper_command = "list"

    def run(self, cfg, options) -> None:
        from walkeeper.reports import list as listing

        data = listing.list_data(cfg)
        if options["as_json"]:
            self.emit_json(data)
        else:
            self.stdout.write(listing.render_text(data), ending="")
