from django.core.management.base import BaseCommand

from agents.services import agents_seed


class Command(BaseCommand):
    help = "Creates the starter agents if there are none yet (safe to run on every start)."

    def handle(self, *args, **options):
        created = agents_seed()
        if created:
            self.stdout.write(f"Created agents: {', '.join(a.slug for a in created)}")
