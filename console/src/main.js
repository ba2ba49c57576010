// The console's entry point: the login, the bar that always shows the connection, the
// service's status and any fault, and the four pages (hash routes #jobs, #queue, #executed,
// #failed). config.json (made by the console's server) names the broker's WebSocket URL and
// the topic prefix.
import { capped, clear, h, when } from './dom.js';
import { Lineage } from './lineage.js';
import { DonePage, JobsPage, QueuePage } from './pages.js';
import { LoginError, Session, USER_RE } from './session.js';

const PAGES = ['jobs', 'queue', 'executed', 'failed'];
const $ = (id) => document.getElementById(id);

const config = await fetch('config.json', { cache: 'no-store' }).then((r) => r.json());
let ctx = null;
let ticker = null;
let lastData = null;

function setPill(element, state, text) {
  element.dataset.state = state;
  element.textContent = text;
}

function showConnection(state) {
  const url = capped(config.ws_url, 100);
  const texts = {
    connecting: 'Connecting…', connected: `Connected (${url})`,
    reconnecting: 'Connection lost: reconnecting…', refused: 'Refused by the broker',
    closed: 'Logged out', idle: 'Not connected',
  };
  setPill($('connection'), state, texts[state] ?? state);
  document.body.classList.toggle('stale', Boolean(ctx) && state !== 'connected');
  showService();
  showNotice();
}

function showService() {
  const status = ctx?.session.status;
  const connected = ctx?.session.state === 'connected';
  const pill = $('service');
  if (!ctx) setPill(pill, 'unknown', 'Service: unknown');
  else if (!connected) setPill(pill, 'unknown', `Service: unknown while disconnected${status ? ` (last: ${status.state})` : ''}`);
  else if (!status) setPill(pill, 'unknown', 'Service: no status published');
  else if (status.state === 'online' && status.fault) setPill(pill, 'fault', `Service online since ${when(status.started_at)}, with a FAULT`);
  else if (status.state === 'online') setPill(pill, 'online', `Service online since ${when(status.started_at)}`);
  else setPill(pill, 'offline', `Service OFFLINE${status.at ? ` since ${when(status.at)}` : ''}${status.reason ? ` (${capped(String(status.reason), 60)})` : ''}`);
  const fault = $('fault');
  const lines = [];
  if (status?.fault && typeof status.fault === 'object') {
    const f = status.fault;
    lines.push(`Fault (${capped(String(f.kind ?? 'unknown'), 40)}) since ${when(f.since)}: ${capped(String(f.message ?? ''), 500)}${f.paused ? ' — the service is paused until its store works again' : ''}`);
  }
  if (status?.log_appended) lines.push(`The log was appended to while the service was stopped: ${capped(JSON.stringify(status.log_appended), 300)} (run att-jm audit verify)`);
  if (Array.isArray(status?.broker_warnings)) {
    for (const warning of status.broker_warnings.slice(0, 5)) lines.push(`Broker warning: ${capped(JSON.stringify(warning), 300)}`);
  }
  fault.replaceChildren(...lines.map((line) => h('div', {}, line)));
  fault.hidden = lines.length === 0;
}

function showNotice() {
  const notice = $('notice');
  let text = '';
  if (ctx && ctx.session.state !== 'connected' && ctx.session.state !== 'closed') {
    text = `The connection to the broker is lost: the tables show what was received until ${lastData ? when(lastData) : 'then'}. Reconnecting every second; the page recovers by itself.`;
  } else if (ctx && ctx.session.status?.state === 'offline') {
    text = 'The service is offline: the tables show its last published views; commands are not sent until it is back.';
  }
  notice.textContent = text;
  notice.hidden = !text;
}

function route() {
  if (!ctx) return;
  const name = PAGES.includes(location.hash.slice(1)) ? location.hash.slice(1) : 'jobs';
  for (const link of document.querySelectorAll('nav.tabs a')) {
    link.classList.toggle('active', link.dataset.page === name);
    if (link.dataset.page === name) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  $('page').replaceChildren(ctx.pages[name].element);
  ctx.current = name;
}

async function login(event) {
  event.preventDefault();
  const user = $('login-user').value.trim();
  const passwordInput = $('login-password');
  const error = $('login-error');
  error.textContent = '';
  if (!USER_RE.test(user)) {
    error.textContent = 'A user name is 1-64 characters of A-Z a-z 0-9 _ -';
    return;
  }
  $('login-submit').disabled = true;
  const session = new Session(config, user, passwordInput.value);
  passwordInput.value = '';
  const views = {};
  const lineage = new Lineage();
  const pages = {};
  session.addEventListener('state', (e) => showConnection(e.detail));
  session.addEventListener('status', () => { showService(); showNotice(); });
  session.addEventListener('view', (e) => {
    const { name, message } = e.detail;
    views[name] = message;
    lastData = new Date().toISOString();
    for (const page of Object.values(pages)) page.update(name, message);
  });
  session.addEventListener('event', (e) => lineage.add(e.detail));
  try {
    await session.connect();
  } catch (failure) {
    error.textContent = failure instanceof LoginError ? failure.message : `Login failed: ${failure}`;
    $('login-submit').disabled = false;
    showConnection('idle');
    return;
  }
  const mayCommand = await session.probeMayCommand();
  ctx = { session, lineage, views, mayCommand, pages, current: null };
  pages.jobs = new JobsPage(ctx);
  pages.queue = new QueuePage(ctx);
  pages.executed = new DonePage(ctx, 'executed');
  pages.failed = new DonePage(ctx, 'failed');
  for (const [name, message] of Object.entries(views)) {
    for (const page of Object.values(pages)) page.update(name, message);
  }
  $('who').textContent = `${user} · ${mayCommand ? 'operator' : 'read-only (auditor)'}`;
  $('who').dataset.role = mayCommand ? 'operator' : 'read-only';
  document.body.classList.toggle('read-only', !mayCommand);
  $('logout').hidden = false;
  $('login-screen').hidden = true;
  $('app').hidden = false;
  $('login-submit').disabled = false;
  showConnection(session.state);
  route();
  ticker = setInterval(() => ctx?.pages.queue.tick(), 1000);
}

function logout() {
  if (!ctx) return;
  clearInterval(ticker);
  ctx.session.end();
  ctx = null;
  clear($('page'));
  for (const dialog of document.querySelectorAll('dialog')) dialog.close();
  $('app').hidden = true;
  $('login-screen').hidden = false;
  $('logout').hidden = true;
  $('who').textContent = '';
  document.body.classList.remove('read-only', 'stale');
  showConnection('idle');
  $('login-user').focus();
}

$('login').addEventListener('submit', login);
$('logout').addEventListener('click', logout);
window.addEventListener('hashchange', route);
document.title = `ATT Job Manager console (${capped(config.topic_prefix, 40)})`;
document.body.dataset.ready = 'true';
$('login-user').focus();
