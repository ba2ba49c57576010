// Modal dialogs (<dialog>), confirmations, and forms whose errors come from the service's
// replies: an `invalid` reply's message names the field it is about ("script 'x': no script
// named ...", "timeout_seconds must be a number from 0.1 to 604800 (seconds)"), and the
// message is shown next to that field.
import { capped, clear, h } from './dom.js';

/** Open a modal dialog; `content` is a node, `buttons` [{label, kind, onclick}]. */
export function modal(title, content, { testid = 'dialog', wide = false } = {}) {
  const dialog = h('dialog', { class: wide ? 'wide' : '', 'data-testid': testid, 'aria-label': title },
    h('div', { class: 'dialog-head' },
      h('h2', {}, title),
      h('button', { type: 'button', class: 'quiet close', 'aria-label': 'Close', onclick: () => dialog.close() }, '×')),
    content);
  dialog.addEventListener('close', () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  return dialog;
}

/** Ask before an irreversible action; resolves true when confirmed. */
export function confirmAction(title, text, confirmLabel) {
  return new Promise((resolve) => {
    let answer = false;
    const dialog = modal(title, h('div', {},
      h('p', { class: 'confirm-text' }, capped(text, 2000)),
      h('div', { class: 'buttons' },
        h('button', { type: 'button', class: 'quiet', onclick: () => dialog.close() }, 'Cancel'),
        h('button', {
          type: 'button', class: 'danger', 'data-testid': 'confirm',
          onclick: () => { answer = true; dialog.close(); },
        }, confirmLabel))), { testid: 'confirm-dialog' });
    dialog.addEventListener('close', () => resolve(answer));
  });
}

/**
 * The field an error message is about: of `fields` ({name: [aliases]}), the one whose alias
 * appears first in `message` as a whole word (the longest alias when two start together).
 */
export function fieldOf(message, fields) {
  let best = null;
  for (const [field, aliases] of Object.entries(fields)) {
    for (const alias of aliases) {
      const escaped = alias.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      const found = new RegExp(`(^|[^A-Za-z0-9_])${escaped}(?![A-Za-z0-9_])`).exec(message);
      if (!found) continue;
      const index = found.index + found[1].length;
      if (!best || index < best.index || (index === best.index && alias.length > best.length)) {
        best = { field, index, length: alias.length };
      }
    }
  }
  return best?.field ?? null;
}

/**
 * A form of labelled fields. `fields`: [{name, label, input (an element), hint?}]; returns
 * {element, showError(reply), clearErrors(), values()}. Errors go next to the field the
 * message names (`aliases`: field -> words naming it), else at the top of the form.
 */
export function fieldForm(fields, aliases, { testid }) {
  const errors = new Map();
  const general = h('p', { class: 'error form-error', role: 'alert', 'data-testid': `${testid}-error` });
  const rows = fields.map((field) => {
    const error = h('span', { class: 'error field-error', role: 'alert', 'data-testid': `error-${field.name}` });
    errors.set(field.name, error);
    field.input.id = `${testid}-${field.name}`;
    field.input.setAttribute('data-testid', `field-${field.name}`);
    return h('div', { class: `field field-${field.name}` },
      h('label', { for: field.input.id }, field.label),
      field.input,
      field.hint ? h('small', { class: 'hint' }, field.hint) : null,
      error);
  });
  const clearErrors = () => {
    general.textContent = '';
    for (const error of errors.values()) error.textContent = '';
    for (const field of fields) field.input.removeAttribute('aria-invalid');
  };
  const showError = (reply) => {
    clearErrors();
    const code = reply?.error?.code ?? 'error';
    const message = capped(reply?.error?.message ?? 'the service gave no reason', 1500);
    const field = fieldOf(message, aliases);
    const target = field && errors.get(field);
    if (target) {
      target.textContent = `${code}: ${message}`;
      const input = fields.find((f) => f.name === field).input;
      input.setAttribute('aria-invalid', 'true');
      input.focus();
    } else {
      general.textContent = `${code}: ${message}`;
    }
  };
  return { element: h('div', { class: 'fields' }, general, rows), showError, clearErrors };
}

/** A button that runs `action` (async) once at a time, disabled meanwhile. */
export function busyButton(label, action, props = {}) {
  const button = h('button', { type: 'button', ...props }, label);
  button.addEventListener('click', async (event) => {
    event.stopPropagation();
    if (button.disabled) return;
    button.disabled = true;
    try {
      await action();
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

export { clear };
