// The operator's forms: a job (job.add / job.update), the interval (settings.set) and the
// Auto Cleanup pop-up of a table (settings.set, cleanup.run). Values are sent as typed; the
// service validates them and its reply's message is shown next to the field it names.
import { every, h, shown, toast } from './dom.js';
import { busyButton, fieldForm, modal } from './dialogs.js';

const JOB_ALIASES = {
  name: ['name', 'job named'],
  script: ['script'],
  trigger: ['trigger', 'topic'],
  match: ['match'],
  command: ['command', 'command template', 'placeholders'],
  timeout_seconds: ['timeout_seconds'],
  enabled: ['enabled'],
  retry_max_attempts: ['retry.max_attempts', 'retry', 'max_attempts'],
  retry_delay_seconds: ['retry.delay_seconds', 'delay_seconds'],
  retry_backoff: ['retry.backoff', 'backoff'],
};

/** Text typed as a number: the number when it is one, else the text itself (the service
 * answers `invalid` naming the range), and undefined when blank. */
export function typedNumber(text) {
  const value = text.trim();
  if (value === '') return undefined;
  const number = Number(value);
  return Number.isFinite(number) ? number : value;
}

function input(value, props = {}) {
  return h('input', { type: 'text', value: value ?? '', spellcheck: 'false', autocomplete: 'off', ...props });
}

function area(value, props = {}) {
  const element = h('textarea', { rows: 2, spellcheck: 'false', ...props });
  element.value = value ?? '';
  return element;
}

/** The job form (add when `job` is null, else edit `job`, a jobs view row). */
export function openJobForm(session, job) {
  const editing = Boolean(job);
  const retry = job?.retry ?? null;
  const inputs = {
    name: input(job?.name, { maxlength: 64, disabled: editing }),
    script: input(job?.script),
    trigger: input(job?.trigger),
    match: area(job?.match ? JSON.stringify(job.match) : '', { placeholder: '{"channel": "BBC One"}' }),
    command: area(job?.command ?? '', { placeholder: 'channel={channel}' }),
    timeout_seconds: input(job ? shown(job.timeout_seconds) : '', { inputmode: 'decimal', placeholder: '300' }),
    enabled: h('input', { type: 'checkbox', checked: job ? job.enabled !== false : true }),
    retry_max_attempts: input(retry ? shown(retry.max_attempts) : '', { inputmode: 'numeric', placeholder: 'none' }),
    retry_delay_seconds: input(retry ? shown(retry.delay_seconds) : '', { inputmode: 'decimal', placeholder: '0' }),
    retry_backoff: input(retry ? shown(retry.backoff) : '', { inputmode: 'decimal', placeholder: '1' }),
  };
  const form = fieldForm([
    { name: 'name', label: 'Name', input: inputs.name, hint: 'A-Z a-z 0-9 . _ -, up to 64' },
    { name: 'script', label: 'Script', input: inputs.script, hint: 'a file in the scripts directory' },
    { name: 'trigger', label: 'Trigger', input: inputs.trigger, hint: "the notification topic's last level" },
    { name: 'match', label: 'Match', input: inputs.match, hint: 'JSON object field -> value (blank: every notification)' },
    { name: 'command', label: 'Command', input: inputs.command, hint: '{field} and {a.b} from the notification (blank: its payload as JSON)' },
    { name: 'timeout_seconds', label: 'Timeout (s)', input: inputs.timeout_seconds },
    { name: 'enabled', label: 'Enabled', input: inputs.enabled },
    { name: 'retry_max_attempts', label: 'Retry: attempts', input: inputs.retry_max_attempts, hint: 'blank: no automatic retry' },
    { name: 'retry_delay_seconds', label: 'Retry: delay (s)', input: inputs.retry_delay_seconds },
    { name: 'retry_backoff', label: 'Retry: backoff ×', input: inputs.retry_backoff },
  ], JOB_ALIASES, { testid: 'job-form' });

  const values = () => {
    const args = {
      name: inputs.name.value.trim(), script: inputs.script.value.trim(),
      trigger: inputs.trigger.value.trim(), enabled: inputs.enabled.checked,
    };
    const matchText = inputs.match.value.trim();
    if (matchText) {
      try {
        args.match = JSON.parse(matchText);
      } catch (error) {
        return { error: { ok: false, error: { code: 'invalid', message: `match is not JSON: ${error.message}` } } };
      }
    } else args.match = null;
    args.command = inputs.command.value === '' ? null : inputs.command.value;
    const timeout = typedNumber(inputs.timeout_seconds.value);
    if (timeout !== undefined) args.timeout_seconds = timeout;
    const attempts = typedNumber(inputs.retry_max_attempts.value);
    if (attempts === undefined) args.retry = null;
    else {
      args.retry = { max_attempts: attempts };
      const delay = typedNumber(inputs.retry_delay_seconds.value);
      const backoff = typedNumber(inputs.retry_backoff.value);
      if (delay !== undefined) args.retry.delay_seconds = delay;
      if (backoff !== undefined) args.retry.backoff = backoff;
    }
    return { args };
  };

  const submit = async () => {
    form.clearErrors();
    const { args, error } = values();
    if (error) {
      form.showError(error);
      return;
    }
    let name = 'job.add';
    let sent = args;
    if (editing) {
      name = 'job.update';
      sent = { name: job.name };
      for (const [key, value] of Object.entries(args)) {
        if (key === 'name') continue;
        if (JSON.stringify(value ?? null) !== JSON.stringify(job[key] ?? null)) sent[key] = value;
      }
      if (Object.keys(sent).length === 1) {
        form.showError({ error: { code: 'unchanged', message: 'nothing changed' } });
        return;
      }
    } else {
      if (args.match === null) delete sent.match;
      if (args.command === null) delete sent.command;
      if (args.retry === null) delete sent.retry;
    }
    const reply = await session.command(name, sent);
    if (!reply.ok) {
      form.showError(reply);
      return;
    }
    toast(`${editing ? 'Job updated' : 'Job added'}: ${reply.result?.name ?? args.name}`);
    dialog.close();
  };

  const dialog = modal(editing ? `Edit job ${job.name}` : 'Add a job', h('form', {
    class: 'job-form', novalidate: true, onsubmit: (event) => { event.preventDefault(); },
  }, form.element, h('div', { class: 'buttons' },
    h('button', { type: 'button', class: 'quiet', onclick: () => dialog.close() }, 'Cancel'),
    busyButton(editing ? 'Save' : 'Add job', submit, { class: 'primary', 'data-testid': 'job-submit' }))),
  { testid: 'job-dialog', wide: true });
  (editing ? inputs.script : inputs.name).focus();
}

/** The interval between two runs, edited in place on the Queue page. */
export function intervalEditor(session, seconds, onDone) {
  const field = input(shown(seconds), { inputmode: 'decimal', 'aria-label': 'Interval in seconds' });
  const form = fieldForm([{ name: 'interval_seconds', label: 'Seconds', input: field }],
    { interval_seconds: ['interval_seconds'] }, { testid: 'interval-form' });
  const save = async () => {
    const value = typedNumber(field.value);
    const reply = await session.command('settings.set', { interval_seconds: value ?? '' });
    if (!reply.ok) {
      form.showError(reply);
      return;
    }
    toast(`Interval set to ${shown(reply.result?.interval_seconds)} s`);
    onDone();
  };
  const element = h('form', { class: 'inline-form', novalidate: true, onsubmit: (e) => e.preventDefault() },
    form.element,
    busyButton('Save', save, { class: 'primary', 'data-testid': 'interval-save' }),
    h('button', { type: 'button', class: 'quiet', onclick: onDone }, 'Cancel'));
  setTimeout(() => field.focus(), 0);
  return element;
}

/** `{max_rows, max_age_days, every_seconds}` in words. */
export function cleanupText(policy) {
  if (!policy) return 'not known yet';
  const limits = [];
  if (policy.max_rows !== null && policy.max_rows !== undefined) limits.push(`the newest ${policy.max_rows} rows`);
  if (policy.max_age_days !== null && policy.max_age_days !== undefined) limits.push(`rows younger than ${policy.max_age_days} days`);
  const method = limits.length === 2 ? 'Combo' : (policy.max_rows != null ? 'Row count' : 'Row age');
  return `${method}: keeps ${limits.join(' and ')}; runs every ${every(policy.every_seconds)}`;
}

/** The Auto Cleanup pop-up of `table` ('executed' or 'failed'). */
export function openCleanup(session, table, policy) {
  const current = policy ?? { max_rows: 1000, max_age_days: 7, every_seconds: 3600 };
  const hasRows = current.max_rows !== null && current.max_rows !== undefined;
  const hasAge = current.max_age_days !== null && current.max_age_days !== undefined;
  const method = h('select', {},
    h('option', { value: 'rows' }, 'Row count (Max Rows)'),
    h('option', { value: 'age' }, 'Row age (Max Age)'),
    h('option', { value: 'combo' }, 'Combo (both)'));
  method.value = hasRows && hasAge ? 'combo' : (hasRows ? 'rows' : 'age');
  const inputs = {
    method,
    max_rows: input(hasRows ? shown(current.max_rows) : '1000', { inputmode: 'numeric' }),
    max_age_days: input(hasAge ? shown(current.max_age_days) : '7', { inputmode: 'decimal' }),
    every_seconds: input(shown(current.every_seconds), { inputmode: 'decimal' }),
  };
  const form = fieldForm([
    { name: 'method', label: 'Cleanup method', input: inputs.method },
    { name: 'max_rows', label: 'Max Rows', input: inputs.max_rows, hint: '1 to 10,000: the oldest rows go first' },
    { name: 'max_age_days', label: 'Max Age (days)', input: inputs.max_age_days },
    { name: 'every_seconds', label: 'Every (s)', input: inputs.every_seconds, hint: '3600: hourly' },
  ], {
    max_rows: ['max_rows'], max_age_days: ['max_age_days'], every_seconds: ['every_seconds'],
    method: ['at least one of max_rows / max_age_days'],
  }, { testid: 'cleanup-form' });
  const sync = () => {
    inputs.max_rows.disabled = method.value === 'age';
    inputs.max_age_days.disabled = method.value === 'rows';
  };
  method.addEventListener('change', sync);
  sync();
  const save = async () => {
    form.clearErrors();
    const policyArgs = {
      max_rows: method.value === 'age' ? null : (typedNumber(inputs.max_rows.value) ?? null),
      max_age_days: method.value === 'rows' ? null : (typedNumber(inputs.max_age_days.value) ?? null),
      every_seconds: typedNumber(inputs.every_seconds.value) ?? '',
    };
    const reply = await session.command('settings.set', { [`${table}_cleanup`]: policyArgs });
    if (!reply.ok) {
      form.showError(reply);
      return;
    }
    toast(`Auto Cleanup of ${table} saved: ${cleanupText(reply.result?.[`${table}_cleanup`])}`);
    dialog.close();
  };
  const cleanNow = async () => {
    const reply = await session.command('cleanup.run', { table });
    if (!reply.ok) {
      form.showError(reply);
      return;
    }
    const removed = reply.result?.[table];
    toast(`Auto Cleanup of ${table} ran now: ${shown(removed)} row${removed === 1 ? '' : 's'} removed`);
  };
  const dialog = modal(`Auto Cleanup: ${table === 'executed' ? 'Executed Jobs' : 'Failed Jobs'}`, h('form', {
    class: 'cleanup-form', novalidate: true, onsubmit: (e) => e.preventDefault(),
  }, form.element, h('div', { class: 'buttons' },
    busyButton('Clean now', cleanNow, { class: 'quiet', 'data-testid': 'cleanup-now' }),
    h('span', { class: 'spacer' }),
    h('button', { type: 'button', class: 'quiet', onclick: () => dialog.close() }, 'Close'),
    busyButton('Save', save, { class: 'primary', 'data-testid': 'cleanup-save' }))),
  { testid: 'cleanup-dialog' });
}


/** The `archive` setting `{max_age_days, every_seconds}` in words. */
export function archiveText(policy) {
  if (!policy) return 'not known yet';
  if (policy.max_age_days === null || policy.max_age_days === undefined) return 'off';
  return `archives the sealed events older than ${policy.max_age_days} days, every ${every(policy.every_seconds)}`;
}

/** The pop-up of automatic archival (settings.set `archive`; an empty age turns it off). */
export function openArchive(session, policy) {
  const current = policy ?? { max_age_days: null, every_seconds: 3600 };
  const on = current.max_age_days !== null && current.max_age_days !== undefined;
  const inputs = {
    max_age_days: input(on ? shown(current.max_age_days) : '', { inputmode: 'decimal', placeholder: 'off' }),
    every_seconds: input(shown(current.every_seconds ?? 3600), { inputmode: 'decimal' }),
  };
  const form = fieldForm([
    { name: 'max_age_days', label: 'Archive events older than (days)', input: inputs.max_age_days,
      hint: 'empty: off. The archive files (the service\'s archive directory) become the only copy of those events.' },
    { name: 'every_seconds', label: 'Every (s)', input: inputs.every_seconds, hint: '86400: daily' },
  ], { max_age_days: ['max_age_days'], every_seconds: ['every_seconds'] }, { testid: 'archive-form' });
  const save = async () => {
    form.clearErrors();
    const args = {
      max_age_days: inputs.max_age_days.value.trim() === '' ? null : (typedNumber(inputs.max_age_days.value) ?? ''),
      every_seconds: typedNumber(inputs.every_seconds.value) ?? '',
    };
    const reply = await session.command('settings.set', { archive: args });
    if (!reply.ok) {
      form.showError(reply);
      return;
    }
    toast(`Automatic archival: ${archiveText(reply.result?.archive)}`);
    dialog.close();
  };
  const dialog = modal('Automatic archival of the event log', h('form', {
    class: 'archive-form', novalidate: true, onsubmit: (e) => e.preventDefault(),
  }, form.element, h('div', { class: 'buttons' },
    h('span', { class: 'spacer' }),
    h('button', { type: 'button', class: 'quiet', onclick: () => dialog.close() }, 'Close'),
    busyButton('Save', save, { class: 'primary', 'data-testid': 'archive-save' }))),
  { testid: 'archive-dialog' });
}
