import signal
import threading

from django.core.management.base import BaseCommand
from django.db import connections


class Command(BaseCommand):
    help = (
        "Runs the agents' workers: django-q2's qcluster, with the model client loaded first. "
        "SIGTERM or Ctrl-C stops it within seconds; runs in flight finish or go back to the queue."
    )

    def handle(self, *args, **options):
        from django_q.cluster import Cluster
        from django_q.signals import post_spawn
        from django_q.tasks import async_task

        # Loaded in the parent before qcluster forks its workers, so they share these pages
        # and no worker's first answer waits ~1 s for the openai SDK to import.
        import agents.openai_client  # noqa: F401
        from gateway import shutdown, tasks

        # What `manage.py qcluster` does, plus the stop flag its worker processes watch
        # (gateway/shutdown.py explains why qcluster alone cannot stop a run in time).
        shutdown.stop_flag_create()
        post_spawn.connect(shutdown.process_started, dispatch_uid="gateway.shutdown")
        cluster = Cluster()  # installs its own SIGTERM/SIGINT handler: ours wraps it
        stopping = threading.Event()

        def stop(signum, frame):
            shutdown.stop_request()  # the worker processes first: they have runs to hand back
            if not stopping.is_set():
                stopping.set()
                # Then qcluster's own stop, which waits for them, in a thread: a SIGTERM sent
                # to the whole process group (systemd's default) has already killed its
                # sentinel (which keeps SIGTERM's default action), and setting the stop event
                # the dead sentinel was waiting on never returns. The loop below ends as soon
                # as the sentinel is gone either way.
                threading.Thread(target=cluster.stop, name="qcluster-stop", daemon=True).start()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        # Whatever the last stop or crash left (expired leases, queued runs without a task)
        # is taken up by the first free worker, not in this process: it must not start the
        # event sender's thread or hold a database connection when qcluster forks.
        async_task("gateway.tasks.threads_wake", task_name="threads-wake", group="runs")
        connections.close_all()
        cluster.start()
        # qcluster would leave the waiting to multiprocessing's exit handler; waiting here
        # (in short steps, so the signal handler runs promptly) lets the stop be followed up.
        while cluster.sentinel.is_alive():
            cluster.sentinel.join(0.5)
        # The cluster has stopped, so no run is in flight here any more. Wake the threads
        # whose task this worker had taken but not started, for any other worker (or the
        # next start), and take back the runs that were cut loose. Best effort: the next
        # start does it again.
        try:
            tasks.threads_wake()
            from gateway.events import sender

            sender().flush()
        except Exception as exc:  # Redis or the database already gone: the next start sees to it
            self.stderr.write(f"could not wake queued threads after the stop: {exc}")
