"""manage.py verify_backups: `walkeeper verify-chain`."""

from walkeeper.contrib.django.commands import WalkeeperCommand


class Command(WalkeeperCommand):
    help = ("Read every stored object back and check it, and that the WAL chain has no gap "
            "(walkeeper verify-chain). Exit 1 when a problem is found.")
    walkeeper_command = "verify-chain"

    def add_arguments(self, parser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--store", metavar="NAME", help="Check only this store.")
        parser.add_argument("--quick", action="store_true",
                            help="Presence, sizes and trailers only; do not read the objects "
                                 "through.")

    def target(self, options) -> str:
        return options["store"] or ""

    def run(self, cfg, options) -> None:
        from walkeeper import commands

        report = commands.verify_chain(cfg, options["store"], options["quick"],
                                       self.progress(options))
        self.write("verify-chain", report, options)
        error = commands.verdict("verify-chain", report)
        if error is not None:
            raise error
