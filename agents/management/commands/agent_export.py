from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from agents.models import Agent
from agents.portability import agent_export_text


class Command(BaseCommand):
    help = "Writes an agent's settings, tools and skills as JSON or YAML (to stdout unless --output)."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--format", choices=["json", "yaml"], default="json")
        parser.add_argument("--output", "-o", help="File to write instead of stdout.")

    def handle(self, *args, slug, output, **options):
        agent = Agent.objects.filter(slug=slug).first()
        if agent is None:
            known = ", ".join(Agent.objects.order_by("slug").values_list("slug", flat=True)) or "none"
            raise CommandError(f"No agent with the slug {slug!r}. Agents: {known}.")
        text = agent_export_text(agent=agent, fmt=options["format"])
        if output:
            Path(output).write_text(text, encoding="utf-8")
            self.stderr.write(f"Wrote {agent.slug} to {output}")
        else:
            self.stdout.write(text, ending="")
