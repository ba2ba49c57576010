"""Every MQTT topic of the contract, built and parsed in one place (pure: no I/O).

`P` is the site's topic prefix (`att` by default, any number of levels):

- `P/channel-manager/notifications/{trigger}`: notifications (Channel Managers publish);
- `P/job-manager/commands/{actor}/{command}`: commands (operators publish);
- `P/job-manager/replies/{actor}/...`: replies (on the command's ResponseTopic);
- `P/job-manager/events/{type}`: the event log (the relay publishes);
- `P/job-manager/views/{view}`: the views, retained (the relay publishes);
- `P/job-manager/status`: the service's status, retained; `P/job-manager/seals`: seals, retained;
- `P/job-manager/instances/{instance}/status`: each instance's own status, retained (several
  instances on one PostgreSQL store: which one is active, docs/deployment.md);
  `P/job-manager/instances/{instance}/commands/{actor}/{read}`: the read commands
  (`views.get`, `trace.get`) an instance answers itself, standby or active.

Filters: `+` stands for one level (what the service subscribes to), `#` for any number of
levels (the broker's ACL, see `att_jm.site.users`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NotificationTopic:
    """`P/channel-manager/notifications/{trigger}`."""

    trigger: str


@dataclass(frozen=True)
class CommandTopic:
    """`P/job-manager/commands/{actor}/{name}`."""

    actor: str
    name: str


@dataclass(frozen=True)
class Topics:
    """The topics under one prefix."""

    prefix: str = "att"

    # Roots: each topic of a kind is its root and one level more ---------------------------

    @property
    def notifications_root(self) -> str:
        """`P/channel-manager/notifications/`: a notification's topic is this and its trigger."""
        return f"{self.prefix}/channel-manager/notifications/"

    @property
    def commands_root(self) -> str:
        """`P/job-manager/commands/`: a command's topic is this, its actor, `/`, its name."""
        return f"{self._job_manager}/commands/"

    @property
    def replies_root(self) -> str:
        """Every reply topic starts with this (`P/job-manager/replies/`)."""
        return f"{self._job_manager}/replies/"

    @property
    def events_root(self) -> str:
        """`P/job-manager/events/`: an event's topic is this and its type."""
        return f"{self._job_manager}/events/"

    @property
    def views_root(self) -> str:
        """`P/job-manager/views/`: a view's topic is this and its name."""
        return f"{self._job_manager}/views/"

    @property
    def instances_root(self) -> str:
        """`P/job-manager/instances/`: an instance's topics are this, its name, `/`, more."""
        return f"{self._job_manager}/instances/"

    @property
    def _job_manager(self) -> str:
        return f"{self.prefix}/job-manager"

    # Built ---------------------------------------------------------------------------------

    def notification(self, trigger: str) -> str:
        return f"{self.notifications_root}{trigger}"

    def command(self, actor: str, name: str) -> str:
        return f"{self.commands_root}{actor}/{name}"

    def replies(self, actor: str) -> str:
        """The root of `actor`'s replies (a reply topic is this, `/`, anything)."""
        return f"{self.replies_root}{actor}"

    def reply(self, actor: str, token: str) -> str:
        return f"{self.replies(actor)}/{token}"

    def event(self, event_type: str) -> str:
        return f"{self.events_root}{event_type}"

    def view(self, name: str) -> str:
        return f"{self.views_root}{name}"

    @property
    def status(self) -> str:
        return f"{self._job_manager}/status"

    @property
    def seals(self) -> str:
        return f"{self._job_manager}/seals"

    def instance_status(self, instance: str) -> str:
        """The retained status of instance `instance` (standby, active, offline)."""
        return f"{self.instances_root}{instance}/status"

    def instance_command(self, instance: str, actor: str, name: str) -> str:
        """A read command sent to instance `instance` itself (`+`: to any instance, in the
        ACL)."""
        return f"{self.instances_root}{instance}/commands/{actor}/{name}"

    def instance_commands_filter(self, instance: str) -> str:
        """What instance `instance` subscribes to: its read commands, every actor's."""
        return self.instance_command(instance, "+", "+")

    # Subscriptions -------------------------------------------------------------------------

    @property
    def notifications_filter(self) -> str:
        """Every notification (`P/channel-manager/notifications/+`)."""
        return f"{self.notifications_root}+"

    @property
    def commands_filter(self) -> str:
        """Every command (`P/job-manager/commands/+/+`)."""
        return f"{self.commands_root}+/+"

    def service_filters(self) -> tuple[str, str]:
        """What the service subscribes to: (notifications, commands)."""
        return (self.notifications_filter, self.commands_filter)

    # Wildcards of any depth (ACL rules) ----------------------------------------------------

    @property
    def notifications_all(self) -> str:
        """`P/channel-manager/notifications/#`."""
        return f"{self.notifications_root}#"

    def commands_all(self, actor: str | None = None) -> str:
        """`P/job-manager/commands/{actor}/#`, or every actor's (`.../commands/#`)."""
        return f"{self.commands_root}#" if actor is None else f"{self.commands_root}{actor}/#"

    def replies_all(self, actor: str | None = None) -> str:
        """`P/job-manager/replies/{actor}/#`, or every actor's (`.../replies/#`)."""
        return f"{self.replies_root}#" if actor is None else f"{self.replies(actor)}/#"

    @property
    def events_all(self) -> str:
        """`P/job-manager/events/#`."""
        return f"{self.events_root}#"

    @property
    def views_all(self) -> str:
        """`P/job-manager/views/#`."""
        return f"{self.views_root}#"

    @property
    def instances_all(self) -> str:
        """`P/job-manager/instances/#`."""
        return f"{self.instances_root}#"

    # Parsed --------------------------------------------------------------------------------

    def parse(self, topic: str) -> NotificationTopic | CommandTopic | None:
        """What `topic` is to the service: a notification, a command, or neither (None)."""
        parts = topic.split("/")
        base = self.prefix.split("/")
        if parts[: len(base)] != base:
            return None
        rest = parts[len(base):]
        if len(rest) == 3 and rest[:2] == ["channel-manager", "notifications"]:
            return NotificationTopic(rest[2])
        if len(rest) == 4 and rest[:2] == ["job-manager", "commands"]:
            return CommandTopic(rest[2], rest[3])
        return None

    def parse_instance_command(self, topic: str) -> tuple[str, CommandTopic] | None:
        """(instance, command) of a read command sent to an instance, else None."""
        root = self.instances_root
        if not topic.startswith(root):
            return None
        parts = topic[len(root):].split("/")
        if len(parts) != 4 or parts[1] != "commands":
            return None
        return parts[0], CommandTopic(parts[2], parts[3])

    def is_notification(self, topic: bytes) -> bool:
        """Whether the raw topic `topic` lies under the notifications (a cheap test)."""
        return topic.startswith(self.notifications_root.encode())

    def is_reply(self, topic: str, actor: str) -> bool:
        """Whether `topic` is in `actor`'s reply tree, what the filter
        `P/job-manager/replies/{actor}/#` matches: the only place the service answers
        `actor`'s commands (the shipped ACL lets each user read only its own tree; answering
        elsewhere would let one operator have the service write into another's)."""
        if not actor:
            return False
        base = self.replies(actor)
        return topic == base or topic.startswith(base + "/")
