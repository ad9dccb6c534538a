"""The web pages. Thin: parse the request, call one service or selector, render.

The chat page is built from turn partials (templates/chat/_turn.html); the browser
re-fetches a single turn whenever its run moves on, so a live page and a reload show the same
server-rendered HTML. Messages themselves are sent over the websocket (chat.consumers).
"""

from __future__ import annotations

from django.contrib.auth import login, logout
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST, require_safe
from django_htmx.http import HttpResponseClientRedirect

from agents.models import Agent
from agents.services import agent_default
from gateway import services as gateway
from gateway.services import SubmissionRejected

from . import selectors, services
from .login import LoginLimited, login_token_attempt
from .models import Message, Thread
from .turns import turn_get, turn_list


def _own_thread(request: HttpRequest, thread_id: int) -> Thread:
    try:
        return selectors.thread_get(owner=request.user, thread_id=thread_id)
    except Thread.DoesNotExist:
        raise Http404("No such thread.") from None


def _chat_page(request: HttpRequest, *, thread: Thread | None, turns) -> HttpResponse:
    selected = thread.default_agent if thread and thread.default_agent else agent_default()
    return render(
        request,
        "chat/thread.html",
        {
            "thread": thread,
            "turns": turns,
            "agents": Agent.objects.order_by("-is_default", "name"),
            "selected_agent": selected,
            "threads": selectors.thread_list(owner=request.user),
        },
    )


@require_safe
@login_required
def home(request: HttpRequest) -> HttpResponse:
    newest = next(iter(selectors.thread_list(owner=request.user, limit=1)), None)
    if newest is None:
        return redirect("chat:new")
    return redirect("chat:thread", thread_id=newest.pk)


@require_safe
@login_required
def thread_new(request: HttpRequest) -> HttpResponse:
    # No thread yet: the first message sent over the socket creates it.
    return _chat_page(request, thread=None, turns=[])


@require_safe
@login_required
def thread_detail(request: HttpRequest, thread_id: int) -> HttpResponse:
    thread = _own_thread(request, thread_id)
    return _chat_page(request, thread=thread, turns=turn_list(thread=thread))


@require_safe
@login_required
def turn_detail(request: HttpRequest, thread_id: int, turn: int) -> HttpResponse:
    thread = _own_thread(request, thread_id)
    found = turn_get(thread=thread, number=turn)
    if found is None:
        raise Http404("No such turn.")
    return render(request, "chat/_turn.html", {"turn": found})


@require_safe
@login_required
def sidebar(request: HttpRequest) -> HttpResponse:
    active = request.GET.get("active", "")
    return render(
        request,
        "chat/_sidebar.html",
        {"threads": selectors.thread_list(owner=request.user), "active_id": int(active) if active.isascii() and active.isdigit() else None},
    )


@require_POST
@login_required
def message_fork(request: HttpRequest, message_id: int) -> HttpResponse:
    try:
        message = selectors.message_get(owner=request.user, message_id=message_id)
    except Message.DoesNotExist:
        raise Http404("No such message.") from None
    fork = services.thread_fork(thread=message.thread, at_message=message)
    url = reverse("chat:thread", args=[fork.pk])
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


@require_POST
@login_required
def run_retry(request: HttpRequest, run_id: int) -> HttpResponse:
    try:
        run = gateway.run_retry(owner=request.user, run_id=run_id)
    except SubmissionRejected as exc:
        # htmx does not swap a 409; chat.js shows the text as the error.
        return HttpResponse(str(exc), status=409, content_type="text/plain; charset=utf-8")
    if not request.htmx:
        return redirect("chat:thread", thread_id=run.thread_id)
    turn = turn_get(thread=run.thread, number=run.user_message.turn)
    return render(request, "chat/_turn.html", {"turn": turn})


@never_cache
@require_safe
def login_with_token(request: HttpRequest) -> HttpResponse:
    # REMOTE_ADDR only: daphne binds 127.0.0.1 and X-Forwarded-For is not trusted (see settings).
    try:
        user = login_token_attempt(request.GET.get("token"), client_ip=request.META.get("REMOTE_ADDR", ""))
    except LoginLimited as exc:
        response = render(request, "auth/login_limited.html", {"wait_minutes": exc.wait_minutes}, status=429)
        response.headers["Retry-After"] = str(exc.wait_seconds)
    else:
        response = _login_response(request, user)
    # The URL held a secret: never send it on as a Referer, not even to our own pages.
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def _login_response(request: HttpRequest, user) -> HttpResponse:
    if user is None:
        return render(request, "auth/login_failed.html", status=403)
    login(request, user)
    # Redirect at once so the used token leaves the address bar and the history.
    return redirect("chat:home")


@require_safe
def login_help(request: HttpRequest) -> HttpResponse:
    return render(request, "auth/login_help.html")


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    logout(request)
    return redirect("chat:login-help")


@require_safe
def admin_login(request: HttpRequest) -> HttpResponse:
    """Stands in for the admin's password form: this installation logs in by one-time link."""
    if request.user.is_authenticated and request.user.is_staff:
        next_url = request.GET.get("next", "")
        safe = url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()})
        return redirect(next_url if safe and next_url else "admin:index")
    return redirect("chat:login-help")
