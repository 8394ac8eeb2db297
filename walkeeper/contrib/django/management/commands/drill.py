"""manage.py drill: `walkeeper drill`, the monthly test restore."""

from walkeeper.contrib.django.commands import WalkeeperCommand


class Command(WalkeeperCommand):
    help = ("Restore test: restore the newest base backup into a scratch cluster, replay the "
            "archive, check every database, remove it (walkeeper drill).")
    walkeeper_command = "drill"

    def add_arguments(self, parser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--keep", action="store_true",
                            help="Keep the restored copy (its path is printed).")

    def run(self, cfg, options) -> None:
        from walkeeper import commands

        self.write("drill", commands.drill(cfg, options["keep"]), options)
