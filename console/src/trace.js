// An execution's trace, composed in the browser: the lineage `att-jm audit trace ID` reads from
// the log (notification -> the job as it was -> enqueued -> every attempt -> every operator
// action -> cleanup), here from what the console can get over MQTT: the row in full
// (`views.get` with its id) and the events this console heard since it connected (events are
// not retained). The page says which parts it could not see.
import { capped, duration, h, pretty, shown, when } from './dom.js';
import { modal } from './dialogs.js';

const NAMESPACE = '6f1c7a52-52a4-4c1e-9d7e-0a7d3b1f2c11'; // att_jm/domain/ids.py
const ACTIONS = {
  'execution.removed_from_queue': 'queue.remove',
  'execution.sent_to_front': 'queue.execute-now',
  'execution.reexecuted': 'failed.execute',
  'execution.removed_from_executed': 'executed.remove',
  'execution.deleted_from_failed': 'failed.delete',
};
const STATUS = {
  'execution.enqueued': 'queued', 'execution.started': 'running',
  'execution.attempt_failed': 'queued (retry)', 'execution.succeeded': 'executed',
  'execution.failed': 'failed', 'execution.reexecuted': 'queued',
  'execution.removed_from_queue': 'removed from the queue',
  'execution.removed_from_executed': 'removed from executed',
  'execution.deleted_from_failed': 'deleted from failed', 'execution.cleaned_up': 'cleaned up',
};
const JOB_FIELDS = ['script', 'trigger', 'match', 'command', 'timeout_seconds', 'enabled', 'retry'];
const WINDOW = 8;

/** uuid5(namespace, name) as Python's uuid module makes it (null without WebCrypto). */
export async function uuid5(namespace, name) {
  if (!globalThis.crypto?.subtle) return null;
  const hex = namespace.replace(/-/g, '');
  const space = Uint8Array.from(hex.match(/../g), (pair) => parseInt(pair, 16));
  const text = new TextEncoder().encode(name);
  const data = new Uint8Array(space.length + text.length);
  data.set(space);
  data.set(text, space.length);
  const bytes = new Uint8Array(await crypto.subtle.digest('SHA-1', data)).slice(0, 16);
  bytes[6] = (bytes[6] & 0x0f) | 0x50;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const out = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  return `${out.slice(0, 8)}-${out.slice(8, 12)}-${out.slice(12, 16)}-${out.slice(16, 20)}-${out.slice(20)}`;
}

const moment = (event) => ({ position: event.position, at: event.at });

/** The job's definition as of position `upto`, folded from its events (null: none seen). */
function jobAsOf(events, name, upto) {
  let definition = null;
  let last = null;
  let removed = false;
  for (const event of events) {
    if (event.position > upto) break;
    const d = event.data ?? {};
    if (event.type === 'job.added') definition = Object.fromEntries(JOB_FIELDS.map((k) => [k, d[k] ?? null]));
    else if (event.type === 'job.readded') definition = Object.fromEntries(JOB_FIELDS.map((k) => [k, d.definition?.[k] ?? null]));
    else if (event.type === 'job.updated' && definition) {
      for (const [k, v] of Object.entries(d.changes ?? {})) if (JOB_FIELDS.includes(k)) definition[k] = v;
    }
    removed = event.type === 'job.removed';
    last = event;
  }
  if (!last || !definition) return null;
  return { name, definition, removed, changed: { ...moment(last), type: last.type, actor: last.data?.actor } };
}

/**
 * The trace of execution `id` (`row`: its row in `table`, from a view or views.get), in the
 * shape of `att-jm audit trace --json`, with `complete` and `limits` saying what is missing.
 */
export async function composeTrace(lineage, id, row, table, jobsView) {
  const own = [...(lineage.executions.get(id) ?? [])];
  const executionEvents = own.filter((e) => e.type.startsWith('execution.'));
  const enqueued = executionEvents.find((e) => e.type === 'execution.enqueued');
  const limits = [];
  const nid = row?.notification_id ?? enqueued?.data?.notification_id;
  const heard = nid ? lineage.notifications.get(nid)?.[0] : undefined;
  let notification = null;
  if (heard) {
    const d = heard.data;
    notification = { id: d.notification_id, trigger: d.trigger, ...moment(heard), actor: d.actor,
      payload: d.payload, enqueued: d.enqueued, skipped: d.skipped };
  } else {
    limits.push(`The notification ${nid ? `"${capped(nid, 80)}" ` : ''}was received before this console connected: its payload is in the log only.`);
  }
  const jobName = row?.job ?? enqueued?.data?.job;
  let job = null;
  const jobId = jobName ? await uuid5(NAMESPACE, `job:${jobName}`) : null;
  if (jobId && lineage.jobs.get(jobId)) {
    job = jobAsOf(lineage.jobs.get(jobId), jobName, enqueued ? enqueued.position : Infinity);
  }
  if (!job && enqueued) {
    const d = enqueued.data;
    job = { name: jobName, definition: { script: d.script, trigger: d.trigger,
      timeout_seconds: d.timeout_seconds, retry: d.retry ?? null },
      source: 'as enqueued (its match and Command template were not seen by this console)' };
  }
  if (!job) {
    const now = (jobsView?.rows ?? []).find((r) => r.name === jobName);
    if (now) {
      job = { name: jobName, definition: Object.fromEntries(JOB_FIELDS.map((k) => [k, now[k] ?? null])),
        source: 'as defined NOW (its definition at the enqueue was not seen by this console)' };
    }
    limits.push('The job as it was defined when the entry was enqueued is in the log only.');
  }
  const trace = {
    execution_id: id,
    status: executionEvents.length ? (STATUS[executionEvents.at(-1).type] ?? executionEvents.at(-1).type) : ({ queue: row?.state ?? 'queued', executed: 'executed', failed: 'failed' }[table] ?? 'unknown'),
    notification,
    job,
    enqueued: enqueued
      ? { ...moment(enqueued), actor: enqueued.data.actor, job: enqueued.data.job, trigger: enqueued.data.trigger,
        command: enqueued.data.command, script: enqueued.data.script, timeout_seconds: enqueued.data.timeout_seconds }
      : { position: null, at: row?.enqueued_at, actor: null, job: row?.job, trigger: row?.trigger, command: row?.command },
    attempts: [],
    actions: [],
    cleanup: null,
    events: own,
    row,
    complete: Boolean(enqueued),
    limits,
  };
  if (!enqueued) {
    limits.unshift('The entry was enqueued before this console connected: the attempts and actions before then are in the log only (att-jm audit trace).');
  }
  const commands = own.filter((e) => e.type === 'command_record.handled');
  const dispatches = own.filter((e) => e.type === 'scheduler.dispatched');
  for (const event of executionEvents) {
    const d = event.data ?? {};
    if (event.type === 'execution.started') {
      const dispatch = dispatches.find((x) => Math.abs(x.position - event.position) <= 2);
      trace.attempts.push({ attempt: d.attempt, started: moment(event), ended: null, front: dispatch?.data?.front ?? null });
    } else if (['execution.succeeded', 'execution.failed', 'execution.attempt_failed'].includes(event.type)) {
      const ended = { ...moment(event), result: d.result, feedback: d.feedback, exit_code: d.exit_code,
        duration_seconds: d.duration_seconds, timed_out: d.timed_out ?? false, interrupted: d.interrupted ?? false };
      if (event.type === 'execution.attempt_failed') ended.retry_not_before = d.not_before;
      const last = trace.attempts.at(-1);
      if (last && last.ended === null) last.ended = ended;
      else trace.attempts.push({ attempt: null, started: null, ended, front: null });
    } else if (ACTIONS[event.type]) {
      const command = commands.find((c) => c.position > event.position && c.position - event.position <= WINDOW
        && c.data?.command === ACTIONS[event.type]);
      trace.actions.push({ ...moment(event), action: ACTIONS[event.type], actor: d.actor,
        correlation: command?.data?.correlation ?? null, attempt: d.attempt });
    } else if (event.type === 'execution.cleaned_up') {
      trace.cleanup = { ...moment(event), table: d.table, cleanup: d.cleanup, actor: d.actor };
    }
  }
  if (trace.attempts.length === 0 && row?.started_at) {
    trace.attempts.push({
      attempt: row.attempt, started: { position: null, at: row.started_at },
      ended: row.finished_at ? { at: row.finished_at, result: row.result, feedback: row.feedback } : null,
      front: null, fromRow: true,
    });
  }
  return trace;
}

function dl(pairs) {
  return h('dl', {}, pairs.filter(([, v]) => v !== undefined && v !== null && v !== '').map(([k, v]) => [
    h('dt', {}, k), h('dd', {}, v instanceof Node ? v : capped(shown(v), 20_000))]));
}

function resultText(result) {
  return result === 3 ? 'Succeeded (3)' : result === 2 ? 'Failed (2)' : shown(result);
}

/** The trace as a page section. */
export function traceElement(trace, since) {
  const sections = [];
  sections.push(h('p', { class: trace.complete ? 'trace-state ok' : 'trace-state partial', 'data-testid': 'trace-completeness' },
    trace.fromLog
      ? 'Complete: the lineage from the log (trace.get), as att-jm audit trace shows it.'
      : trace.complete
      ? `Complete from the enqueue on: composed from the events this console heard since ${when(since)}.`
      : `Partial: composed from the row and the events this console heard since ${since ? when(since) : 'it connected'}.`));
  if (trace.limits.length) {
    sections.push(h('ul', { class: 'trace-limits' }, trace.limits.map((text) => h('li', {}, text)),
      h('li', {}, `The whole lineage from the log: att-jm audit trace ${trace.execution_id}`)));
  }
  sections.push(h('h3', {}, 'Entry'), dl([
    ['Execution id', trace.execution_id], ['Status', trace.status], ['Job', trace.row?.job],
    ['Attempt', trace.row?.attempt],
  ]));
  sections.push(h('h3', {}, 'Notification'), trace.notification ? h('div', {},
    dl([['Id', trace.notification.id], ['Trigger', trace.notification.trigger],
      ['Received', `${when(trace.notification.at)} (position ${trace.notification.position}) from ${shown(trace.notification.actor)}`],
      ['Enqueued for', (trace.notification.enqueued ?? []).map((e) => e.job).join(', ')],
      ['Skipped', (trace.notification.skipped ?? []).length ? shown(trace.notification.skipped) : '']]),
    h('pre', { class: 'json', 'data-testid': 'trace-payload' }, pretty(trace.notification.payload)))
    : dl([['Id', trace.row?.notification_id ?? ''], ['Payload', 'not seen by this console']]));
  const job = trace.job;
  sections.push(h('h3', {}, 'Job'), job ? dl([
    ['Name', job.name], ['Definition', job.source ?? (job.changed ? `as of ${when(job.changed.at)} (${job.changed.type} by ${shown(job.changed.actor)})` : '')],
    ['Script', job.definition.script], ['Trigger', job.definition.trigger], ['Match', job.definition.match],
    ['Command template', job.definition.command], ['Timeout', job.definition.timeout_seconds != null ? `${job.definition.timeout_seconds} s` : ''],
    ['Retry', job.definition.retry], ['Removed since', job.removed ? 'yes' : ''],
  ]) : dl([['Name', trace.row?.job ?? ''], ['Definition', 'not seen by this console']]));
  const e = trace.enqueued;
  sections.push(h('h3', {}, 'Enqueued'), dl([
    ['At', e.at ? `${when(e.at)}${e.position ? ` (position ${e.position})` : ''}` : ''], ['By', e.actor],
    ['Trigger', e.trigger], ['Script', e.script], ['Command', h('pre', { class: 'json' }, capped(shown(trace.row?.command ?? e.command), 200_000))],
  ]));
  sections.push(h('h3', {}, `Attempts (${trace.attempts.length})`));
  if (trace.attempts.length) {
    sections.push(h('table', { class: 'grid small', 'data-testid': 'trace-attempts' },
      h('thead', {}, h('tr', {}, ['Attempt', 'Started', 'Ended', 'Result', 'Duration', 'Exit', 'Feedback'].map((t) => h('th', {}, t)))),
      h('tbody', {}, trace.attempts.map((a) => h('tr', {},
        h('td', {}, shown(a.attempt ?? '')), h('td', {}, when(a.started?.at) + (a.front ? ' (sent to the front)' : '')),
        h('td', {}, when(a.ended?.at)), h('td', {}, a.ended ? resultText(a.ended.result) + (a.ended.retry_not_before ? `, retry not before ${when(a.ended.retry_not_before)}` : '') : 'running'),
        h('td', {}, duration(a.ended?.duration_seconds)), h('td', {}, shown(a.ended?.exit_code ?? '')),
        h('td', { class: 'feedback' }, capped(shown(a.ended?.feedback ?? ''), 300)))))));
  }
  sections.push(h('h3', {}, `Operator actions (${trace.actions.length})`));
  if (trace.actions.length) {
    sections.push(h('table', { class: 'grid small', 'data-testid': 'trace-actions' },
      h('thead', {}, h('tr', {}, ['At', 'Action', 'By', 'Attempt', 'Correlation'].map((t) => h('th', {}, t)))),
      h('tbody', {}, trace.actions.map((a) => h('tr', {},
        h('td', {}, when(a.at)), h('td', {}, a.action), h('td', {}, shown(a.actor)),
        h('td', {}, shown(a.attempt ?? '')), h('td', {}, shown(a.correlation ?? '')))))));
  }
  if (trace.cleanup) {
    sections.push(h('h3', {}, 'Cleanup'), dl([['At', when(trace.cleanup.at)], ['Table', trace.cleanup.table], ['By', trace.cleanup.actor]]));
  }
  if (trace.row?.feedback) {
    sections.push(h('h3', {}, 'Feedback (in full)'), h('pre', { class: 'json feedback-full', 'data-testid': 'trace-feedback' },
      capped(shown(trace.row.feedback), 200_000)));
  }
  sections.push(h('h3', {}, `${trace.fromLog ? 'Events' : 'Events heard'} (${trace.events.length})`), h('table', { class: 'grid small', 'data-testid': 'trace-events' },
    h('thead', {}, h('tr', {}, ['Position', 'At', 'Type', 'Actor'].map((t) => h('th', {}, t)))),
    h('tbody', {}, trace.events.map((ev) => h('tr', {},
      h('td', {}, shown(ev.position)), h('td', {}, when(ev.at)), h('td', {}, ev.type), h('td', {}, shown(ev.data?.actor ?? '')))))));
  return h('div', { class: 'trace', 'data-testid': 'trace' }, sections);
}

/** Open the trace of `row` (of view `table`) in a dialog: the service's `trace.get` (the
 * whole lineage from the log, as `att-jm audit trace` shows it); composed from the row and the
 * events this console heard when the service cannot answer it. */
export async function openTrace(session, lineage, table, row, jobsView) {
  const id = row.id;
  const body = h('div', {}, h('p', {}, 'Reading the lineage from the log…'));
  modal(`Trace of ${capped(id, 80)}`, body, { testid: 'trace-dialog', wide: true });
  let full = row;
  const [reply, fromLog] = await Promise.all([
    session.command('views.get', { view: table, id }),
    session.command('trace.get', { id }),
  ]);
  const found = reply.ok ? reply.result?.row : null; // {view, position, row}
  if (found && typeof found === 'object') full = found;
  let trace;
  if (fromLog.ok && fromLog.result && typeof fromLog.result === 'object') {
    trace = { ...fromLog.result, row: full, complete: true, limits: [], fromLog: true };
  } else {
    trace = await composeTrace(lineage, id, full, table, jobsView);
    trace.limits.unshift(`The service did not give the lineage from the log (${shown(fromLog.error?.message ?? 'no answer')}).`);
  }
  body.replaceChildren(traceElement(trace, lineage.since));
  if (!reply.ok) {
    body.prepend(h('p', { class: 'trace-state partial' },
      `The row is no longer in ${table}, or could not be read (${shown(reply.error?.message)}): shown as it was on the page.`));
  }
}
