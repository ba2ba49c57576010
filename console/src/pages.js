// The four pages of the original: Jobs, Queue, Executed Jobs, Failed Jobs. Each shows its
// live view (the retained `views/{name}` message, republished by the service on change) in a
// Table, and, for a user who may send commands, the actions of the contract.
import { capped, clear, duration, every, h, pretty, shown, toast, when } from './dom.js';
import { busyButton, confirmAction, modal } from './dialogs.js';
import { archiveText, cleanupText, intervalEditor, openArchive, openCleanup, openJobForm } from './forms.js';
import { Table } from './table.js';
import { openTrace, uuid5 } from './trace.js';

const CUT_MARK = '…[cut: ';

/** Send a command; a toast says how it went. The reply. */
async function run(ctx, name, args, done) {
  const reply = await ctx.session.command(name, args);
  if (reply.ok) toast(done);
  else toast(`${name} refused: ${reply.error?.code}: ${reply.error?.message}`, 'error');
  return reply;
}

function fetcher(ctx, view) {
  return (offset, limit) => ctx.session.command('views.get', { view, offset, limit });
}

function cell(text, cls) {
  return h('span', { class: cls, title: text.length > 60 ? capped(text, 2000) : null }, capped(text));
}

function head(title, description, ...extra) {
  return h('div', { class: 'page-head' },
    h('div', {}, h('h2', {}, title), h('p', { class: 'hint' }, description)),
    h('div', { class: 'page-actions' }, extra));
}

function retryText(retry) {
  if (!retry) return 'none';
  return `${retry.max_attempts} attempts, ${retry.delay_seconds} s × ${retry.backoff}`;
}

/** The Jobs page. */
export class JobsPage {
  constructor(ctx) {
    this.ctx = ctx;
    this.table = new Table({
      view: 'jobs', rowKey: (r) => r.name, fetchRows: fetcher(ctx, 'jobs'), empty: 'No jobs yet.',
      columns: [
        { key: 'name', label: 'Name' },
        { key: 'enabled', label: 'Enabled', value: (r) => (r.enabled ? 'yes' : 'no'),
          cell: (r) => h('span', { class: r.enabled ? 'tag ok' : 'tag off' }, r.enabled ? 'enabled' : 'disabled') },
        { key: 'script', label: 'Script' },
        { key: 'trigger', label: 'Trigger' },
        { key: 'match', label: 'Match', value: (r) => (r.match == null ? '' : shown(r.match)) },
        { key: 'command', label: 'Command template' },
        { key: 'timeout_seconds', label: 'Timeout', cell: (r) => `${shown(r.timeout_seconds)} s` },
        { key: 'retry', label: 'Retry', value: (r) => retryText(r.retry) },
        { key: 'updated_at', label: 'Updated', cell: (r) => when(r.updated_at) },
      ],
      actions: ctx.mayCommand ? (r) => this.actions(r) : null,
      onOpen: (r) => this.openJob(r),
    });
    this.element = h('section', { class: 'page', 'data-testid': 'page-jobs' },
      head('Jobs', 'The automation scripts run for matching notifications. A row shows what this console heard about the job.',
        ctx.mayCommand ? h('button', { type: 'button', class: 'primary', 'data-testid': 'add-job',
          onclick: () => openJobForm(ctx.session, null) }, 'Add job') : null),
      this.table.element);
  }

  actions(job) {
    const ctx = this.ctx;
    return [
      h('button', { type: 'button', class: 'quiet', 'data-testid': 'edit', onclick: () => openJobForm(ctx.session, job) }, 'Edit'),
      busyButton(job.enabled ? 'Disable' : 'Enable', () => run(ctx, 'job.update', { name: job.name, enabled: !job.enabled },
        `Job ${job.name} ${job.enabled ? 'disabled' : 'enabled'}`), { class: 'quiet', 'data-testid': job.enabled ? 'disable' : 'enable' }),
      busyButton('Remove', async () => {
        if (await confirmAction('Remove job', `Remove job "${job.name}"? Its queued entries stay in the queue.`, 'Remove job')) {
          await run(ctx, 'job.remove', { name: job.name }, `Job ${job.name} removed`);
        }
      }, { class: 'danger', 'data-testid': 'remove' }),
    ];
  }

  async openJob(job) {
    const id = await uuid5('6f1c7a52-52a4-4c1e-9d7e-0a7d3b1f2c11', `job:${job.name}`);
    const events = (id && this.ctx.lineage.jobs.get(id)) || [];
    modal(`Job ${capped(job.name, 64)}`, h('div', {},
      h('pre', { class: 'json' }, pretty(job)),
      h('h3', {}, `Changes heard by this console (${events.length})`),
      h('ul', {}, events.map((e) => h('li', {}, `${when(e.at)} ${e.type} by ${shown(e.data?.actor)} (position ${e.position})`)))),
    { testid: 'job-details', wide: true });
  }

  update(name, message) {
    if (name === 'jobs') this.table.update(message);
  }
}

/** The Queue page. */
export class QueuePage {
  constructor(ctx) {
    this.ctx = ctx;
    this.editing = false;
    this.interval = h('div', { class: 'interval', 'data-testid': 'interval' });
    this.table = new Table({
      view: 'queue', rowKey: (r) => r.id, fetchRows: fetcher(ctx, 'queue'), empty: 'The queue is empty.',
      columns: [
        { key: 'state', label: 'State', value: (r) => this.state(r), cell: (r) => this.stateCell(r) },
        { key: 'job', label: 'Job' },
        { key: 'command', label: 'Command' },
        { key: 'trigger', label: 'Trigger' },
        { key: 'notification_id', label: 'Notification' },
        { key: 'enqueued_at', label: 'Enqueued', cell: (r) => when(r.enqueued_at) },
        { key: 'attempt', label: 'Attempt' },
        { key: 'not_before', label: 'Not before', cell: (r) => when(r.not_before) },
        { key: 'feedback', label: 'Previous feedback', cell: (r) => cell(shown(r.feedback), 'feedback') },
      ],
      rowClass: (r) => (r.state === 'running' ? 'running' : (this.waiting(r) ? 'waiting' : '')),
      actions: ctx.mayCommand ? (r) => this.actions(r) : null,
      onOpen: (r) => openTrace(ctx.session, ctx.lineage, 'queue', r, ctx.views.jobs),
    });
    this.archive = h('span', { class: 'hint', 'data-testid': 'archive-summary' });
    this.element = h('section', { class: 'page', 'data-testid': 'page-queue' },
      head('Queue', 'Entries run one at a time, oldest first; the running entry is highlighted. Click a row for its trace.', this.interval,
        h('div', { class: 'cleanup-line' }, h('span', {}, 'Automatic archival of the log — '), this.archive),
        ctx.mayCommand ? h('button', { type: 'button', class: 'quiet', 'data-testid': 'archive-open',
          onclick: () => openArchive(ctx.session, ctx.views.settings?.settings?.archive) }, 'Archival…') : null),
      this.table.element);
    this.renderInterval();
    this.renderArchive();
  }

  renderArchive() {
    this.archive.textContent = archiveText(this.ctx.views.settings?.settings?.archive);
  }

  waiting(r) {
    return r.state !== 'running' && r.not_before && new Date(r.not_before).getTime() > Date.now();
  }

  state(r) {
    if (r.state === 'running') return 'running';
    return this.waiting(r) ? 'waiting to retry' : 'queued';
  }

  stateCell(r) {
    if (r.state === 'running') {
      return h('span', { class: 'tag run' }, 'running ',
        h('span', { class: 'elapsed', 'data-started': r.started_at ?? '', 'data-testid': 'elapsed' }, this.elapsed(r.started_at)));
    }
    if (this.waiting(r)) return h('span', { class: 'tag wait' }, `retry after ${when(r.not_before)}`);
    return h('span', { class: 'tag' }, 'queued');
  }

  elapsed(started) {
    const at = started ? new Date(started).getTime() : NaN;
    return Number.isNaN(at) ? '' : duration((Date.now() - at) / 1000);
  }

  actions(entry) {
    const ctx = this.ctx;
    const running = entry.state === 'running';
    return [
      busyButton('Execute Now', () => run(ctx, 'queue.execute-now', { id: entry.id }, `Entry of ${entry.job} sent to the front`),
        { class: 'quiet', disabled: running, 'data-testid': 'execute-now' }),
      busyButton('Remove', async () => {
        if (await confirmAction('Remove queued entry', `Remove the queued entry of job "${entry.job}" (${entry.id})? It will not run.`, 'Remove entry')) {
          await run(ctx, 'queue.remove', { id: entry.id }, `Entry of ${entry.job} removed from the queue`);
        }
      }, { class: 'danger', disabled: running, 'data-testid': 'remove' }),
    ];
  }

  renderInterval() {
    clear(this.interval);
    const seconds = this.ctx.views.settings?.settings?.interval_seconds;
    if (this.editing) {
      this.interval.append(h('span', {}, 'Interval between two runs: '),
        intervalEditor(this.ctx.session, seconds ?? '', () => { this.editing = false; this.renderInterval(); }));
      return;
    }
    this.interval.append(h('span', { 'data-testid': 'interval-value' },
      `Interval between two runs: ${seconds === undefined ? '…' : every(seconds)}`));
    if (this.ctx.mayCommand) {
      this.interval.append(h('button', { type: 'button', class: 'quiet', 'data-testid': 'interval-edit',
        onclick: () => { this.editing = true; this.renderInterval(); } }, 'Change'));
    }
  }

  update(name, message) {
    if (name === 'queue') this.table.update(message);
    if (name === 'settings' && !this.editing) this.renderInterval();
    if (name === 'settings') this.renderArchive();
  }

  tick() {
    for (const span of this.element.querySelectorAll('.elapsed')) {
      span.textContent = this.elapsed(span.dataset.started);
    }
  }
}

/** Executed Jobs and Failed Jobs. */
export class DonePage {
  constructor(ctx, table) {
    this.ctx = ctx;
    this.view = table;
    this.full = new Map(); // `${id}:${attempt}` -> the Feedback read in full ("Show all")
    const failed = table === 'failed';
    this.summary = h('span', { class: 'hint', 'data-testid': `cleanup-summary-${table}` });
    this.table = new Table({
      view: table, rowKey: (r) => r.id, fetchRows: fetcher(ctx, table),
      empty: failed ? 'No failed entries.' : 'Nothing executed yet.',
      columns: [
        { key: 'finished_at', label: 'Finished', cell: (r) => when(r.finished_at) },
        { key: 'job', label: 'Job' },
        { key: 'command', label: 'Command' },
        { key: 'trigger', label: 'Trigger' },
        { key: 'notification_id', label: 'Notification' },
        { key: 'attempt', label: 'Attempt' },
        { key: 'duration', label: 'Duration',
          value: (r) => (new Date(r.finished_at) - new Date(r.started_at)) / 1000,
          cell: (r) => duration((new Date(r.finished_at) - new Date(r.started_at)) / 1000) },
        { key: 'feedback', label: 'Feedback', cell: (r) => (failed ? this.fullFeedback(r) : cell(shown(r.feedback), 'feedback')) },
      ],
      actions: ctx.mayCommand ? (r) => this.actions(r) : null,
      onOpen: (r) => openTrace(ctx.session, ctx.lineage, table, r, ctx.views.jobs),
    });
    this.element = h('section', { class: 'page', 'data-testid': `page-${table}` },
      head(failed ? 'Failed Jobs' : 'Executed Jobs',
        failed ? 'Executions that ended with Result 2 (Failed), newest first. Click a row for its trace.'
          : 'Executions that ended with Result 3 (Succeeded), newest first. Click a row for its trace.',
        h('div', { class: 'cleanup-line' }, h('span', {}, 'Auto Cleanup — '), this.summary),
        ctx.mayCommand ? h('button', { type: 'button', class: 'quiet', 'data-testid': `cleanup-open-${table}`,
          onclick: () => openCleanup(ctx.session, table, ctx.views.settings?.settings?.[`${table}_cleanup`]) }, 'Auto Cleanup…') : null),
      this.table.element);
    this.renderSummary();
  }

  /** Failed Jobs shows Feedback in full: the view cuts a cell at 1,024 characters, so a cut
   * one gets a button that reads the row in full (views.get with its id). */
  fullFeedback(row) {
    const key = `${row.id}:${row.attempt}`;
    const text = this.full.get(key) ?? shown(row.feedback);
    const box = h('div', { class: 'feedback-full' }, capped(text, 200_000));
    if (!this.full.has(key) && text.includes(CUT_MARK)) {
      box.append(h('br'), busyButton('Show all', async () => {
        const reply = await this.ctx.session.command('views.get', { view: this.view, id: row.id });
        if (!reply.ok) {
          toast(`views.get refused: ${reply.error?.message}`, 'error');
          return;
        }
        const whole = shown(reply.result?.row?.feedback);
        this.full.set(key, whole);
        if (this.full.size > 200) this.full.delete(this.full.keys().next().value);
        box.replaceChildren(capped(whole, 200_000));
      }, { class: 'quiet', 'data-testid': 'feedback-all' }));
    }
    return box;
  }

  actions(entry) {
    const ctx = this.ctx;
    if (this.view === 'executed') {
      return [busyButton('Remove', async () => {
        if (await confirmAction('Remove from Executed Jobs', `Remove the executed entry of job "${entry.job}" (${entry.id}) from the table?`, 'Remove row')) {
          await run(ctx, 'executed.remove', { id: entry.id }, `Entry of ${entry.job} removed from Executed Jobs`);
        }
      }, { class: 'danger', 'data-testid': 'remove' })];
    }
    return [
      busyButton('Execute again', () => run(ctx, 'failed.execute', { id: entry.id }, `Entry of ${entry.job} queued again (attempt ${(entry.attempt ?? 0) + 1})`),
        { class: 'quiet', 'data-testid': 'execute-again' }),
      busyButton('Delete permanently', async () => {
        if (await confirmAction('Delete permanently', `Delete the failed entry of job "${entry.job}" (${entry.id}) permanently? The log keeps its history.`, 'Delete')) {
          await run(ctx, 'failed.delete', { id: entry.id }, `Entry of ${entry.job} deleted`);
        }
      }, { class: 'danger', 'data-testid': 'delete' }),
    ];
  }

  renderSummary() {
    this.summary.textContent = cleanupText(this.ctx.views.settings?.settings?.[`${this.view}_cleanup`]);
  }

  update(name, message) {
    if (name === this.view) this.table.update(message);
    if (name === 'settings') this.renderSummary();
  }
}
