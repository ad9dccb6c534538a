"""Doing a worker's job from test code: the tasks on the real django-q2 queue, run in order."""

from importlib import import_module

from django_q.signing import SignedPackage


def work_off(queue) -> list[str]:
    """Runs every queued task the way a worker does: by its dotted path, with its args.
    Returns the dotted paths it ran."""
    done = []
    while queue.queue_size():
        task = SignedPackage.loads(queue.dequeue()[0][1])
        module, name = task["func"].rsplit(".", 1)
        getattr(import_module(module), name)(*task["args"])
        done.append(task["func"])
    return done
