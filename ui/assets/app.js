// voiyd dashboard: one module, no dependencies. It reads and changes the cluster only
// through the HTTP API (/api/v1) and follows the events stream (Server-Sent Events) to
// redraw the page when something changes.

const main = document.getElementById('main');
const live = document.getElementById('live');
const login = document.getElementById('login');
let token = localStorage.getItem('voiyd-token') || '';

class ApiError extends Error {
  constructor(code, message) { super(message); this.code = code; }
}

const esc = (s) => String(s ?? '').replace(/[&<>"']/g,
  (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));

/** Calls the HTTP API; JSON in and out; errors carry the API's one-line message. */
async function api(method, path, body) {
  const headers = {};
  if (token) headers.Authorization = 'Bearer ' + token;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch('/api/v1' + path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { error: text }; }
  if (r.status === 401) { showLogin(); throw new ApiError(401, data?.error || 'a token is needed'); }
  if (!r.ok) throw new ApiError(r.status, data?.error || r.statusText);
  return data;
}

/** EventSource cannot send headers: the token goes in the query. */
const withToken = (url) => token ? url + (url.includes('?') ? '&' : '?') + 'access_token=' + encodeURIComponent(token) : url;

function showLogin() {
  login.hidden = false;
}
login.addEventListener('submit', (e) => {
  e.preventDefault();
  token = document.getElementById('token').value.trim();
  localStorage.setItem('voiyd-token', token);
  login.hidden = true;
  follow();
  route();
});

// ---------- small helpers ----------

const num = (v) => Number(v ?? 0);
const name = (r) => r?.meta?.name ?? '';

function age(rfc3339) {
  if (!rfc3339) return '';
  const s = Math.max(0, (Date.now() - Date.parse(rfc3339)) / 1000);
  if (s < 60) return Math.floor(s) + 's';
  if (s < 3600) return Math.floor(s / 60) + 'm';
  if (s < 86400) return Math.floor(s / 3600) + 'h';
  return Math.floor(s / 86400) + 'd';
}

function bytes(n) {
  n = num(n);
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + ' ' + units[i];
}

function bar(used, total, label) {
  const pct = total > 0 ? Math.min(100, Math.round((100 * used) / total)) : 0;
  return `<div class="bar" title="${esc(label)}"><span style="width:${pct}%"></span><em>${esc(label)}</em></div>`;
}

const phaseClass = (p) => 'phase ' + String(p || 'none').toLowerCase();
const badge = (p) => `<span class="${phaseClass(p)}">${esc(p || '—')}</span>`;
const link = (kind, n) => `<a href="#/${kind}/${encodeURIComponent(n)}">${esc(n)}</a>`;

function ready(t) {
  const c = (t.status?.conditions || []).find((c) => c.type === 'Ready');
  return c ? c.status === 'True' : false;
}

/** The scheduler's reason for a pending task, in plain words. */
function whyPending(message) {
  if (!message) return 'It waits for a node; the scheduler has not said why yet.';
  const words = {
    'insufficient cpu': 'not enough free CPU',
    'insufficient memory': 'not enough free memory',
    'host port in use': 'a host port it needs is taken',
    'node selector mismatch': 'labels that do not match its node selector',
    'cordoned': 'cordoned',
    'not ready': 'not ready',
  };
  const m = message.match(/^(\d+)\/(\d+) nodes available: (.*)$/);
  if (!m) return 'It waits: ' + message + '.';
  const parts = m[3].split(', ').map((p) => {
    const q = p.match(/^(\d+) (.*)$/);
    return q ? `${q[1] === '1' ? '1 node' : q[1] + ' nodes'}: ${words[q[2]] || q[2]}` : p;
  });
  return `No node can take it now (${m[1]} of ${m[2]} nodes could): ${parts.join('; ')}.`;
}

async function act(question, fn) {
  if (!window.confirm(question)) return;
  try { await fn(); } catch (e) { window.alert(e.message); }
  refresh();
}

// ---------- pages ----------

async function overview() {
  const [nodes, tasks, sets] = await Promise.all([api('GET', '/nodes'), api('GET', '/tasks'), api('GET', '/sets')]);
  const byPhase = {};
  for (const t of tasks.items) {
    const p = t.status?.phase || 'Pending';
    byPhase[p] = (byPhase[p] || 0) + 1;
  }
  const readyNodes = nodes.items.filter((n) => n.status?.phase === 'Ready').length;
  const pending = tasks.items.filter((t) => (t.status?.phase || 'Pending') === 'Pending');
  return `
    <section class="cards">
      <div class="card"><b>${readyNodes}/${nodes.items.length}</b> nodes ready</div>
      <div class="card"><b>${tasks.items.length}</b> tasks: ${Object.entries(byPhase).sort().map(([p, n]) => `${badge(p)} ${n}`).join(' ') || 'none'}</div>
      <div class="card"><b>${sets.items.length}</b> sets</div>
    </section>
    <h2>Nodes</h2>${nodeTable(nodes.items, tasks.items)}
    ${pending.length ? `<h2>Waiting for a node</h2><ul class="pending">${pending.map((t) =>
      `<li>${link('task', name(t))}: ${esc(whyPending(t.status?.message))}</li>`).join('')}</ul>` : ''}
    <h2>Events</h2>${feedList(feed.slice(0, 15))}`;
}

function nodeTable(nodes, tasks) {
  const count = {};
  for (const t of tasks) if (t.status?.node) count[t.status.node] = (count[t.status.node] || 0) + 1;
  return `<table><thead><tr><th>Node</th><th>Status</th><th>CPU</th><th>Memory</th><th>Tasks</th></tr></thead><tbody>
    ${nodes.map((n) => {
      const cap = n.status?.capacity || {};
      const al = n.status?.allocated || {};
      const cordoned = n.config?.unschedulable ? ' <span class="tag">cordoned</span>' : '';
      return `<tr><td>${link('node', name(n))}</td><td>${badge(n.status?.phase)}${cordoned}</td>
        <td>${bar(num(al.cpuMillis), num(cap.cpuMillis), `${num(al.cpuMillis)}m / ${num(cap.cpuMillis)}m`)}</td>
        <td>${bar(num(al.memoryBytes), num(cap.memoryBytes), `${bytes(al.memoryBytes)} / ${bytes(cap.memoryBytes)}`)}</td>
        <td>${count[name(n)] || 0}</td></tr>`;
    }).join('')}</tbody></table>`;
}

function taskTable(tasks) {
  return `<table><thead><tr><th>Task</th><th>Phase</th><th>Ready</th><th>Node</th><th>Image</th><th>Restarts</th><th>Age</th></tr></thead><tbody>
    ${tasks.map((t) => `<tr><td>${link('task', name(t))}</td><td>${badge(t.status?.phase || 'Pending')}</td>
      <td>${ready(t) ? 'yes' : 'no'}</td><td>${t.status?.node ? link('node', t.status.node) : ''}</td>
      <td>${esc(t.config?.image)}</td><td>${num(t.status?.restartCount)}</td><td>${age(t.meta?.created)}</td></tr>`).join('')}
  </tbody></table>`;
}

let filter = '';
async function tasksPage() {
  const tasks = await api('GET', '/tasks');
  const shown = tasks.items.filter((t) => !filter || name(t).includes(filter) || (t.status?.node || '').includes(filter));
  return `<h1>Tasks</h1><p><input id="filter" placeholder="filter by name or node" value="${esc(filter)}"></p>${taskTable(shown)}`;
}

function conditions(list) {
  if (!list?.length) return '';
  return `<h2>Conditions</h2><table><thead><tr><th>Type</th><th>Status</th><th>Reason</th><th>Message</th><th>Since</th></tr></thead><tbody>
    ${list.map((c) => `<tr><td>${esc(c.type)}</td><td>${esc(c.status)}</td><td>${esc(c.reason)}</td><td>${esc(c.message)}</td><td>${age(c.lastTransitionTime)}</td></tr>`).join('')}
  </tbody></table>`;
}

async function eventsOf(kind, n) {
  const list = await api('GET', `/events?kind=${kind}&name=${encodeURIComponent(n)}`);
  return feedList(list.items.slice(-20).reverse());
}

async function taskPage(n) {
  const [t, events] = await Promise.all([api('GET', '/tasks/' + encodeURIComponent(n)), eventsOf('task', n)]);
  const st = t.status || {};
  const phase = st.phase || 'Pending';
  const stopped = t.config?.stopped;
  return `<h1>Task ${esc(n)} ${badge(phase)}</h1>
    <p class="actions">
      ${stopped ? `<button data-act="start">Start</button>` : `<button data-act="stop">Stop</button>`}
      <button data-act="delete" class="danger">Delete</button>
    </p>
    ${phase === 'Pending' ? `<p class="why">${esc(whyPending(st.message))}</p>` : ''}
    <dl>
      <dt>Node</dt><dd>${st.node ? link('node', st.node) : '—'}</dd>
      <dt>IP</dt><dd>${esc(st.ip || '—')}</dd>
      <dt>Ready</dt><dd>${ready(t) ? 'yes' : 'no'}</dd>
      <dt>Restarts</dt><dd>${num(st.restartCount)}</dd>
      <dt>Reason</dt><dd>${esc(st.reason || '—')} ${esc(st.message || '')}</dd>
      <dt>Set</dt><dd>${t.meta?.labels?.['voiyd.io/set'] ? link('set', t.meta.labels['voiyd.io/set']) : '—'}</dd>
      <dt>Age</dt><dd>${age(t.meta?.created)}</dd>
    </dl>
    ${conditions(st.conditions)}
    <h2>Spec</h2><pre class="spec">${esc(JSON.stringify(t.config, null, 2))}</pre>
    <h2>Events</h2>${events}`;
}

/** The task page's logs: opened once per visit, followed live, outside the redraws. */
function taskLogs(n) {
  const extra = document.getElementById('extra');
  extra.innerHTML = `<h2>Logs</h2><pre id="logs" class="logs"></pre>`;
  const pre = document.getElementById('logs');
  logs = new EventSource(withToken(`/api/v1/tasks/${encodeURIComponent(n)}/logs?follow=true&tail=200`));
  logs.onmessage = (m) => {
    const l = JSON.parse(m.data);
    const line = document.createElement('span');
    line.className = l.stream === 'stderr' ? 'stderr' : 'stdout';
    line.textContent = l.text + '\n';
    pre.appendChild(line);
    while (pre.childNodes.length > 2000) pre.removeChild(pre.firstChild);
    pre.scrollTop = pre.scrollHeight;
  };
  logs.addEventListener('end', () => { logs.close(); });
  taskConsole(n, extra);
}
let logs = null;
function closeLogs() {
  if (logs) { logs.close(); logs = null; }
  if (consoleSocket) { consoleSocket.close(); consoleSocket = null; }
}

/**
 * The task page's console: a shell in the task's container over a WebSocket, opened on
 * request. Line by line (no terminal): each line typed goes to the shell's input, its
 * output comes back as it is written.
 */
let consoleSocket = null;
function taskConsole(n, extra) {
  const box = document.createElement('div');
  box.innerHTML = `<h2>Console</h2>
    <p><button id="console-open">Open a shell</button></p>
    <pre id="console-out" class="logs console" hidden></pre>
    <form id="console-form" class="console-form" hidden>
      <span class="prompt">$</span>
      <input id="console-in" autocomplete="off" spellcheck="false" placeholder="a command, e.g. ls /" size="60">
      <button type="submit">Run</button>
      <button type="button" id="console-kill">Stop (Ctrl-C)</button>
    </form>`;
  extra.appendChild(box);
  const out = box.querySelector('#console-out');
  const form = box.querySelector('#console-form');
  const input = box.querySelector('#console-in');
  const write = (text, cls) => {
    const span = document.createElement('span');
    span.className = cls;
    span.textContent = text;
    out.appendChild(span);
    while (out.childNodes.length > 2000) out.removeChild(out.firstChild);
    out.scrollTop = out.scrollHeight;
  };
  box.querySelector('#console-open').onclick = (e) => {
    e.target.hidden = true;
    out.hidden = false;
    form.hidden = false;
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const socket = new WebSocket(scheme + '//' + location.host + withToken(`/api/v1/tasks/${encodeURIComponent(n)}/exec`));
    consoleSocket = socket;
    socket.onopen = () => { write('connected: sh in task ' + n + '\n', 'muted'); input.focus(); };
    socket.onmessage = (m) => {
      const f = JSON.parse(m.data);
      if (f.stdout) write(f.stdout, 'stdout');
      if (f.stderr) write(f.stderr, 'stderr');
      if (f.exited) {
        write(f.error ? `[${f.error}]\n` : `[exited with code ${f.code}]\n`, 'muted');
        input.disabled = true;
      }
    };
    socket.onerror = () => write('[the console connection failed]\n', 'stderr');
  };
  form.onsubmit = (e) => {
    e.preventDefault();
    if (!consoleSocket || consoleSocket.readyState !== WebSocket.OPEN) return;
    write('$ ' + input.value + '\n', 'muted');
    consoleSocket.send(JSON.stringify({ stdin: input.value + '\n' }));
    input.value = '';
  };
  box.querySelector('#console-kill').onclick = () => {
    if (consoleSocket) consoleSocket.send(JSON.stringify({ kill: true }));
  };
}

async function setsPage() {
  const sets = await api('GET', '/sets');
  return `<h1>Sets</h1><table><thead><tr><th>Set</th><th>Ready</th><th>Up to date</th><th>Available</th><th>Image</th><th>Age</th></tr></thead><tbody>
    ${sets.items.map((s) => `<tr><td>${link('set', name(s))}</td><td>${num(s.status?.ready)}/${num(s.replicas ?? 1)}</td>
      <td>${num(s.status?.updated)}</td><td>${num(s.status?.available)}</td><td>${esc(s.template?.image)}</td><td>${age(s.meta?.created)}</td></tr>`).join('')}
  </tbody></table>`;
}

async function setPage(n) {
  const [s, tasks, events] = await Promise.all([
    api('GET', '/sets/' + encodeURIComponent(n)),
    api('GET', '/tasks?selector=' + encodeURIComponent('voiyd.io/set=' + n)),
    eventsOf('set', n),
  ]);
  const st = s.status || {};
  const history = st.history || [];
  const progressing = (st.conditions || []).find((c) => c.type === 'Progressing');
  return `<h1>Set ${esc(n)}</h1>
    <p class="actions"><button data-act="scale">Scale</button>
      <button data-act="rollback" ${history.length < 2 ? 'disabled' : ''}>Roll back</button>
      <button data-act="delete" class="danger">Delete</button></p>
    <section class="cards">
      <div class="card"><b id="replicas">${num(st.ready)}/${num(s.replicas ?? 1)}</b> ready</div>
      <div class="card"><b>${num(st.updated)}</b> up to date</div>
      <div class="card"><b>${num(st.available)}</b> available</div>
    </section>
    ${progressing ? `<p class="why">Rollout: ${esc(progressing.reason)} ${esc(progressing.message)}</p>` : ''}
    ${conditions(st.conditions)}
    <h2>Tasks</h2>${taskTable(tasks.items)}
    <h2>History</h2><table><thead><tr><th>Revision</th><th>Image</th><th>Cause</th><th>When</th></tr></thead><tbody>
      ${history.slice().reverse().map((h) => `<tr><td>${esc(h.revision)}${h.templateHash === st.templateHash ? ' (current)' : ''}</td>
        <td>${esc(h.template?.image)}</td><td>${esc(h.cause)}</td><td>${age(h.created)}</td></tr>`).join('')}
    </tbody></table>
    <h2>Spec</h2><pre class="spec">${esc(JSON.stringify(s.template, null, 2))}</pre>
    <h2>Events</h2>${events}`;
}

async function nodesPage() {
  const [nodes, tasks] = await Promise.all([api('GET', '/nodes'), api('GET', '/tasks')]);
  return `<h1>Nodes</h1>${nodeTable(nodes.items, tasks.items)}`;
}

async function nodePage(n) {
  const [node, tasks, events] = await Promise.all([
    api('GET', '/nodes/' + encodeURIComponent(n)),
    api('GET', '/tasks?fieldSelector=' + encodeURIComponent('node=' + n)),
    eventsOf('node', n),
  ]);
  const st = node.status || {};
  const cordoned = node.config?.unschedulable;
  return `<h1>Node ${esc(n)} ${badge(st.phase)}${cordoned ? ' <span class="tag">cordoned</span>' : ''}</h1>
    <p class="actions">${cordoned ? '<button data-act="uncordon">Uncordon</button>' : '<button data-act="cordon">Cordon</button>'}
      <button data-act="drain" class="danger">Drain</button></p>
    <dl>
      <dt>Addresses</dt><dd>${esc((st.addresses || []).join(', ') || '—')}</dd>
      <dt>Subnet</dt><dd>${esc(st.subnet || '—')}</dd>
      <dt>Agent</dt><dd>${esc(st.version || '')} ${esc(st.runtime || '')} ${esc(st.runtimeVersion || '')}</dd>
      <dt>CPU</dt><dd>${bar(num(st.allocated?.cpuMillis), num(st.capacity?.cpuMillis), `${num(st.allocated?.cpuMillis)}m / ${num(st.capacity?.cpuMillis)}m`)}</dd>
      <dt>Memory</dt><dd>${bar(num(st.allocated?.memoryBytes), num(st.capacity?.memoryBytes), `${bytes(st.allocated?.memoryBytes)} / ${bytes(st.capacity?.memoryBytes)}`)}</dd>
      <dt>Labels</dt><dd>${Object.entries(node.meta?.labels || {}).map(([k, v]) => `<span class="tag">${esc(k)}=${esc(v)}</span>`).join(' ')}</dd>
      <dt>Heartbeat</dt><dd>${age(st.lastHeartbeat)} ago</dd>
    </dl>
    ${conditions(st.conditions)}
    <h2>Tasks</h2>${taskTable(tasks.items)}
    <h2>Events</h2>${events}`;
}

async function eventsPage() {
  return `<h1>Events</h1><p class="muted">Live, newest first.</p>${feedList(feed)}`;
}

function feedList(items) {
  if (!items.length) return '<p class="muted">Nothing yet.</p>';
  return `<ol class="feed">${items.map((e) => `<li><time>${age(e.time)}</time> <span class="kind">${esc(e.kind)}</span>
    ${['task', 'set', 'node'].includes(e.kind) ? link(e.kind, e.name) : esc(e.name)} <b>${esc(e.type)}</b> ${esc(e.message || e.reason || '')}</li>`).join('')}</ol>`;
}

// ---------- actions (each asks first) ----------

const actions = {
  async stop(kind, n) { await act(`Stop task ${n}?`, () => api('POST', `/tasks/${encodeURIComponent(n)}/stop`)); },
  async start(kind, n) { await act(`Start task ${n}?`, () => api('POST', `/tasks/${encodeURIComponent(n)}/start`)); },
  async delete(kind, n) {
    await act(`Delete ${kind} ${n}?`, async () => { await api('DELETE', `/${kind}s/${encodeURIComponent(n)}`); location.hash = `#/${kind}s`; });
  },
  async scale(kind, n) {
    const answer = window.prompt(`Replicas for set ${n}:`);
    if (answer === null) return;
    const replicas = Number(answer);
    if (!Number.isInteger(replicas) || replicas < 0) { window.alert(`${answer} is not a number of replicas`); return; }
    await act(`Scale set ${n} to ${replicas}?`, () => api('PATCH', `/sets/${encodeURIComponent(n)}`, { replicas }));
  },
  async rollback(kind, n) {
    const s = await api('GET', `/sets/${encodeURIComponent(n)}`);
    const current = s.status?.templateHash;
    const target = (s.status?.history || []).slice().reverse().find((h) => h.templateHash !== current);
    if (!target) { window.alert(`set ${n} has no earlier template`); return; }
    await act(`Roll set ${n} back to revision ${target.revision} (${target.template?.image})?`, () => {
      const spec = { ...s, template: target.template };
      delete spec.status;
      return api('PUT', `/sets/${encodeURIComponent(n)}`, spec);
    });
  },
  async cordon(kind, n) { await act(`Cordon node ${n}? It takes no new tasks.`, () => api('PATCH', `/nodes/${encodeURIComponent(n)}`, { config: { unschedulable: true } })); },
  async uncordon(kind, n) { await act(`Uncordon node ${n}?`, () => api('PATCH', `/nodes/${encodeURIComponent(n)}`, { config: { unschedulable: false } })); },
  async drain(kind, n) {
    await act(`Drain node ${n}? Its tasks move to other nodes.`, () => api('PATCH', `/nodes/${encodeURIComponent(n)}`,
      { config: { unschedulable: true }, meta: { labels: { 'voiyd.io/drain': 'true' } } }));
  },
};

main.addEventListener('click', (e) => {
  const b = e.target.closest('button[data-act]');
  if (!b || !page) return;
  actions[b.dataset.act](page.kind, page.name);
});
main.addEventListener('input', (e) => {
  if (e.target.id !== 'filter') return;
  filter = e.target.value;
  refresh();
});

// ---------- routing and redrawing ----------

const routes = [
  [/^$/, overview], [/^tasks$/, tasksPage], [/^task\/(.+)$/, taskPage, 'task', taskLogs],
  [/^sets$/, setsPage], [/^set\/(.+)$/, setPage, 'set'], [/^nodes$/, nodesPage],
  [/^node\/(.+)$/, nodePage, 'node'], [/^events$/, eventsPage],
];
let page = null;

function route() {
  closeLogs();
  const h = decodeURIComponent(location.hash.replace(/^#\/?/, ''));
  for (const [re, render, kind, setup] of routes) {
    const m = h.match(re);
    if (!m) continue;
    page = { render: () => render(...m.slice(1)), kind, name: m[1] };
    main.innerHTML = '<section id="view"><p class="muted">Loading…</p></section><section id="extra"></section>';
    if (setup) setup(m[1]);
    return refresh();
  }
  page = null;
  main.innerHTML = '<p>No such page.</p>';
}

let drawing = false;
let again = false;
async function refresh() {
  if (!page) return;
  if (drawing) { again = true; return; }
  drawing = true;
  const shown = page;
  try {
    const html = await shown.render();
    const view = document.getElementById('view');
    if (view && page === shown) {
      const focus = document.activeElement?.id;
      view.innerHTML = html;
      if (focus) document.getElementById(focus)?.focus();
    }
  } catch (e) {
    const view = document.getElementById('view');
    if (view && e.code !== 401) view.innerHTML = `<p class="error">${esc(e.message)}</p>`;
  } finally {
    drawing = false;
    if (again) { again = false; refresh(); }
  }
}

// ---------- live updates ----------

const feed = [];
let events = null;
let redraw = null;
function follow() {
  if (events) events.close();
  // The 20 newest events first, then live (a reconnect resumes from the last id seen).
  events = new EventSource(withToken('/api/v1/events?watch=true&last=20'));
  events.onopen = () => { live.textContent = 'live'; live.className = 'live on'; };
  events.onerror = () => { live.textContent = 'reconnecting'; live.className = 'live'; };
  events.onmessage = (m) => {
    feed.unshift(JSON.parse(m.data));
    if (feed.length > 100) feed.pop();
    // One redraw for a burst of events.
    clearTimeout(redraw);
    redraw = setTimeout(refresh, 250);
  };
}

window.addEventListener('hashchange', route);
// Some changes make no event (heartbeats, allocations): redraw now and then too.
setInterval(refresh, 5000);
follow();
route();
