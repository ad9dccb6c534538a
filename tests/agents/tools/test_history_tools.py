"""list_threads, search_messages and read_thread: the owner's own history, nobody else's."""

import json
from pathlib import Path

import pytest

from agents.tools import ToolScope, ToolSet, registry
from tests.factories import MessageFactory, ThreadFactory, UserFactory

pytestmark = pytest.mark.django_db


def _tools(owner, thread=None) -> ToolSet:
    names = ["list_threads", "search_messages", "read_thread"]
    scope = ToolScope(owner_id=owner.pk, thread_id=thread.pk if thread else 0, agent_id=None, workspace=Path("/nonexistent"))
    return ToolSet([registry()[n] for n in names], scope)


def _call(tools, name, **args):
    result = tools.call(name, json.dumps(args))
    return json.loads(result.content), result.is_error


@pytest.fixture
def two_owners():
    me, other = UserFactory(), UserFactory()
    mine = ThreadFactory(owner=me, title="Holiday plans")
    MessageFactory(thread=mine, content="Book the ferry to Skye")
    MessageFactory(thread=mine, role="assistant", content="The ferry leaves at 9.")
    theirs = ThreadFactory(owner=other, title="Secret ferry plans")
    MessageFactory(thread=theirs, content="the ferry password is hunter2")
    return me, other, mine, theirs


def test_list_threads_shows_only_the_owners_threads_and_marks_the_current_one(two_owners):
    me, _, mine, theirs = two_owners
    second = ThreadFactory(owner=me, title="Groceries")

    data, is_error = _call(_tools(me, thread=second), "list_threads")

    assert not is_error
    assert [(t["thread_id"], t["title"]) for t in data["threads"]] == [(second.pk, "Groceries"), (mine.pk, "Holiday plans")]
    assert data["threads"][0].get("current") is True
    assert data["threads"][1]["messages"] == 2
    assert theirs.pk not in [t["thread_id"] for t in data["threads"]]


def test_list_threads_filters_by_title_and_pages(two_owners):
    me, *_ = two_owners
    for n in range(3):
        ThreadFactory(owner=me, title=f"Report {n}")

    first, _ = _call(_tools(me), "list_threads", query="report", limit=2)
    rest, _ = _call(_tools(me), "list_threads", query="report", limit=2, offset=first["next_offset"])

    assert len(first["threads"]) == 2 and first["next_offset"] == 2
    assert len(rest["threads"]) == 1 and rest["next_offset"] is None


def test_search_finds_the_owners_messages_and_never_another_users(two_owners):
    me, other, mine, theirs = two_owners

    data, _ = _call(_tools(me), "search_messages", query="FERRY")
    their_view, _ = _call(_tools(other), "search_messages", query="ferry")

    assert {m["thread_id"] for m in data["matches"]} == {mine.pk}
    assert "hunter2" not in json.dumps(data)
    assert [m["snippet"] for m in their_view["matches"]] == ["the ferry password is hunter2"]


def test_a_thread_id_only_narrows_the_search_within_the_owners_threads(two_owners):
    me, _, _, theirs = two_owners

    data, is_error = _call(_tools(me), "search_messages", query="ferry", thread_id=theirs.pk)

    assert not is_error and data["matches"] == []


def test_search_refuses_a_query_too_short_and_a_bad_date(two_owners):
    me, *_ = two_owners

    short, short_error = _call(_tools(me), "search_messages", query=" a ")
    bad_date, date_error = _call(_tools(me), "search_messages", query="ferry", since="yesterday-ish")
    missing, missing_error = _call(_tools(me), "search_messages")

    assert short_error and "at least two characters" in short["error"]
    assert date_error and "not an ISO date" in bad_date["error"]
    assert missing_error and "'query' is a required property" in missing["error"]


def test_read_thread_returns_a_range_of_turns_and_says_where_to_go_on(two_owners):
    me, *_ = two_owners
    thread = ThreadFactory(owner=me)
    for n in range(1, 13):
        MessageFactory(thread=thread, content=f"question {n}")
        MessageFactory(thread=thread, role="assistant", content=f"answer {n}")

    first, _ = _call(_tools(me), "read_thread", thread_id=thread.pk)
    last, _ = _call(_tools(me), "read_thread", thread_id=thread.pk, from_turn=first["next_from_turn"])

    assert first["turns"] == "1-10 of 12" and first["next_from_turn"] == 11
    assert first["messages"][0] == {**first["messages"][0], "turn": 1, "role": "user", "text": "question 1"}
    assert [m["text"] for m in last["messages"]] == ["question 11", "answer 11", "question 12", "answer 12"]
    assert last["next_from_turn"] is None


def test_read_thread_answers_another_users_thread_as_if_it_did_not_exist(two_owners):
    me, _, _, theirs = two_owners

    data, is_error = _call(_tools(me), "read_thread", thread_id=theirs.pk)
    missing, _ = _call(_tools(me), "read_thread", thread_id=999999)

    assert is_error and data["error"] == f"There is no thread {theirs.pk}. Use list_threads to see the thread ids."
    assert missing["error"] == "There is no thread 999999. Use list_threads to see the thread ids."


def test_read_thread_rejects_wrong_types_through_the_schema(two_owners):
    me, _, mine, _ = two_owners

    data, is_error = _call(_tools(me), "read_thread", thread_id=str(mine.pk))

    assert is_error and "is not of type 'integer'" in data["error"]


def test_no_history_tool_accepts_an_owner_or_user_argument():
    for name in ["list_threads", "search_messages", "read_thread"]:
        properties = registry()[name].parameters["properties"]
        assert not {"owner", "owner_id", "user", "user_id"} & set(properties)
