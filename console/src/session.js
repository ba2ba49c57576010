// One MQTT v5 connection over WebSockets with the operator's own credentials: the retained
// views and status, the events, and commands as the CLI sends them (ResponseTopic under the
// user's own reply tree, CorrelationData). The password lives in this object (and in the
// MQTT client's options, which reconnecting needs) and nowhere else: no storage, no cookie.
import mqtt from './vendor/mqtt.esm.js';

export const USER_RE = /^[A-Za-z0-9_-]{1,64}$/;
const AUTH_CODES = new Map([[134, 'wrong user name or password'], [135, 'not authorized']]);
const VIEWS = new Set(['jobs', 'queue', 'executed', 'failed', 'settings']);
const COMMAND_TIMEOUT_MS = 10_000;
const MAX_PAYLOAD = 4 * 1024 * 1024; // a view is at most 16 MiB by setting; events 2 MiB

function randomHex(bytes) {
  const data = crypto.getRandomValues(new Uint8Array(bytes));
  return Array.from(data, (b) => b.toString(16).padStart(2, '0')).join('');
}

const decoder = new TextDecoder('utf-8', { fatal: true });

function decodeJson(payload) {
  if (!payload || payload.length === 0 || payload.length > MAX_PAYLOAD) return undefined;
  try {
    const value = JSON.parse(decoder.decode(payload));
    return value !== null && typeof value === 'object' && !Array.isArray(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

function correlationText(data) {
  if (data === undefined || data === null) return '';
  if (typeof data === 'string') return data;
  try {
    return new TextDecoder().decode(data);
  } catch {
    return '';
  }
}

export class LoginError extends Error {}

/**
 * Events (EventTarget): 'state' (detail: connection state), 'view' (detail: {name, message}),
 * 'status' (detail: the status object or null), 'event' (detail: an events/{type} message).
 */
export class Session extends EventTarget {
  constructor(config, user, password) {
    super();
    if (!USER_RE.test(user)) throw new LoginError('a user name is 1-64 of A-Z a-z 0-9 _ -');
    this.config = config;
    this.user = user;
    this.prefix = `${config.topic_prefix}/job-manager`;
    this.clientId = `${user}.console-${randomHex(6)}`;
    this.replyTopic = `${this.prefix}/replies/${user}/${this.clientId.slice(user.length + 1)}`;
    this.state = 'idle';
    this.pending = new Map(); // correlation -> {resolve, timer}
    this.status = null;
    this.client = null;
    this.password = password;
  }

  /** Connect; resolves once connected and subscribed, rejects with LoginError when refused. */
  connect() {
    return new Promise((resolve, reject) => {
      let settled = false;
      const fail = (message) => {
        if (settled) return;
        settled = true;
        this.end();
        reject(new LoginError(message));
      };
      const client = mqtt.connect(this.config.ws_url, {
        protocolVersion: 5,
        clientId: this.clientId,
        username: this.user,
        password: this.password,
        clean: true,
        keepalive: 15,
        reconnectPeriod: 1000,
        connectTimeout: 5000,
        resubscribe: true,
        queueQoSZero: false,
        manualConnect: false,
      });
      this.client = client;
      this.setState('connecting');
      const timer = setTimeout(() => fail('the broker did not answer within 10 s'), 10_000);
      client.on('connect', () => {
        this.setState('connected');
        if (settled) return;
        client.subscribe([
          `${this.prefix}/status`, `${this.prefix}/views/+`, `${this.prefix}/events/#`,
          this.replyTopic,
        ], { qos: 1 }, (error) => {
          clearTimeout(timer);
          if (error) {
            fail(`subscribing failed: ${error.message}`);
            return;
          }
          settled = true;
          resolve();
        });
      });
      client.on('error', (error) => {
        const known = AUTH_CODES.get(error?.code);
        if (known) {
          clearTimeout(timer);
          if (!settled) fail(`Login refused: ${known}`);
          else {
            this.setState('refused');
            client.end(true);
          }
        }
      });
      client.on('reconnect', () => this.setState('reconnecting'));
      client.on('offline', () => this.setState('reconnecting'));
      client.on('close', () => {
        if (this.state === 'connected') this.setState('reconnecting');
        this.failPending('the connection to the broker was lost before the reply came');
      });
      client.on('message', (topic, payload, packet) => this.onMessage(topic, payload, packet));
    });
  }

  setState(state) {
    if (this.state === 'closed' || this.state === state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: state }));
  }

  onMessage(topic, payload, packet) {
    if (topic === this.replyTopic) {
      const correlation = correlationText(packet?.properties?.correlationData);
      const waiting = this.pending.get(correlation);
      if (!waiting) return;
      this.pending.delete(correlation);
      clearTimeout(waiting.timer);
      const reply = decodeJson(payload);
      waiting.resolve(reply ?? { ok: false, error: { code: 'internal', message: 'the reply is not a JSON object' } });
      return;
    }
    if (topic === `${this.prefix}/status`) {
      this.status = decodeJson(payload) ?? null; // an empty retained message clears it
      this.dispatchEvent(new CustomEvent('status', { detail: this.status }));
      return;
    }
    const rest = topic.slice(this.prefix.length + 1);
    if (rest.startsWith('views/')) {
      const name = rest.slice('views/'.length);
      const message = decodeJson(payload);
      if (VIEWS.has(name) && message && message.view === name) {
        this.dispatchEvent(new CustomEvent('view', { detail: { name, message } }));
      }
    } else if (rest.startsWith('events/')) {
      const message = decodeJson(payload);
      if (message && typeof message.type === 'string' && Number.isInteger(message.position)) {
        this.dispatchEvent(new CustomEvent('event', { detail: message }));
      }
    }
  }

  /**
   * Send command `name` with `args`; resolves with the reply `{ok, result | error}`. A
   * failure to send or a missing reply resolves as `{ok: false, error: {code, message}}`
   * with code `not_sent` or `no_answer` (never rejects).
   */
  command(name, args = {}, { timeoutMs = COMMAND_TIMEOUT_MS } = {}) {
    const client = this.client;
    if (!client || this.state !== 'connected') {
      return Promise.resolve(localError('not_sent', 'not connected to the broker: nothing was sent'));
    }
    if (name !== 'views.get' && this.status?.state !== 'online') {
      return Promise.resolve(localError('not_sent', `the service is ${this.status?.state ?? 'not known to be running'}: nothing was sent`));
    }
    const correlation = randomHex(16);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(correlation);
        resolve(localError('no_answer', `no reply to ${name} within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      this.pending.set(correlation, { resolve, timer });
      client.publish(`${this.prefix}/commands/${this.user}/${name}`, JSON.stringify(args), {
        qos: 1,
        properties: {
          responseTopic: this.replyTopic,
          correlationData: correlation,
          contentType: 'application/json',
          messageExpiryInterval: Math.ceil(timeoutMs / 1000),
        },
      }, (error) => {
        if (!error) return;
        clearTimeout(timer);
        this.pending.delete(correlation);
        resolve(localError('not_sent', `the broker refused ${name}: ${error.message}`));
      });
    });
  }

  failPending(message) {
    for (const [correlation, waiting] of this.pending) {
      clearTimeout(waiting.timer);
      waiting.resolve(localError('no_answer', message));
      this.pending.delete(correlation);
    }
  }

  /**
   * Whether this user may send commands other than `views.get` (an operator) or not (an
   * auditor), asked of the broker's ACL itself: on a second, short connection, a QoS 1
   * publish to `commands/{user}/console/role-probe`. The operator's ACL (`commands/{user}/#`)
   * lets it through to no one (the service reads `commands/+/+` only); the auditor's
   * (`commands/{user}/views.get` only) refuses it and mosquitto then closes that connection.
   * Anything unclear counts as read-only.
   */
  probeMayCommand() {
    return new Promise((resolve) => {
      let done = false;
      const probe = mqtt.connect(this.config.ws_url, {
        protocolVersion: 5, clientId: `${this.clientId}-probe`, username: this.user,
        password: this.password, clean: true, reconnectPeriod: 0, connectTimeout: 5000,
      });
      const finish = (answer) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        probe.end(true);
        resolve(answer);
      };
      const timer = setTimeout(() => finish(false), 6000);
      probe.on('connect', () => {
        probe.publish(`${this.prefix}/commands/${this.user}/console/role-probe`, '', {
          qos: 1, properties: { messageExpiryInterval: 1 },
        }, (error, packet) => finish(!error && !(packet?.reasonCode >= 0x80)));
      });
      probe.on('error', () => finish(false));
      probe.on('close', () => finish(false));
    });
  }

  /** Close the connection and forget the password. */
  end() {
    this.failPending('logged out');
    this.password = '';
    const client = this.client;
    this.client = null;
    if (client) {
      client.options.password = undefined;
      client.end(true);
    }
    this.setState('closed');
  }
}

function localError(code, message) {
  return { ok: false, error: { code, message } };
}
