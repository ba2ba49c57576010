// What the console keeps of the events it hears (`P/job-manager/events/#`, not retained:
// only those published while the page is connected), indexed for the traces: by execution,
// notification and job. Bounded: the oldest ids are forgotten first, and a large payload is
// kept cut.

const MAX_EXECUTIONS = 5000;
const MAX_EVENTS_EACH = 200;
const MAX_NOTIFICATIONS = 5000;
const MAX_JOBS = 2000;
const MAX_KEPT_CHARS = 64 * 1024;

/** A Map that forgets its oldest key past `limit`. */
class Bounded extends Map {
  constructor(limit) {
    super();
    this.limit = limit;
  }

  list(key) {
    let value = this.get(key);
    if (!value) {
      value = [];
      this.set(key, value);
      if (this.size > this.limit) this.delete(this.keys().next().value);
    }
    return value;
  }
}

function push(list, event) {
  if (list.some((e) => e.position === event.position)) return; // at least once: copies
  list.push(event);
  list.sort((a, b) => a.position - b.position);
  if (list.length > MAX_EVENTS_EACH) list.splice(1, list.length - MAX_EVENTS_EACH); // keep the first
}

/** `event` with any string longer than MAX_KEPT_CHARS inside `data` cut (a copy). */
function kept(event) {
  const text = JSON.stringify(event.data ?? null);
  if (text.length <= MAX_KEPT_CHARS) return event;
  const cut = (value) => {
    if (typeof value === 'string') {
      return value.length > 4096 ? `${value.slice(0, 4096)}… [cut by the console: ${value.length - 4096} more characters]` : value;
    }
    if (Array.isArray(value)) return value.slice(0, 100).map(cut);
    if (value && typeof value === 'object') {
      return Object.fromEntries(Object.entries(value).slice(0, 200).map(([k, v]) => [k, cut(v)]));
    }
    return value;
  };
  return { ...event, data: cut(event.data), cutByConsole: true };
}

export class Lineage {
  constructor() {
    this.since = null; // when the console first heard the events
    this.executions = new Bounded(MAX_EXECUTIONS);
    this.notifications = new Bounded(MAX_NOTIFICATIONS);
    this.jobs = new Bounded(MAX_JOBS); // job aggregate id -> its events (ids.job_id(name))
    this.lastPosition = 0;
    this.count = 0;
  }

  /** Index one `events/{type}` message. */
  add(raw) {
    const event = kept(raw);
    const data = event.data && typeof event.data === 'object' ? event.data : {};
    this.since ??= new Date().toISOString();
    this.count += 1;
    this.lastPosition = Math.max(this.lastPosition, event.position);
    const type = event.type;
    if (type.startsWith('execution.') && typeof data.aggregate_id === 'string') {
      push(this.executions.list(data.aggregate_id), event);
    } else if ((type === 'scheduler.dispatched' || type === 'scheduler.released')
      && typeof data.execution_id === 'string') {
      push(this.executions.list(data.execution_id), event);
    } else if (type === 'command_record.handled') {
      const id = data.reply?.result?.id;
      if (typeof id === 'string') push(this.executions.list(id), event);
    } else if (type === 'notification.received' && typeof data.notification_id === 'string') {
      push(this.notifications.list(data.notification_id), event);
    } else if (type.startsWith('job.') && typeof data.aggregate_id === 'string') {
      push(this.jobs.list(data.aggregate_id), event);
    }
  }
}
