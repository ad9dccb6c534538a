"""factory-boy factories for the domain rows. `.build()` when a test needs no database."""

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.db.models import Max

from agents.models import Agent, Run
from chat.models import Message, Thread


class UserFactory(factory.django.DjangoModelFactory):
    """An owner: Hearth has one user per installation, a superuser with no password."""

    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"owner{n}")
    is_staff = True
    is_superuser = True
    password = factory.LazyFunction(lambda: make_password(None))  # unusable, as owner_get() makes it


class AgentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Agent
        django_get_or_create = ("slug",)

    slug = factory.Sequence(lambda n: f"agent-{n}")
    name = factory.LazyAttribute(lambda o: o.slug.replace("-", " ").title())
    system_prompt = factory.LazyAttribute(lambda o: f"You are {o.name}.")
    temperature = 0.2
    max_tool_rounds = 5
    enabled_tools = factory.LazyFunction(lambda: ["calculator"])


class ThreadFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Thread

    owner = factory.SubFactory(UserFactory)
    default_agent = factory.SubFactory(AgentFactory)
    title = factory.Sequence(lambda n: f"Thread {n}")


def _next_turn(message) -> int:
    """A user message opens a new turn; anything else joins the thread's last one."""
    thread = message.thread
    last = thread.messages.aggregate(m=Max("turn"))["m"] if thread.pk else None
    if last is None:
        return 1
    return last + 1 if message.role == Message.Role.USER else last


class MessageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Message

    thread = factory.SubFactory(ThreadFactory)
    role = Message.Role.USER
    turn = factory.LazyAttribute(_next_turn)
    content = factory.Sequence(lambda n: f"message {n}")
    agent = factory.LazyAttribute(lambda o: o.thread.default_agent)


class RunFactory(factory.django.DjangoModelFactory):
    """A queued run answering a new user message in its thread."""

    class Meta:
        model = Run

    thread = factory.SubFactory(ThreadFactory)
    user_message = factory.SubFactory(MessageFactory, thread=factory.SelfAttribute("..thread"), role=Message.Role.USER)
    agent = factory.LazyAttribute(lambda o: o.thread.default_agent)
