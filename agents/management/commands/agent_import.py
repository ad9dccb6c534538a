import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from agents.portability import AgentImportError, agents_import


class Command(BaseCommand):
    help = (
        "Creates or updates (by slug) the agents in a JSON or YAML file written by agent_export or the "
        "admin's export action. Nothing is changed if anything in the file is wrong."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="The file to read, or - for stdin.")

    def handle(self, *args, file, **options):
        try:
            text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"Could not read {file}: {exc}") from None
        try:
            agents = agents_import(text=text)
        except AgentImportError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Imported: {', '.join(a.slug for a in agents)}")
