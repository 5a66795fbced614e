// conveyor-host dashboard: plain JavaScript, no dependencies. Every figure on a page comes from
// the JSON API (the same routes users script against), fetched with the token the user signed
// in with. The token lives in this tab's sessionStorage and travels only in the Authorization
// header, never in a URL. Text from the API is set with textContent, never parsed as HTML.
'use strict';

const TOKEN_KEY = 'conveyor-host.token';
const RUN_POLL_MS = 1000;
const LIST_POLL_MS = 1500;
const DRIVER_POLL_MS = 2000;
const RUNS_PAGE = 50;
const TERMINAL = new Set(['succeeded', 'failed', 'superseded', 'cancelled', 'no-driver']);

// ---- the API ----------------------------------------------------------------------------

/** An answer of the API other than 2xx: its status and its `{"error": ...}` message. */
class Refused extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function authHeaders(extra) {
  const headers = Object.assign({ Accept: 'application/json' }, extra || {});
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = 'Bearer ' + token;
  return headers;
}

/** GETs (or sends) JSON; resolves to { json, headers } or rejects with a Refused. */
async function api(path, options) {
  const opts = options || {};
  const res = await fetch(path, {
    method: opts.method || 'GET',
    headers: authHeaders(opts.body === undefined ? {} : { 'Content-Type': 'application/json' }),
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
    signal: opts.signal,
    cache: 'no-store',
  });
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch (_) {
    json = null;
  }
  if (!res.ok) {
    const message = (json && typeof json.error === 'string') ? json.error : (text || res.statusText);
    throw new Refused(res.status, message);
  }
  return { json, headers: res.headers };
}

// ---- building the page ------------------------------------------------------------------

/** An element: h('td', { class: 'num' }, 'text', child, ...). Strings become text nodes. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const STATUS_LOOK = {
  ready: ['ok', '✓'], succeeded: ['ok', '✓'], success: ['ok', '✓'],
  failed: ['bad', '✗'], failure: ['bad', '✗'], cancelled: ['bad', '⊘'],
  running: ['run', '▶'], retrying: ['run', '↻'], loading: ['run', '…'], queued: ['idle', '◷'],
  pending: ['idle', '◷'], skipped: ['idle', '–'], superseded: ['idle', '⤼'], 'no-driver': ['idle', '∅'],
};

/** A status as a badge: its word and a symbol, coloured, so colour is never the only cue. */
function badge(status) {
  const [tone, symbol] = STATUS_LOOK[status] || (status && status !== 'success' ? ['bad', '!'] : ['idle', '·']);
  return h('span', { class: 'status ' + tone, dataset: { status: status } }, symbol + ' ' + status);
}

function when(rfc3339) {
  if (!rfc3339) return '';
  const d = new Date(rfc3339);
  return isNaN(d) ? rfc3339 : d.toLocaleString();
}

function duration(start, end) {
  if (!start) return '';
  const ms = (end ? new Date(end) : new Date()) - new Date(start);
  if (!(ms >= 0)) return '';
  if (ms < 1000) return ms + ' ms';
  if (ms < 60000) return (ms / 1000).toFixed(1) + ' s';
  return Math.floor(ms / 60000) + ' min ' + Math.round((ms % 60000) / 1000) + ' s';
}

function pretty(value) {
  return h('pre', {}, JSON.stringify(value, null, 2));
}

function table(id, caption, headings, rows) {
  return h('div', { class: 'table-wrap' },
    h('table', { id },
      h('caption', { class: 'muted', style: null }, caption),
      h('thead', {}, h('tr', {}, headings.map(t => h('th', { scope: 'col', class: t.num ? 'num' : null }, t.text || t)))),
      h('tbody', {}, rows)));
}

// ---- page life: timers and streams end when the page changes ------------------------------

let page = { timers: [], aborts: [] };

function leavePage() {
  page.timers.forEach(clearInterval);
  page.aborts.forEach(a => a.abort());
  page = { timers: [], aborts: [] };
}

function every(ms, fn) {
  page.timers.push(setInterval(fn, ms));
}

function abortable() {
  const c = new AbortController();
  page.aborts.push(c);
  return c;
}

const main = () => document.getElementById('main');

function show(title, ...content) {
  document.title = title + ' · conveyor-host';
  const m = main();
  m.replaceChildren(h('h1', {}, title), ...content.flat().filter(c => c !== null && c !== undefined && c !== false));
}

/** Replaces `el`'s children only when what they show changed, so that polling does not reset
 *  focus or a selection while the user reads. */
function refill(el, key, children) {
  if (el.dataset.key === key) return;
  el.dataset.key = key;
  el.replaceChildren(...children);
}

/** What a page does when the API refuses: sign in again on 401, a clear page otherwise. */
function refused(err) {
  if (err instanceof Refused && err.status === 401) {
    signIn('The API refused the request: ' + err.message);
    return;
  }
  const status = err instanceof Refused ? 'HTTP ' + err.status + ': ' : '';
  show('The API refused', h('p', { class: 'alert', role: 'alert', id: 'refused' }, status + err.message),
    h('p', {}, h('a', { href: '#/drivers' }, 'Back to the drivers')));
}

// ---- navigation ---------------------------------------------------------------------------

let embedded = true;

function renderNav() {
  const nav = document.getElementById('nav');
  const here = location.hash.split('?')[0].split('/')[1] || '';
  const links = embedded
    ? [['drivers', 'Drivers'], ['runs', 'Runs'], ['resources', 'Resources'], ['pipelines', 'Pipelines']]
    : [['drivers', 'Drivers']];
  const items = links.map(([path, text]) =>
    h('a', { href: '#/' + path, 'aria-current': here === path ? 'page' : null }, text));
  if (sessionStorage.getItem(TOKEN_KEY)) {
    items.push(h('button', { type: 'button', id: 'signout', onclick: () => { sessionStorage.removeItem(TOKEN_KEY); signIn(''); } }, 'Sign out'));
  }
  nav.replaceChildren(...items);
}

function params() {
  const q = location.hash.split('?')[1] || '';
  return new URLSearchParams(q);
}

async function route() {
  leavePage();
  const parts = location.hash.split('?')[0].replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  renderNav();
  try {
    switch (parts[0]) {
      case 'drivers': return await driversPage();
      case 'runs': return parts[1] ? await runPage(parts[1]) : await runsPage();
      case 'resources':
        if (parts[2]) return await resourcePage(parts[1], parts[2]);
        return parts[1] ? await typePage(parts[1]) : await typesPage();
      case 'pipelines': return await pipelinesPage();
      case 'signin': return signIn('');
      default:
        location.replace(embedded ? '#/runs' : '#/drivers');
    }
  } catch (err) {
    refused(err);
  }
}

// ---- sign in ------------------------------------------------------------------------------

function signIn(reason) {
  leavePage();
  renderNav();
  const input = h('input', { id: 'token', type: 'password', autocomplete: 'off', required: true, spellcheck: 'false' });
  const error = h('p', { id: 'signin-error', class: 'alert', role: 'alert', hidden: !reason }, reason || '');
  const form = h('form', { class: 'signin', id: 'signin' },
    h('label', { for: 'token' }, 'API token'), input,
    h('button', { type: 'submit' }, 'Sign in'), error);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const token = input.value.trim();
    sessionStorage.setItem(TOKEN_KEY, token);
    try {
      await api('/drivers');
    } catch (err) {
      sessionStorage.removeItem(TOKEN_KEY);
      error.hidden = false;
      error.textContent = err instanceof Refused
        ? 'The API refused this token (HTTP ' + err.status + '): ' + err.message
        : 'The API did not answer: ' + err.message;
      input.focus();
      return;
    }
    await detectMode();
    if (location.hash.startsWith('#/signin') || !location.hash) location.hash = embedded ? '#/runs' : '#/drivers';
    else route();
  });
  show('Sign in', h('p', {}, 'This host asks for a token. It stays in this tab and is sent only in the Authorization header.'), form);
  input.focus();
}

/** Embedded mode serves runs; NATS mode only the drivers (its runs live in Conveyor). The
 *  API's own document says which routes it serves. */
async function detectMode() {
  const { json } = await api('/openapi.json');
  embedded = !!(json && json.paths && json.paths['/runs']);
}

// ---- drivers ------------------------------------------------------------------------------

async function driversPage() {
  const tbody = h('tbody', {});
  const stamp = h('p', { class: 'muted', 'aria-live': 'polite' });
  show('Drivers', stamp, h('div', { class: 'table-wrap' }, h('table', { id: 'drivers' },
    h('thead', {}, h('tr', {}, ['Driver', 'Resources', 'Events', 'State', 'sha256', 'Loaded',
      'Started', 'Succeeded', 'Failed', 'Retried', 'In flight'].map((t, i) =>
      h('th', { scope: 'col', class: i >= 6 ? 'num' : null }, t)))), tbody)),
    h('p', { class: 'muted' }, 'Runs: reconciles since the host started; retried ones were put back for another attempt.'));
  const load = async () => {
    const { json } = await api('/drivers');
    refill(tbody, JSON.stringify(json), json.map(driverRow));
    stamp.textContent = json.length + ' driver file' + (json.length === 1 ? '' : 's') + ', updated ' + new Date().toLocaleTimeString();
  };
  await load();
  every(DRIVER_POLL_MS, () => load().catch(refused));
}

function driverRow(d) {
  const runs = d.runs || {};
  const file = (d.file || '').split('/').pop();
  const name = d.name || file;
  const problem = d.error || d.reload_error;
  const loaded = d.state === 'ready'
    ? (d.loaded_from === 'cache' ? 'from cache, ' : (d.loaded_from || '') + ', ') + Math.round(Number(d.load_ms)) + ' ms'
    : d.state === 'loading' ? 'since ' + when(d.since) : 'failed ' + when(d.failed_at);
  return h('tr', { dataset: { driver: name } },
    h('th', { scope: 'row' }, name, h('div', { class: 'muted mono', title: d.file || '' }, file)),
    h('td', {}, (d.resources || []).join(', ')),
    h('td', {}, (d.events || []).length ? d.events.join(', ') : h('span', { class: 'muted' }, 'all')),
    h('td', { class: 'state' }, badge(d.state),
      problem ? h('div', { class: 'error reload-error' }, (d.reload_error ? 'reload failed: ' : '') + problem) : null),
    h('td', {}, d.sha256 ? h('code', { title: d.sha256 }, d.sha256.slice(0, 12)) : ''),
    h('td', { class: 'nowrap' }, loaded),
    ...['started', 'succeeded', 'failed', 'retried', 'in_flight'].map(k =>
      h('td', { class: 'num', dataset: { counter: k } }, runs[k] === undefined ? '' : runs[k])));
}

// ---- runs ---------------------------------------------------------------------------------

const RUN_STATUSES = ['queued', 'running', 'succeeded', 'failed', 'superseded', 'cancelled', 'no-driver'];
const RUN_FILTERS = [['status', 'Status'], ['type', 'Resource type'], ['resource', 'Resource name'], ['pipeline', 'Pipeline']];

async function runsPage() {
  const p = params();
  const form = h('form', { class: 'filters', id: 'run-filters', role: 'search' },
    RUN_FILTERS.map(([key, text]) => h('label', {}, text, key === 'status'
      ? h('select', { name: key }, h('option', { value: '' }, 'any'),
        RUN_STATUSES.map(s => h('option', { value: s, selected: p.get(key) === s }, s)))
      : h('input', { name: key, value: p.get(key) || '', size: 14 }))),
    h('button', { type: 'submit' }, 'Filter'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    for (const [key] of RUN_FILTERS) {
      const v = form.elements[key].value.trim();
      if (v) q.set(key, v);
    }
    location.hash = '#/runs' + (q.toString() ? '?' + q : '');
  });
  const tbody = h('tbody', {});
  const pager = h('div', { class: 'pager' });
  const stamp = h('p', { class: 'muted', 'aria-live': 'polite' });
  show('Runs', form, stamp, h('div', { class: 'table-wrap' }, h('table', { id: 'runs' },
    h('thead', {}, h('tr', {}, ['Status', 'Run', 'Resource', 'Pipeline', 'Started', 'Duration'].map(t => h('th', { scope: 'col' }, t)))),
    tbody)), pager);
  const query = new URLSearchParams();
  for (const [key] of RUN_FILTERS) if (p.get(key)) query.set(key, p.get(key));
  query.set('limit', String(RUNS_PAGE));
  if (p.get('after')) query.set('after', p.get('after'));
  const load = async () => {
    const { json, headers } = await api('/runs?' + query);
    refill(tbody, JSON.stringify(json), json.length ? json.map(runRow)
      : [h('tr', {}, h('td', { colspan: 6, class: 'muted' }, 'No runs' + (p.toString() ? ' match these filters.' : ' yet.')))]);
    const next = headers.get('X-Conveyor-Next-After');
    const older = new URLSearchParams(p);
    if (next) older.set('after', decodeURIComponent(next));
    refill(pager, (next || '') + '|' + (p.get('after') || ''), [
      p.get('after') ? h('a', { href: '#/runs?' + without(p, 'after') }, '← Newest') : null,
      next ? h('a', { href: '#/runs?' + older }, 'Older →') : null,
    ].filter(Boolean));
    stamp.textContent = 'Newest first; updated ' + new Date().toLocaleTimeString();
  };
  await load();
  // Only the first page changes as runs arrive; an older page stays as it is.
  if (!p.get('after')) every(LIST_POLL_MS, () => load().catch(refused));
}

function without(p, key) {
  const q = new URLSearchParams(p);
  q.delete(key);
  return q.toString();
}

function runRow(r) {
  return h('tr', { dataset: { run: r.runid, status: r.status } },
    h('td', {}, badge(r.status)),
    h('td', {}, h('a', { href: '#/runs/' + encodeURIComponent(r.runid), class: 'mono' }, r.runid)),
    h('td', {}, r.resource_type + '/', h('a', { href: '#/resources/' + encodeURIComponent(r.resource_type) + '/' + encodeURIComponent(r.resource_name) }, r.resource_name),
      h('span', { class: 'muted' }, ' (' + r.event + ')')),
    h('td', {}, r.pipeline || h('span', { class: 'muted' }, '—')),
    h('td', {}, when(r.started_at || r.created_at)),
    h('td', {}, duration(r.started_at, r.finished_at)));
}

// ---- a run --------------------------------------------------------------------------------

async function runPage(runid) {
  const { json: first } = await api('/runs/' + encodeURIComponent(runid));
  const facts = h('dl', { class: 'facts', id: 'run-facts' });
  const steps = h('ol', { class: 'steps', id: 'steps', 'aria-label': 'Steps' });
  const results = h('div', { id: 'results' });
  const logs = logView();
  show('Run ' + runid, facts, h('h2', {}, 'Steps'), steps, h('h2', {}, 'Logs'), logs.element,
    h('h2', {}, 'Results'), results);
  const render = (run) => {
    refill(facts, JSON.stringify([run.status, run.message, run.started_at, run.finished_at]), [
      h('dt', {}, 'Status'), h('dd', { id: 'run-status', dataset: { status: run.status } }, badge(run.status),
        run.message ? h('span', { class: 'muted' }, ' ' + run.message) : null),
      h('dt', {}, 'Resource'), h('dd', {}, run.resource_type + '/',
        h('a', { href: '#/resources/' + encodeURIComponent(run.resource_type) + '/' + encodeURIComponent(run.resource_name) }, run.resource_name)),
      h('dt', {}, 'Event'), h('dd', {}, run.event),
      h('dt', {}, 'Pipeline'), h('dd', {}, run.pipeline || '—'),
      h('dt', {}, 'Created'), h('dd', {}, when(run.created_at)),
      h('dt', {}, 'Started'), h('dd', {}, when(run.started_at)),
      h('dt', {}, 'Duration'), h('dd', {}, duration(run.started_at, run.finished_at)),
    ]);
    refill(steps, JSON.stringify(run.steps.map(s => [s.status, s.attempts, s.message, s.finished_at])), run.steps.map(stepItem));
    const done = run.steps.filter(s => s.result);
    refill(results, JSON.stringify(done.map(s => s.result.finished_at)), done.length
      ? done.map(s => h('section', { class: 'result', dataset: { step: s.step } },
        h('h3', {}, 'Step ' + s.step + ': ' + s.driver + ' — ', badge(s.result.outcome)),
        s.result.message ? h('p', {}, s.result.message) : null,
        s.result.data === null ? h('p', { class: 'muted' }, 'No data.') : pretty(s.result.data)))
      : [h('p', { class: 'muted' }, 'No result yet.')]);
  };
  render(first);
  let current = first;
  const refresh = async () => {
    const { json } = await api('/runs/' + encodeURIComponent(runid));
    current = json;
    render(json);
  };
  every(RUN_POLL_MS, () => {
    if (!TERMINAL.has(current.status) || !logs.ended) refresh().catch(refused);
  });
  logs.follow('/logs/pipeline/' + encodeURIComponent(runid), () => refresh().catch(refused));
}

function stepItem(s) {
  const tone = (STATUS_LOOK[s.status] || ['idle'])[0];
  const failed = s.result && s.result.outcome !== 'success';
  return h('li', { class: tone, dataset: { step: s.step, status: s.status } },
    h('div', { class: 'step-head' },
      h('strong', {}, s.step + '. ' + s.name), badge(s.status),
      h('span', {}, 'driver ', h('code', {}, s.driver)),
      h('span', {}, 'event ', s.event || '—'),
      h('span', { class: 'attempts' }, s.attempts + (s.attempts === 1 ? ' attempt' : ' attempts')),
      h('span', { class: 'muted' }, duration(s.started_at, s.finished_at))),
    failed ? h('div', { class: 'failure' }, h('span', { class: 'failure-kind status bad' }, s.result.outcome), ' ',
      h('span', { class: 'failure-message' }, s.result.message)) : null,
    !failed && s.message ? h('div', { class: 'muted' }, s.message) : null);
}

/** The log pane: lines appended in batches (one DOM update per frame, so 10,000 lines stay
 *  responsive), a label filter, and the end-of-run marker. */
function logView() {
  const box = h('div', { id: 'log', role: 'log', 'aria-label': 'Run logs', tabindex: '0' });
  const count = h('span', { class: 'muted', id: 'log-count' }, '0 lines');
  const filterNote = h('span', { id: 'log-filter' });
  const clear = h('button', { type: 'button', id: 'log-clear', hidden: true }, 'Show all lines');
  const state = { lines: [], pending: [], filter: null, ended: false, scheduled: false };
  const matches = (labels) => !state.filter || labels[state.filter[0]] === state.filter[1];
  const applyFilter = () => {
    for (const l of state.lines) l.el.hidden = !matches(l.labels);
    for (const b of box.querySelectorAll('.label')) {
      b.setAttribute('aria-pressed', String(!!state.filter && b.dataset.key === state.filter[0] && b.dataset.value === state.filter[1]));
    }
    filterNote.textContent = state.filter ? 'Showing lines with ' + state.filter[0] + '=' + state.filter[1] : '';
    clear.hidden = !state.filter;
  };
  clear.addEventListener('click', () => { state.filter = null; applyFilter(); });
  box.addEventListener('click', (e) => {
    const b = e.target.closest('.label');
    if (!b) return;
    const same = state.filter && state.filter[0] === b.dataset.key && state.filter[1] === b.dataset.value;
    state.filter = same ? null : [b.dataset.key, b.dataset.value];
    applyFilter();
  });
  const flush = () => {
    state.scheduled = false;
    const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 8;
    const frag = document.createDocumentFragment();
    for (const item of state.pending) frag.append(item.el);
    state.pending = [];
    box.append(frag);
    count.textContent = state.lines.length + (state.lines.length === 1 ? ' line' : ' lines');
    if (atBottom) box.scrollTop = box.scrollHeight;
  };
  const schedule = () => {
    if (!state.scheduled) {
      state.scheduled = true;
      requestAnimationFrame(flush);
    }
  };
  const add = (line) => {
    const labels = {};
    for (const [k, v] of Object.entries(line)) {
      if (!['runid', 'driver', 'pipeline', 'timestamp', 'message'].includes(k)) labels[k] = String(v);
    }
    const el = h('div', { class: 'line' },
      h('span', { class: 'ts' }, (line.timestamp || '').replace('T', ' ').replace(/\.\d+/, '').replace('Z', '')),
      h('span', { class: 'drv' }, line.driver),
      h('span', { class: 'msg' }, line.message),
      Object.entries(labels).map(([k, v]) => h('button', {
        type: 'button', class: 'label', dataset: { key: k, value: v }, 'aria-pressed': 'false',
        title: 'Show only lines with ' + k + '=' + v,
      }, k + '=' + v)));
    el.hidden = !matches(labels);
    const item = { el, labels };
    state.lines.push(item);
    state.pending.push(item);
    schedule();
  };
  const end = (info) => {
    state.ended = true;
    const el = h('div', { class: 'line end', id: 'log-end', dataset: { status: info.status || '' } },
      '— end of run: ' + (info.status || 'over') + (info.message ? ' (' + info.message + ')' : '') + ' —');
    state.pending.push({ el, labels: {} });
    schedule();
  };
  /** Reads the run's Server-Sent Events with fetch (so the token goes in a header) until the
   *  end-of-run event; reconnects from the last line after a dropped connection. */
  const follow = async (path, onEnd) => {
    const ctl = abortable();
    // The last line's sequence number: a reconnect replays the run's stored lines, and those
    // seen before are skipped.
    let lastId = null;
    let failures = 0;
    while (!state.ended && !ctl.signal.aborted) {
      try {
        const headers = authHeaders({ Accept: 'text/event-stream' });
        const res = await fetch(path, { headers, signal: ctl.signal, cache: 'no-store' });
        if (!res.ok) {
          let message = res.statusText;
          try { message = (await res.json()).error || message; } catch (_) { /* not JSON */ }
          throw new Refused(res.status, message);
        }
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let cut;
          while ((cut = buf.indexOf('\n\n')) >= 0) {
            const frame = buf.slice(0, cut);
            buf = buf.slice(cut + 2);
            const ev = { event: 'message', data: [], id: null };
            for (const row of frame.split('\n')) {
              if (row.startsWith(':')) continue;
              const i = row.indexOf(':');
              const field = i < 0 ? row : row.slice(0, i);
              const val = i < 0 ? '' : row.slice(i + 1).replace(/^ /, '');
              if (field === 'event') ev.event = val;
              else if (field === 'data') ev.data.push(val);
              else if (field === 'id') ev.id = val;
            }
            if (!ev.data.length) continue;
            if (ev.id !== null) {
              if (lastId !== null && Number(ev.id) <= Number(lastId)) continue;
              lastId = ev.id;
            }
            const data = JSON.parse(ev.data.join('\n'));
            if (ev.event === 'end') {
              end(data);
              onEnd();
            } else {
              add(data);
            }
          }
        }
        failures = 0;
      } catch (err) {
        if (ctl.signal.aborted) return;
        if (err instanceof Refused && err.status !== 429) {
          box.append(h('div', { class: 'line end', role: 'alert' }, 'The log stream was refused (HTTP ' + err.status + '): ' + err.message));
          return;
        }
        failures += 1;
        await new Promise(r => setTimeout(r, Math.min(5000, 250 * 2 ** failures)));
      }
    }
  };
  const element = h('div', {}, h('div', { class: 'log-tools' }, count, filterNote, clear), box);
  return { element, follow, get ended() { return state.ended; } };
}

// ---- resources, definitions, pipelines -----------------------------------------------------

async function pagedList(path, p) {
  const q = new URLSearchParams({ limit: '100' });
  if (p.get('after')) q.set('after', p.get('after'));
  const { json, headers } = await api(path + '?' + q);
  return { items: json, next: headers.get('X-Conveyor-Next-After') };
}

function pagerLinks(base, p, next) {
  return h('div', { class: 'pager' },
    p.get('after') ? h('a', { href: base }, '← First page') : null,
    next ? h('a', { href: base + '?after=' + next }, 'Next page →') : null);
}

async function typesPage() {
  const p = params();
  const { items, next } = await pagedList('/resource-definitions', p);
  show('Resource types',
    items.length ? table('definitions', 'Resource definitions, by name', ['Type', 'Version', 'Description'], items.map(d =>
      h('tr', { dataset: { type: d.name } },
        h('th', { scope: 'row' }, h('a', { href: '#/resources/' + encodeURIComponent(d.name) }, d.name)),
        h('td', {}, d.version || ''), h('td', {}, d.description || ''))))
      : h('p', { class: 'muted' }, 'No resource definitions yet.'),
    pagerLinks('#/resources', p, next));
}

async function typePage(kind) {
  const p = params();
  const [{ json: def }, { items, next }] = await Promise.all([
    api('/resource-definitions/' + encodeURIComponent(kind)),
    pagedList('/resources/' + encodeURIComponent(kind), p),
  ]);
  show('Resources of type ' + kind,
    items.length ? table('resources', 'Resources, by name', ['Name', 'Version', 'Pipeline', 'Driver results'], items.map(r =>
      h('tr', { dataset: { resource: r.name } },
        h('th', { scope: 'row' }, h('a', { href: '#/resources/' + encodeURIComponent(kind) + '/' + encodeURIComponent(r.name) }, r.name)),
        h('td', {}, (r.metadata || {}).version || ''), h('td', {}, r.pipeline || '—'),
        h('td', {}, Object.keys(r.metadata || {}).filter(k => k.startsWith('driverresults.')).map(k => k.slice(14)).join(', ')))))
      : h('p', { class: 'muted' }, 'No resources of this type.'),
    pagerLinks('#/resources/' + encodeURIComponent(kind), p, next),
    h('h2', {}, 'Definition'), pretty(def));
}

async function resourcePage(kind, name) {
  const path = '/resources/' + encodeURIComponent(kind) + '/' + encodeURIComponent(name);
  const { json: r } = await api(path);
  const meta = r.metadata || {};
  const latest = Number(meta.version) || 0;
  const version = h('div', { id: 'version' });
  const pick = async (v) => {
    try {
      const { json } = await api(path + '/' + v);
      version.replaceChildren(h('h3', {}, 'Version ' + v), pretty(json));
    } catch (err) {
      version.replaceChildren(h('p', { class: 'alert', role: 'alert' }, 'Version ' + v + ': ' + err.message));
    }
  };
  const results = Object.entries(meta).filter(([k]) => k.startsWith('driverresults.'));
  show(kind + '/' + name,
    h('dl', { class: 'facts' },
      h('dt', {}, 'Version'), h('dd', {}, meta.version || ''),
      h('dt', {}, 'Pipeline'), h('dd', {}, r.pipeline || '—'),
      h('dt', {}, 'Runs'), h('dd', {}, h('a', { href: '#/runs?type=' + encodeURIComponent(kind) + '&resource=' + encodeURIComponent(name) }, 'this resource\'s runs'))),
    h('h2', {}, 'Spec'), pretty(r.spec),
    h('h2', {}, 'Driver results'),
    results.length ? results.map(([k, v]) => {
      let value = v;
      try { value = JSON.parse(v); } catch (_) { /* a plain string */ }
      return h('section', { class: 'driver-result' }, h('h3', {}, k.slice(14)), pretty(value));
    }) : h('p', { class: 'muted' }, 'No driver has recorded a result yet.'),
    h('h2', {}, 'Versions'),
    h('div', { class: 'pager' }, Array.from({ length: latest }, (_, i) => latest - i).map(v =>
      h('button', { type: 'button', onclick: () => pick(v) }, 'v' + v))),
    version);
}

async function pipelinesPage() {
  const { json } = await api('/pipelines');
  show('Pipelines', json.length ? json.map(pl => h('section', { class: 'pipeline', dataset: { pipeline: pl.name } },
    h('h2', {}, pl.name, h('span', { class: 'muted' }, ' for ' + pl.resource)),
    pl.description ? h('p', {}, pl.description) : null,
    h('ol', {}, (pl.steps || []).map(s => h('li', {}, s.name || s.id, ' — driver ', h('code', {}, s.driver)))),
    h('p', {}, h('a', { href: '#/runs?pipeline=' + encodeURIComponent(pl.name) }, 'Runs of this pipeline')))) : h('p', { class: 'muted' }, 'No pipelines yet.'));
}

// ---- start --------------------------------------------------------------------------------

async function start() {
  window.addEventListener('hashchange', route);
  try {
    await detectMode();
  } catch (err) {
    if (err instanceof Refused && err.status === 401) {
      signIn(sessionStorage.getItem(TOKEN_KEY) ? 'The API refused the saved token: ' + err.message : '');
      return;
    }
    refused(err);
    return;
  }
  route();
}

start();
