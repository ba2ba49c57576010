"""`att_jm.topics`: every topic built and parsed in one place, as the README's table has them."""

from __future__ import annotations

import pytest

from att_jm.topics import CommandTopic, NotificationTopic, Topics

PREFIXES = ["att", "site/a", "a/b/c"]


@pytest.mark.parametrize("prefix", PREFIXES)
def test_each_topic_is_the_prefix_and_the_contract_levels(prefix: str) -> None:
    t = Topics(prefix)
    p = prefix
    assert t.notification("channel-up") == f"{p}/channel-manager/notifications/channel-up"
    assert t.command("alice", "job.add") == f"{p}/job-manager/commands/alice/job.add"
    assert t.replies("alice") == f"{p}/job-manager/replies/alice"
    assert t.reply("alice", "abc") == f"{p}/job-manager/replies/alice/abc"
    assert t.event("execution.enqueued") == f"{p}/job-manager/events/execution.enqueued"
    assert t.view("queue") == f"{p}/job-manager/views/queue"
    assert t.status == f"{p}/job-manager/status"
    assert t.seals == f"{p}/job-manager/seals"
    assert t.instance_status("jm-a") == f"{p}/job-manager/instances/jm-a/status"
    assert t.instance_command("jm-a", "bob", "views.get") == \
        f"{p}/job-manager/instances/jm-a/commands/bob/views.get"
    assert t.instance_commands_filter("jm-a") == f"{p}/job-manager/instances/jm-a/commands/+/+"
    assert t.parse_instance_command(t.instance_command("jm-a", "bob", "views.get")) == (
        "jm-a", CommandTopic("bob", "views.get"))
    assert t.parse_instance_command(t.instance_status("jm-a")) is None
    assert t.parse_instance_command(t.command("bob", "views.get")) is None


def test_the_default_prefix_is_att() -> None:
    assert Topics().status == "att/job-manager/status"


@pytest.mark.parametrize("prefix", PREFIXES)
def test_each_topic_starts_with_its_root(prefix: str) -> None:
    t = Topics(prefix)
    assert t.notification("x") == t.notifications_root + "x"
    assert t.command("a", "c") == t.commands_root + "a/c"
    assert t.reply("a", "r").startswith(t.replies_root)
    assert t.event("x") == t.events_root + "x"
    assert t.view("x") == t.views_root + "x"


def test_the_service_subscribes_to_one_level_wildcards() -> None:
    t = Topics("site/a")
    assert t.service_filters() == (
        "site/a/channel-manager/notifications/+", "site/a/job-manager/commands/+/+")
    assert (t.notifications_filter, t.commands_filter) == t.service_filters()


def test_the_acl_wildcards_cover_any_depth() -> None:
    t = Topics("site/a")
    assert t.notifications_all == "site/a/channel-manager/notifications/#"
    assert t.commands_all() == "site/a/job-manager/commands/#"
    assert t.commands_all("bob") == "site/a/job-manager/commands/bob/#"
    assert t.replies_all() == "site/a/job-manager/replies/#"
    assert t.replies_all("bob") == "site/a/job-manager/replies/bob/#"
    assert t.events_all == "site/a/job-manager/events/#"
    assert t.views_all == "site/a/job-manager/views/#"
    assert t.instances_all == "site/a/job-manager/instances/#"


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("trigger", ["channel-up", "a.b", "UPPER", "é"])
def test_a_built_notification_topic_parses_back(prefix: str, trigger: str) -> None:
    t = Topics(prefix)
    assert t.parse(t.notification(trigger)) == NotificationTopic(trigger)
    assert t.is_notification(t.notification(trigger).encode())


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize(("actor", "name"), [("alice", "job.add"), ("op-1", "views.get")])
def test_a_built_command_topic_parses_back(prefix: str, actor: str, name: str) -> None:
    t = Topics(prefix)
    assert t.parse(t.command(actor, name)) == CommandTopic(actor, name)
    assert not t.is_notification(t.command(actor, name).encode())


@pytest.mark.parametrize("topic", [
    "other/channel-manager/notifications/up",  # another prefix
    "att2/channel-manager/notifications/up",  # a prefix that only starts like ours
    "at/channel-manager/notifications/up",
    "site/channel-manager/notifications/up",  # one level of a two-level prefix
    "site/b/job-manager/commands/alice/job.add",
    "channel-manager/notifications/up",  # no prefix at all
])
def test_a_topic_under_a_foreign_prefix_is_neither(topic: str) -> None:
    for t in (Topics("att"), Topics("site/a")):
        assert t.parse(topic) is None


@pytest.mark.parametrize("topic", [
    "att/channel-manager/notifications",  # a level short
    "att/channel-manager/notifications/up/more",  # a level too many
    "att/job-manager/commands/alice",
    "att/job-manager/commands/alice/job.add/more",
    "att/job-manager/commands",
    "att",
    "",
])
def test_a_topic_with_the_wrong_number_of_levels_is_neither(topic: str) -> None:
    assert Topics("att").parse(topic) is None


@pytest.mark.parametrize("topic", [
    "att/job-manager/notifications/up",  # the right levels under the wrong party
    "att/channel-manager/commands/alice/job.add",
    "att/job-manager/replies/alice/x/y",
    "att/job-manager/events/execution.enqueued/x",
    "att/job-manager/status",
    "att/job-manager/instances/jm-a/status",
    "att/job-manager/instances/jm-a/commands/bob/views.get",
])
def test_other_topics_of_the_contract_are_neither(topic: str) -> None:
    assert Topics("att").parse(topic) is None


def test_reply_topics_are_those_under_the_actors_own_reply_tree() -> None:
    t = Topics("site/a")
    assert t.is_reply(t.reply("alice", "abc"), "alice")
    assert t.is_reply("site/a/job-manager/replies/alice/at/all", "alice")
    assert not t.is_reply(t.reply("bob", "abc"), "alice")  # another user's tree
    assert not t.is_reply("site/a/job-manager/replies/alice2/x", "alice")  # a longer name
    # what `replies/alice/#` matches: the tree's root and an empty last level too
    assert t.is_reply("site/a/job-manager/replies/alice", "alice")
    assert t.is_reply("site/a/job-manager/replies/alice/", "alice")
    assert not t.is_reply("site/a/job-manager/replies", "alice")
    assert not t.is_reply("site/b/job-manager/replies/alice/abc", "alice")
    assert not t.is_reply(t.command("alice", "job.add"), "alice")
    assert not t.is_reply("site/a/job-manager/replies//x", "")  # no actor: nobody's tree


def test_an_empty_level_parses_as_it_is() -> None:
    """Empty levels are topics in MQTT: the parse does not invent or drop levels."""
    t = Topics("att")
    assert t.parse("att/channel-manager/notifications/") == NotificationTopic("")
    assert t.parse("att/job-manager/commands//job.add") == CommandTopic("", "job.add")
