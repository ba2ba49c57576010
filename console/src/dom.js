// Building the page. Everything shown comes from the broker, and anyone who may publish a
// notification controls much of it (job names, Commands, Feedback, payloads): it is only
// ever put in the page as text (textContent, text nodes), never as HTML, and cut to a cap.

/** The most characters of one value put in a table cell; the trace shows up to TEXT_CAP. */
export const CELL_CAP = 240;
export const TEXT_CAP = 200_000;

/**
 * An element: h('td', {class: 'x', onclick: f}, 'text', child). Attribute names are the
 * code's own; values and children are set as attribute values and text nodes only.
 */
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') element.className = value;
    else if (key === 'text') element.textContent = capped(value, TEXT_CAP);
    else if (key === 'dataset') Object.assign(element.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') {
      element.addEventListener(key.slice(2), value);
    } else if (key === 'value') element.value = String(value);
    else if (key === 'checked') element.checked = Boolean(value);
    else if (/^(on|style$|href$|src$|srcdoc$|action$|formaction$)/i.test(key)) {
      throw new Error(`attribute ${key} is not set from code here`);
    } else element.setAttribute(key, value === true ? '' : String(value));
  }
  add(element, children);
  return element;
}

function add(element, children) {
  for (const child of children.flat(4)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** `text` (any value) as a string of at most `cap` characters, saying how much was left. */
export function capped(text, cap = CELL_CAP) {
  const value = typeof text === 'string' ? text : String(text);
  if (value.length <= cap) return value;
  return `${value.slice(0, cap)}… [${value.length - cap} more characters]`;
}

/** A value as one line of text: strings as they are, other JSON compact. */
export function shown(value) {
  if (value === null || value === undefined) return '';
  if (typeof value === 'string') return value;
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
}

/** A JSON value pretty-printed (for <pre>), capped. */
export function pretty(value) {
  try {
    return capped(JSON.stringify(value, null, 2), TEXT_CAP);
  } catch {
    return capped(String(value), TEXT_CAP);
  }
}

/** `2026-12-03T16:39:53.119Z` -> `2026-12-03 17:39:53` (local time); '' for none. */
export function when(iso) {
  if (!iso) return '';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  const pad = (n) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} `
    + `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

/** Seconds as `850 ms`, `12.3 s`, `4 min 05 s`, `2 h 10 min`, `3 d 4 h`. */
export function duration(seconds) {
  if (typeof seconds !== 'number' || !Number.isFinite(seconds)) return '';
  const s = Math.max(0, seconds);
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.floor(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(Math.floor(s % 60)).padStart(2, '0')} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

/** A period of seconds in round units: `1 h`, `10 min`, `90 s`. */
export function every(seconds) {
  if (typeof seconds !== 'number' || !Number.isFinite(seconds)) return String(seconds ?? '');
  if (seconds === 0) return '0 s';
  if (seconds % 86400 === 0) return `${seconds / 86400} d`;
  if (seconds % 3600 === 0) return `${seconds / 3600} h`;
  if (seconds % 60 === 0) return `${seconds / 60} min`;
  return `${seconds} s`;
}

/** A short notice in the corner: `kind` is 'ok' or 'error'. */
export function toast(message, kind = 'ok') {
  const box = document.getElementById('toasts');
  const item = h('div', { class: `toast ${kind}`, role: kind === 'error' ? 'alert' : 'status',
    'data-testid': `toast-${kind}` }, capped(message, 2000));
  box.append(item);
  while (box.children.length > 3) box.firstElementChild.remove();
  setTimeout(() => item.remove(), kind === 'error' ? 15000 : 4000);
}

/** Drop every child of `element`. */
export function clear(element) {
  while (element.firstChild) element.firstChild.remove();
  return element;
}
