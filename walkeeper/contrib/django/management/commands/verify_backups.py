"""manage.py verify_backups: `walkeeper verify-chain`."""

from walkeeper.contrib.django.commands import WalkeeperCommand
from walkeeper.errors import OperationFailed


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
        from walkeeper.maintenance import verify_chain as verify

        report = verify.verify_chain(cfg, options["store"], options["quick"],
                                     self.progress(options))
        if options["as_json"]:
            self.emit_json(report.to_json())
        else:
            self.stdout.write(verify.render_text(report), ending="")
        if not report.ok:
            kinds: dict[str, int] = {}
            for p in report.problems:
                kinds[p.kind] = kinds.get(p.kind, 0) + 1
            raise OperationFailed(f"{len(report.problems)} problem(s) found ("
                                  + ", ".join(f"{n} {k}" for k, n in kinds.items()) + ")")
