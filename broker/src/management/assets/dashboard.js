// Lepus dashboard: a single page over the management API (the same API lepusctl and
// RabbitMQ's tools use). No framework, no build step, no network but this broker.
//
// Security: the page holds the user's credentials in sessionStorage (gone with the tab) and
// sends them as HTTP basic auth on every API call; what a user sees and may do is decided by
// the API (the page only hides what the API would refuse anyway). Text from the broker is
// always set with textContent, never parsed as HTML.
'use strict';

const REFRESH_MS = 5000;
const AUTH_KEY = 'lepus.auth';
const USER_KEY = 'lepus.user';

const state = {
  auth: sessionStorage.getItem(AUTH_KEY),
  user: null, // {name, tags}
  timer: null,
  view: null, // {refresh()} of the page shown
  generation: 0, // bumped on every navigation, so late answers of an old page are dropped
};

// ---------------------------------------------------------------------------------------
// DOM helpers

/** Builds an element: h('td', {class: 'num'}, 'text', child, ...). */
function h(tag, attrs, ...children) {
  const el = tag === 'svg' || SVG_TAGS.has(tag)
    ? document.createElementNS('http://www.w3.org/2000/svg', tag)
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
const SVG_TAGS = new Set(['path', 'line', 'text', 'g', 'rect', 'polyline']);

function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

const $ = (sel) => document.querySelector(sel);

function enc(s) {
  return encodeURIComponent(s);
}

// ---------------------------------------------------------------------------------------
// Formatting

function fmtNum(n) {
  if (n === undefined || n === null) return '–';
  return Number(n).toLocaleString('en-US');
}

function fmtRate(r) {
  if (r === undefined || r === null) return '–';
  const v = Math.abs(r) >= 100 ? Math.round(r) : Math.round(r * 10) / 10;
  return `${v.toLocaleString('en-US')}/s`;
}

function fmtBytes(b) {
  if (b === undefined || b === null) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = Number(b);
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v >= 100 || i === 0 ? Math.round(v) : v.toFixed(1)} ${units[i]}`;
}

function fmtDuration(ms) {
  const s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400);
  const hh = Math.floor((s % 86400) / 3600);
  const mm = Math.floor((s % 3600) / 60);
  if (d > 0) return `${d}d ${hh}h`;
  if (hh > 0) return `${hh}h ${mm}m`;
  return `${mm}m ${s % 60}s`;
}

function fmtTime(ms) {
  const d = new Date(ms);
  return d.toLocaleString();
}

function rateOf(details) {
  return details && typeof details.rate === 'number' ? details.rate : 0;
}

// ---------------------------------------------------------------------------------------
// The API

class ApiError extends Error {
  constructor(status, reason) {
    super(reason);
    this.status = status;
  }
}

async function api(method, path, body) {
  const headers = {
    Authorization: state.auth,
    'X-Requested-With': 'XMLHttpRequest',
  };
  const init = { method, headers, cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'the broker cannot be reached');
  }
  const text = await resp.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch (e) {
    json = null;
  }
  if (resp.status === 401 && state.user) {
    logout('Your session ended: log in again.');
    throw new ApiError(401, 'not logged in');
  }
  if (!resp.ok) {
    const reason = json && json.reason ? json.reason : `HTTP ${resp.status}`;
    throw new ApiError(resp.status, reason);
  }
  return json;
}

const get = (path) => api('GET', path);

// ---------------------------------------------------------------------------------------
// Who is logged in, and what their tags allow

function hasTag(...tags) {
  return !!state.user && state.user.tags.some((t) => tags.includes(t));
}
const isAdmin = () => hasTag('administrator');
const isMonitor = () => hasTag('administrator', 'monitoring');

function logout(message) {
  sessionStorage.removeItem(AUTH_KEY);
  sessionStorage.removeItem(USER_KEY);
  state.auth = null;
  state.user = null;
  stopRefresh();
  location.hash = '#/';
  render();
  if (message) flash(message, false);
}

// ---------------------------------------------------------------------------------------
// Flash messages and confirmation

let flashTimer = null;
function flash(text, ok = true) {
  const el = $('#flash');
  el.textContent = text;
  el.className = ok ? 'ok' : 'bad';
  el.hidden = false;
  clearTimeout(flashTimer);
  flashTimer = setTimeout(() => { el.hidden = true; }, ok ? 4000 : 8000);
}

function confirmAction(text) {
  const dialog = $('#confirm');
  $('#confirm-text').textContent = text;
  return new Promise((resolve) => {
    const done = () => {
      dialog.removeEventListener('close', done);
      resolve(dialog.returnValue === 'ok');
    };
    dialog.returnValue = '';
    dialog.addEventListener('close', done);
    dialog.showModal();
  });
}

/**
 * A form of class `cls` whose submit runs `work` as an action of `button` (see `act`), with
 * `okText` flashed when it succeeds.
 */
function actionForm(cls, button, okText, work, ...children) {
  return h('form', {
    class: cls,
    onsubmit: (ev) => {
      ev.preventDefault();
      act(button, work, okText);
    },
  }, ...children);
}

/** Runs an action from a button, reporting the API's answer. */
async function act(button, fn, okText) {
  button.disabled = true;
  try {
    await fn();
    if (okText) flash(okText, true);
    await refreshNow();
    return true;
  } catch (e) {
    flash(`${e.status ? `${e.status}: ` : ''}${e.message}`, false);
    return false;
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------------------------------
// Charts: SVG line charts, no library

/**
 * A line chart of `series` ([{label, points: [[t_ms, v], ...]}]), in `unit` ('/s' or '').
 * Returns a container with the SVG and a legend showing each series' latest value.
 */
function lineChart(series, unit) {
  // Drawn at about the size it is shown, so that its text stays legible on a phone.
  const narrow = window.innerWidth < 720;
  const W = narrow ? 360 : 640;
  const H = narrow ? 170 : 190;
  const pad = { l: 42, r: 8, t: 10, b: 24 };
  const all = series.flatMap((s) => s.points);
  const now = Date.now();
  const tMin = all.length ? Math.min(...all.map((p) => p[0])) : now - 60000;
  const tMax = all.length ? Math.max(...all.map((p) => p[0])) : now;
  const vMax = niceMax(all.length ? Math.max(...all.map((p) => p[1])) : 0);
  const x = (t) => pad.l + ((t - tMin) / Math.max(1, tMax - tMin)) * (W - pad.l - pad.r);
  const y = (v) => H - pad.b - (v / vMax) * (H - pad.t - pad.b);
  const svg = h('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': series.map((s) => s.label).join(', ') });
  for (let i = 0; i <= 4; i += 1) {
    const v = (vMax * i) / 4;
    svg.append(
      h('line', { class: 'grid', x1: pad.l, x2: W - pad.r, y1: y(v), y2: y(v) }),
      h('text', { x: pad.l - 6, y: y(v) + 4, 'text-anchor': 'end' }, shortNum(v)),
    );
  }
  svg.append(h('line', { class: 'axis', x1: pad.l, x2: W - pad.r, y1: H - pad.b, y2: H - pad.b }));
  const ticks = narrow ? 2 : 4;
  for (let i = 0; i <= ticks; i += 1) {
    const t = tMin + ((tMax - tMin) * i) / ticks;
    const d = new Date(t);
    const label = `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}:${String(d.getSeconds()).padStart(2, '0')}`;
    svg.append(h('text', { x: x(t), y: H - 6, 'text-anchor': i === 0 ? 'start' : i === ticks ? 'end' : 'middle' }, label));
  }
  series.forEach((s, i) => {
    if (s.points.length === 0) return;
    const d = s.points.map((p, j) => `${j === 0 ? 'M' : 'L'}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(' ');
    svg.append(h('path', { class: `line s${(i % 4) + 1}`, d }));
  });
  const legend = h('div', { class: 'legend' }, series.map((s, i) => {
    const last = s.points.length ? s.points[s.points.length - 1][1] : 0;
    return h('span', {}, h('i', { class: `s${(i % 4) + 1}` }), `${s.label} `, h('b', { dataset: { series: s.label } }, unit === '/s' ? fmtRate(last) : fmtNum(Math.round(last))));
  }));
  return h('div', { class: 'chart' }, svg, legend);
}

function niceMax(v) {
  if (v <= 0) return 1;
  const exp = 10 ** Math.floor(Math.log10(v));
  const f = v / exp;
  const nice = f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10;
  return nice * exp;
}

function shortNum(v) {
  if (v >= 1e6) return `${(v / 1e6).toFixed(v % 1e6 ? 1 : 0)}M`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(v % 1e3 ? 1 : 0)}k`;
  return String(Math.round(v * 10) / 10);
}

/** Rates from a counter's samples (newest first, as the API gives them): [[t, per s]]. */
function ratePoints(details) {
  const s = (details && details.samples) || [];
  const pts = [];
  for (let i = s.length - 1; i > 0; i -= 1) {
    const a = s[i];
    const b = s[i - 1];
    const dt = (b.timestamp - a.timestamp) / 1000;
    if (dt > 0) pts.push([b.timestamp, Math.max(0, (b.sample - a.sample) / dt)]);
  }
  return pts;
}

/** A gauge's samples as points, oldest first. */
function valuePoints(details) {
  return ((details && details.samples) || []).slice().reverse().map((s) => [s.timestamp, s.sample]);
}

// ---------------------------------------------------------------------------------------
// Tables

/**
 * A sortable table. `columns`: [{key, label, num, value(row), cell(row), hideNarrow}].
 * `sort` is kept by the caller between refreshes ({key, asc}).
 */
function table(rows, columns, sort, onSort, emptyText) {
  const head = h('tr', {}, columns.map((c) => {
    const sortable = !!c.value;
    const cls = [c.num ? 'num' : '', sortable ? 'sortable' : '', sort && sort.key === c.key ? `sorted${sort.asc ? ' asc' : ''}` : '', c.hideNarrow ? 'hide-narrow' : ''].join(' ').trim();
    return h('th', {
      class: cls || null,
      onclick: sortable && onSort ? () => onSort(c.key) : null,
    }, c.label);
  }));
  let sorted = rows;
  if (sort) {
    const col = columns.find((c) => c.key === sort.key);
    if (col && col.value) {
      sorted = rows.slice().sort((a, b) => {
        const va = col.value(a);
        const vb = col.value(b);
        const cmp = typeof va === 'number' && typeof vb === 'number' ? va - vb : String(va).localeCompare(String(vb));
        return sort.asc ? cmp : -cmp;
      });
    }
  }
  const body = sorted.length
    ? sorted.map((r) => h('tr', {}, columns.map((c) => h('td', { class: [c.num ? 'num' : '', c.hideNarrow ? 'hide-narrow' : '', c.wrap ? 'wrap' : ''].join(' ').trim() || null }, c.cell ? c.cell(r) : c.value(r)))))
    : [h('tr', {}, h('td', { class: 'empty', colspan: columns.length }, emptyText || 'Nothing here.'))];
  return h('div', { class: 'table-wrap' }, h('table', {}, h('thead', {}, head), h('tbody', {}, body)));
}

function sorter(view, defaultKey, asc = true) {
  view.sort = view.sort || { key: defaultKey, asc };
  return (key) => {
    if (view.sort.key === key) view.sort.asc = !view.sort.asc;
    else view.sort = { key, asc: true };
    view.refresh();
  };
}

// ---------------------------------------------------------------------------------------
// Pages

const ROUTES = [
  [/^#\/?$/, overviewPage],
  [/^#\/queues\/?$/, queuesPage],
  [/^#\/queues\/([^/]+)\/(.+)$/, queuePage],
  [/^#\/exchanges\/?$/, exchangesPage],
  [/^#\/exchanges\/([^/]+)\/(.*)$/, exchangePage],
  [/^#\/connections\/?$/, connectionsPage],
  [/^#\/channels\/?$/, channelsPage],
  [/^#\/admin\/?$/, adminPage],
];

function navLinks() {
  const links = [['#/', 'Overview'], ['#/queues', 'Queues'], ['#/exchanges', 'Exchanges'], ['#/connections', 'Connections'], ['#/channels', 'Channels']];
  if (isAdmin()) links.push(['#/admin', 'Admin']);
  const nav = clear($('#nav'));
  const here = location.hash || '#/';
  for (const [href, label] of links) {
    const active = href === '#/' ? here === '#/' || here === '#' : here.startsWith(href);
    nav.append(h('a', { href, class: active ? 'active' : null, dataset: { nav: label.toLowerCase() } }, label));
  }
}

function stopRefresh() {
  clearInterval(state.timer);
  state.timer = null;
}

async function refreshNow() {
  if (state.view && state.view.refresh) {
    const gen = state.generation;
    try {
      await state.view.refresh();
    } catch (e) {
      if (gen === state.generation && e.status !== 401) {
        flash(`${e.status ? `${e.status}: ` : ''}${e.message}`, false);
      }
    }
  }
}

async function render() {
  stopRefresh();
  state.generation += 1;
  const main = clear($('#main'));
  if (!state.auth || !state.user) {
    $('#who-box').hidden = true;
    clear($('#nav'));
    loginPage(main);
    return;
  }
  $('#who-box').hidden = false;
  const who = clear($('#who'));
  who.append(state.user.name, ' ', ...state.user.tags.map((t) => h('span', { class: 'tag' }, t)));
  navLinks();
  const hash = location.hash || '#/';
  for (const [re, page] of ROUTES) {
    const m = hash.match(re);
    if (m) {
      state.view = page(main, ...m.slice(1).map(decodeURIComponent));
      await refreshNow();
      state.timer = setInterval(() => {
        if (!document.hidden) refreshNow();
      }, REFRESH_MS);
      return;
    }
  }
  main.append(h('div', { class: 'panel' }, h('h1', {}, 'Not found'), h('p', {}, h('a', { href: '#/' }, 'Back to the overview'))));
}

// ----- Login ----------------------------------------------------------------------------

function loginPage(main) {
  const user = h('input', { type: 'text', id: 'login-user', name: 'username', autocomplete: 'username', required: true, autofocus: true });
  const pass = h('input', { type: 'password', id: 'login-pass', name: 'password', autocomplete: 'current-password', required: true });
  const error = h('p', { class: 'inline-error', role: 'alert', dataset: { test: 'login-error' } });
  const form = h('form', {
    onsubmit: async (ev) => {
      ev.preventDefault();
      error.textContent = '';
      state.auth = `Basic ${btoa(unescape(encodeURIComponent(`${user.value}:${pass.value}`)))}`;
      try {
        const me = await get('/api/whoami');
        state.user = { name: me.name, tags: me.tags || [] };
        sessionStorage.setItem(AUTH_KEY, state.auth);
        sessionStorage.setItem(USER_KEY, JSON.stringify(state.user));
        render();
      } catch (e) {
        state.auth = null;
        error.textContent = e.status === 401 ? 'Wrong user name or password.'
          : e.status === 403 ? 'This user has no access to the management UI (it needs a management, monitoring or administrator tag).'
            : e.message;
      }
    },
  },
  h('label', { class: 'field' }, 'User name', user),
  h('label', { class: 'field' }, 'Password', pass),
  h('button', { type: 'submit', class: 'primary', dataset: { test: 'login' } }, 'Log in'),
  error);
  main.append(h('div', { class: 'login' }, h('div', { class: 'panel' }, h('h1', {}, 'Log in to Lepus'), form,
    h('p', { class: 'muted small' }, 'Use a broker user tagged management, monitoring or administrator.'))));
}

// ----- Overview -------------------------------------------------------------------------

function card(label, value, sub, test) {
  return h('div', { class: 'card' }, h('div', { class: 'label' }, label), h('div', { class: 'value', dataset: { test } }, value), sub ? h('div', { class: 'sub' }, sub) : null);
}

function meter(label, used, limit, detail) {
  const pct = limit > 0 ? Math.min(100, (used / limit) * 100) : 0;
  const fill = h('div', { class: `fill${pct >= 90 ? ' high' : ''}` });
  fill.style.width = `${pct.toFixed(1)}%`;
  return h('div', { class: 'meter' },
    h('div', { class: 'meter-label' }, h('span', {}, label), h('span', { class: 'muted' }, detail || `${fmtBytes(used)} of ${fmtBytes(limit)}`)),
    h('div', { class: 'bar' }, fill));
}

function overviewPage(main) {
  const cards = h('div', { class: 'cards' });
  const rates = h('div', { class: 'panel' });
  const lengths = h('div', { class: 'panel' });
  const node = h('div', {});
  main.append(h('div', { class: 'title-row' }, h('div', {}, h('h1', {}, 'Overview'), h('div', { class: 'muted small', id: 'cluster' }))), cards, h('div', { class: 'grid2' }, rates, lengths), h('div', { class: 'stack' }), node);
  return {
    async refresh() {
      const q = '?msg_rates_age=600&msg_rates_incr=5&lengths_age=600&lengths_incr=5';
      const [ov, nodes] = await Promise.all([
        get(`/api/overview${q}`),
        isMonitor() ? get(`/api/nodes${q}`) : Promise.resolve(null),
      ]);
      const qt = ov.queue_totals || {};
      const ot = ov.object_totals || {};
      const ms = ov.message_stats || {};
      $('#cluster').textContent = `${ov.product_name} ${ov.product_version} · node ${ov.node}`;
      clear(cards).append(
        card('Messages queued', fmtNum(qt.messages), `${fmtRate(rateOf(qt.messages_details))} change`, 'total-messages'),
        card('Ready', fmtNum(qt.messages_ready), null, 'total-ready'),
        card('Unacked', fmtNum(qt.messages_unacknowledged), null, 'total-unacked'),
        card('Publish', fmtRate(rateOf(ms.publish_details)), `${fmtNum(ms.publish)} total`, 'publish-rate'),
        card('Deliver / get', fmtRate(rateOf(ms.deliver_get_details)), `${fmtNum(ms.deliver_get)} total`, 'deliver-rate'),
        card('Connections', fmtNum(ot.connections), null, 'connections'),
        card('Channels', fmtNum(ot.channels)),
        card('Queues', fmtNum(ot.queues)),
        card('Consumers', ot.consumers === undefined ? '–' : fmtNum(ot.consumers)),
        card('Exchanges', fmtNum(ot.exchanges)),
      );
      clear(rates).append(h('h2', {}, 'Message rates'), lineChart([
        { label: 'Publish', points: ratePoints(ms.publish_details) },
        { label: 'Deliver / get', points: ratePoints(ms.deliver_get_details) },
        { label: 'Ack', points: ratePoints(ms.ack_details) },
        { label: 'Confirm', points: ratePoints(ms.confirm_details) },
      ], '/s'));
      clear(lengths).append(h('h2', {}, 'Queued messages'), lineChart([
        { label: 'Ready', points: valuePoints(qt.messages_ready_details) },
        { label: 'Unacked', points: valuePoints(qt.messages_unacknowledged_details) },
      ], ''));
      clear(node);
      if (nodes && nodes[0]) node.append(nodePanel(nodes[0]));
    },
  };
}

function nodePanel(n) {
  const l = n.lepus || {};
  const store = l.store;
  const hist = l.history || {};
  const alarm = n.mem_alarm ? h('span', { class: 'tag bad' }, 'memory alarm: publishers blocked') : h('span', { class: 'tag ok' }, 'no alarms');
  const memory = h('div', { class: 'panel' },
    h('div', { class: 'panel-head' }, h('h2', {}, 'Memory'), alarm),
    meter('Process (RSS) against the high-watermark', n.mem_used, n.mem_limit),
    meter('Queued messages against the memory budget', l.memory_accounted, l.memory_budget,
      `${fmtBytes(l.memory_accounted)} of ${fmtBytes(l.memory_budget)} (paging past ${fmtBytes(l.memory_budget / 4)})`),
    h('dl', { class: 'kv' },
      h('dt', {}, 'High-watermark'), h('dd', {}, fmtBytes(n.mem_limit)),
      h('dt', {}, 'Memory budget'), h('dd', {}, fmtBytes(l.memory_budget)),
      h('dt', {}, 'File descriptors'), h('dd', {}, n.fd_total ? `${fmtNum(n.fd_used)} of ${fmtNum(n.fd_total)}` : '–'),
      h('dt', {}, 'Disk free'), h('dd', {}, fmtBytes(n.disk_free)),
      h('dt', {}, 'Uptime'), h('dd', {}, fmtDuration(n.uptime)),
      h('dt', {}, 'Node'), h('dd', {}, `${n.name} · pid ${n.os_pid} · ${n.processors} CPUs`)));
  const storeBox = h('div', { class: 'panel' }, h('h2', {}, 'Store'));
  if (store) {
    storeBox.append(
      h('dl', { class: 'kv' },
        h('dt', {}, 'Data directory'), h('dd', { class: 'mono' }, l.data_dir || '–'),
        h('dt', {}, 'Fsync policy'), h('dd', {}, l.fsync),
        h('dt', {}, 'Fsyncs'), h('dd', {}, `${fmtNum(store.fsyncs)} (${fmtRate(rateOf(hist.fsyncs_details))})`),
        h('dt', {}, 'Records per batch'), h('dd', {}, store.batches ? (store.records / store.batches).toFixed(1) : '–'),
        h('dt', {}, 'Written'), h('dd', {}, `${fmtBytes(store.bytes_written)} (${fmtBytes(rateOf(hist.store_bytes_written_details))}/s)`),
        h('dt', {}, 'Segments'), h('dd', {}, `${fmtNum(store.segments)} on disk, ${fmtNum(store.segments_deleted)} deleted`),
        h('dt', {}, 'Persistent messages'), h('dd', {}, fmtNum(store.live_messages))),
      lineChart([{ label: 'Fsyncs', points: ratePoints(hist.fsyncs_details) }], '/s'));
  } else {
    storeBox.append(h('p', { class: 'muted' }, 'No data directory: everything is kept in memory.'));
  }
  return h('div', { class: 'grid2' }, memory, storeBox);
}

// ----- Queues ---------------------------------------------------------------------------

function queueLink(q) {
  return h('a', { href: `#/queues/${enc(q.vhost)}/${enc(q.name)}`, dataset: { queue: q.name } }, q.name);
}

function features(q) {
  const tags = [];
  if (q.durable) tags.push(h('span', { class: 'tag grey', title: 'durable' }, 'D'));
  if (q.auto_delete) tags.push(h('span', { class: 'tag grey', title: 'auto-delete' }, 'AD'));
  if (q.exclusive) tags.push(h('span', { class: 'tag grey', title: 'exclusive' }, 'Excl'));
  for (const k of Object.keys(q.arguments || {})) {
    tags.push(h('span', { class: 'tag', title: `${k}: ${JSON.stringify(q.arguments[k])}` }, k.replace(/^x-/, '')));
  }
  return tags;
}

async function vhostSelect(id) {
  const vhosts = await get('/api/vhosts');
  return h('select', { id }, vhosts.map((v) => h('option', { value: v.name }, v.name)));
}

function parseArgs(text) {
  if (!text.trim()) return {};
  const v = JSON.parse(text);
  if (typeof v !== 'object' || Array.isArray(v) || v === null) throw new Error('arguments must be a JSON object');
  return v;
}

function queuesPage(main) {
  const view = {};
  const filter = h('input', { type: 'search', placeholder: 'Filter by name or vhost', 'aria-label': 'Filter queues', dataset: { test: 'queue-filter' }, oninput: () => view.refresh() });
  const list = h('div', {});
  const count = h('span', { class: 'muted small' });
  const addBox = h('div', {});
  main.append(h('div', { class: 'title-row' }, h('h1', {}, 'Queues'), count), h('div', { class: 'panel' }, h('div', { class: 'toolbar' }, filter), list), addBox);
  const onSort = sorter(view, 'name');
  (async () => {
    const vhost = await vhostSelect('new-queue-vhost');
    const name = h('input', { type: 'text', id: 'new-queue-name', required: true });
    const durable = h('input', { type: 'checkbox', checked: true });
    const args = h('textarea', { placeholder: '{"x-max-length": 1000, "x-message-ttl": 60000}', 'aria-label': 'Arguments' });
    const submit = h('button', { type: 'submit', class: 'primary' }, 'Add queue');
    addBox.append(h('div', { class: 'panel' }, h('details', {}, h('summary', {}, 'Add a queue'),
      actionForm('form-grid', submit, 'Queue declared.', async () => {
        await api('PUT', `/api/queues/${enc(vhost.value)}/${enc(name.value)}`, { durable: durable.checked, auto_delete: false, arguments: parseArgs(args.value) });
        name.value = '';
      },
      h('label', { class: 'field' }, 'Vhost', vhost),
      h('label', { class: 'field' }, 'Name', name),
      h('label', { class: 'check' }, durable, 'Durable'),
      h('label', { class: 'field wide' }, 'Arguments (JSON)', args),
      h('div', {}, submit)))));
  })().catch(() => {});
  view.refresh = async () => {
    const queues = await get('/api/queues');
    const f = filter.value.trim().toLowerCase();
    const rows = f ? queues.filter((q) => q.name.toLowerCase().includes(f) || q.vhost.toLowerCase().includes(f)) : queues;
    count.textContent = `${rows.length} of ${queues.length}`;
    const st = (q, k) => rateOf((q.message_stats || {})[k]);
    clear(list).append(table(rows, [
      { key: 'vhost', label: 'Vhost', value: (q) => q.vhost, hideNarrow: true },
      { key: 'name', label: 'Name', value: (q) => q.name, cell: queueLink },
      { key: 'features', label: 'Features', cell: features, hideNarrow: true },
      { key: 'ready', label: 'Ready', num: true, value: (q) => q.messages_ready, cell: (q) => fmtNum(q.messages_ready) },
      { key: 'unacked', label: 'Unacked', num: true, value: (q) => q.messages_unacknowledged, cell: (q) => fmtNum(q.messages_unacknowledged) },
      { key: 'total', label: 'Total', num: true, value: (q) => q.messages, cell: (q) => fmtNum(q.messages) },
      { key: 'in', label: 'In', num: true, value: (q) => st(q, 'publish_details'), cell: (q) => fmtRate(st(q, 'publish_details')) },
      { key: 'out', label: 'Out', num: true, value: (q) => st(q, 'deliver_get_details'), cell: (q) => fmtRate(st(q, 'deliver_get_details')) },
      { key: 'consumers', label: 'Consumers', num: true, value: (q) => q.consumers, cell: (q) => fmtNum(q.consumers), hideNarrow: true },
    ], view.sort, onSort, f ? 'No queue matches the filter.' : 'No queues yet.'));
  };
  return view;
}

function queuePage(main, vhost, name) {
  const base = `/api/queues/${enc(vhost)}/${enc(name)}`;
  const cards = h('div', { class: 'cards' });
  const rates = h('div', { class: 'panel' });
  const lengths = h('div', { class: 'panel' });
  const info = h('div', { class: 'panel' });
  const consumers = h('div', { class: 'panel' });
  const bindings = h('div', {});
  const purge = h('button', { type: 'button', class: 'danger', dataset: { test: 'purge' } }, 'Purge');
  const del = h('button', { type: 'button', class: 'danger', dataset: { test: 'delete-queue' } }, 'Delete');
  purge.addEventListener('click', async () => {
    if (await confirmAction(`Remove every ready message from queue "${name}"?`)) {
      act(purge, () => api('DELETE', `${base}/contents`), 'Queue purged.');
    }
  });
  del.addEventListener('click', async () => {
    if (await confirmAction(`Delete queue "${name}" and its messages?`)) {
      const done = await act(del, () => api('DELETE', base), 'Queue deleted.');
      if (done) location.hash = '#/queues';
    }
  });
  main.append(
    h('div', { class: 'title-row' },
      h('div', {}, h('div', { class: 'muted small' }, h('a', { href: '#/queues' }, 'Queues'), ` / vhost ${vhost}`), h('h1', { dataset: { test: 'queue-name' } }, name)),
      h('div', { class: 'actions' }, purge, del)),
    cards,
    h('div', { class: 'grid2' }, rates, lengths),
    h('div', { class: 'stack' }),
    h('div', { class: 'grid2' }, publishPanel(vhost, '', name, true), getPanel(base)),
    h('div', { class: 'stack' }),
    h('div', { class: 'grid2' }, info, consumers),
    h('div', { class: 'stack' }),
    h('div', { class: 'panel' }, h('h2', {}, 'Bindings'), bindings, bindForm(vhost, { kind: 'q', name })),
  );
  return {
    async refresh() {
      const q = await get(`${base}?msg_rates_age=120&msg_rates_incr=5&lengths_age=120&lengths_incr=5`);
      const ms = q.message_stats || {};
      clear(cards).append(
        card('Messages', fmtNum(q.messages), `${fmtRate(rateOf(q.messages_details))} change`, 'queue-messages'),
        card('Ready', fmtNum(q.messages_ready), fmtBytes(q.message_bytes_ready), 'queue-ready'),
        card('Unacked', fmtNum(q.messages_unacknowledged), null, 'queue-unacked'),
        card('Incoming', fmtRate(rateOf(ms.publish_details)), `${fmtNum(ms.publish)} total`, 'queue-publish-rate'),
        card('Delivered / got', fmtRate(rateOf(ms.deliver_get_details)), `${fmtNum(ms.deliver_get)} total`, 'queue-deliver-rate'),
        card('Consumers', fmtNum(q.consumers), null, 'queue-consumers'),
      );
      clear(rates).append(h('h2', {}, 'Message rates'), lineChart([
        { label: 'Incoming', points: ratePoints(ms.publish_details) },
        { label: 'Delivered / got', points: ratePoints(ms.deliver_get_details) },
      ], '/s'));
      clear(lengths).append(h('h2', {}, 'Messages'), lineChart([
        { label: 'Ready', points: valuePoints(q.messages_ready_details) },
        { label: 'Unacked', points: valuePoints(q.messages_unacknowledged_details) },
      ], ''));
      const args = Object.entries(q.arguments || {});
      clear(info).append(h('h2', {}, 'Details'), h('dl', { class: 'kv' },
        h('dt', {}, 'Type'), h('dd', {}, q.type),
        h('dt', {}, 'State'), h('dd', {}, q.state),
        h('dt', {}, 'Durable'), h('dd', {}, q.durable ? 'yes' : 'no'),
        h('dt', {}, 'Auto-delete'), h('dd', {}, q.auto_delete ? 'yes' : 'no'),
        h('dt', {}, 'Exclusive'), h('dd', {}, q.exclusive ? 'yes' : 'no'),
        h('dt', {}, 'Arguments'), h('dd', {}, args.length ? args.map(([k, v]) => h('div', { class: 'mono' }, `${k} = ${JSON.stringify(v)}`)) : h('span', { class: 'muted' }, 'none'))));
      clear(consumers).append(h('h2', {}, `Consumers (${(q.consumer_details || []).length})`), table(q.consumer_details || [], [
        { key: 'tag', label: 'Tag', cell: (c) => h('span', { class: 'mono' }, c.consumer_tag) },
        { key: 'ch', label: 'Channel', cell: (c) => c.channel_details.name },
        { key: 'ack', label: 'Ack', cell: (c) => (c.ack_required ? 'manual' : 'auto') },
        { key: 'prefetch', label: 'Prefetch', num: true, cell: (c) => fmtNum(c.prefetch_count) },
      ], null, null, 'No consumers.'));
      const bs = await get(`${base}/bindings`);
      clear(bindings).append(table(bs, [
        { key: 'source', label: 'From exchange', cell: (b) => (b.source === '' ? h('span', { class: 'muted' }, '(default exchange)') : h('a', { href: `#/exchanges/${enc(b.vhost)}/${enc(b.source)}` }, b.source)) },
        { key: 'key', label: 'Routing key', cell: (b) => h('span', { class: 'mono' }, b.routing_key) },
        { key: 'args', label: 'Arguments', wrap: true, cell: (b) => h('span', { class: 'mono' }, Object.keys(b.arguments || {}).length ? JSON.stringify(b.arguments) : '') },
      ], null, null, 'No bindings.'));
    },
  };
}

/** A form publishing a message to `exchange` (the default exchange: routing key = queue). */
function publishPanel(vhost, exchange, routingKey, fixedKey) {
  const key = h('input', { type: 'text', value: routingKey || '', 'aria-label': 'Routing key', dataset: { test: 'publish-key' } });
  const payload = h('textarea', { 'aria-label': 'Payload', dataset: { test: 'publish-payload' }, placeholder: 'Message body' });
  const persistent = h('input', { type: 'checkbox', checked: true });
  const contentType = h('input', { type: 'text', value: 'text/plain', 'aria-label': 'Content type' });
  const headers = h('textarea', { placeholder: '{"header": "value"}', 'aria-label': 'Headers' });
  const button = h('button', { type: 'submit', class: 'primary', dataset: { test: 'publish' } }, 'Publish');
  const target = exchange === '' ? 'amq.default' : exchange;
  const form = actionForm('form-grid', button, 'Message published.', async () => {
    const properties = { delivery_mode: persistent.checked ? 2 : 1 };
    if (contentType.value) properties.content_type = contentType.value;
    const hdrs = parseArgs(headers.value);
    if (Object.keys(hdrs).length) properties.headers = hdrs;
    const r = await api('POST', `/api/exchanges/${enc(vhost)}/${enc(target)}/publish`, {
      properties, routing_key: key.value, payload: payload.value, payload_encoding: 'string',
    });
    if (!r.routed) throw new Error('Published, but no queue took it (unroutable).');
  },
  fixedKey ? null : h('label', { class: 'field' }, 'Routing key', key),
  h('label', { class: 'field' }, 'Content type', contentType),
  h('label', { class: 'check' }, persistent, 'Persistent'),
  h('label', { class: 'field wide' }, 'Payload', payload),
  h('details', { class: 'wide' }, h('summary', { class: 'small' }, 'Headers'), headers),
  h('div', {}, button));
  return h('div', { class: 'panel' }, h('h2', {}, 'Publish a message'), form);
}

/** A form getting messages from a queue, with the messages shown below it. */
function getPanel(base) {
  const count = h('input', { type: 'number', min: 1, max: 100, value: 1, 'aria-label': 'Count' });
  const mode = h('select', { 'aria-label': 'Ack mode', dataset: { test: 'get-mode' } },
    h('option', { value: 'ack_requeue_true' }, 'Requeue (leave in queue)'),
    h('option', { value: 'ack_requeue_false' }, 'Ack (remove)'),
    h('option', { value: 'reject_requeue_false' }, 'Reject (dead-letter)'));
  const out = h('div', { dataset: { test: 'get-results' } });
  const button = h('button', { type: 'submit', class: 'primary', dataset: { test: 'get' } }, 'Get messages');
  const form = actionForm('inline', button, null, async () => {
    const msgs = await api('POST', `${base}/get`, { count: Number(count.value) || 1, ackmode: mode.value, encoding: 'auto', truncate: 50000 });
    clear(out);
    if (!msgs.length) out.append(h('p', { class: 'muted' }, 'The queue is empty.'));
    for (const m of msgs) {
      out.append(h('div', { class: 'message' },
        h('div', { class: 'small muted' }, `exchange "${m.exchange}" · routing key "${m.routing_key}" · ${m.payload_bytes} bytes${m.redelivered ? ' · redelivered' : ''} · ${m.message_count} left`),
        Object.keys(m.properties || {}).length ? h('div', { class: 'small mono' }, JSON.stringify(m.properties)) : null,
        h('pre', { dataset: { test: 'message-payload' } }, m.payload_encoding === 'base64' ? `(base64) ${m.payload}` : m.payload)));
    }
  },
  h('label', { class: 'field' }, 'Count', count),
  h('label', { class: 'field' }, 'Mode', mode),
  button);
  return h('div', { class: 'panel' }, h('h2', {}, 'Get messages'), form, out);
}

/** A form binding a queue or exchange (`dest`) to a source exchange, or (`source`) an exchange to a destination. */
function bindForm(vhost, { kind, name, fromExchange }) {
  const other = h('input', { type: 'text', required: true, 'aria-label': fromExchange ? 'Destination' : 'Exchange' });
  const otherKind = h('select', { 'aria-label': 'Destination type' }, h('option', { value: 'q' }, 'queue'), h('option', { value: 'e' }, 'exchange'));
  const key = h('input', { type: 'text', 'aria-label': 'Routing key' });
  const args = h('input', { type: 'text', placeholder: '{"x-match": "any"}', 'aria-label': 'Arguments' });
  const button = h('button', { type: 'submit' }, 'Bind');
  return h('details', {}, h('summary', { class: 'small' }, fromExchange ? 'Add a binding from this exchange' : 'Add a binding to this queue'),
    actionForm('inline', button, 'Binding added.', () => {
      const path = fromExchange
        ? `/api/bindings/${enc(vhost)}/e/${enc(name)}/${otherKind.value}/${enc(other.value)}`
        : `/api/bindings/${enc(vhost)}/e/${enc(other.value)}/${kind}/${enc(name)}`;
      return api('POST', path, { routing_key: key.value, arguments: parseArgs(args.value) });
    },
    fromExchange ? h('label', { class: 'field' }, 'To', otherKind) : null,
    h('label', { class: 'field' }, fromExchange ? 'Name' : 'From exchange', other),
    h('label', { class: 'field' }, 'Routing key', key),
    h('label', { class: 'field' }, 'Arguments (JSON)', args),
    button));
}

// ----- Exchanges ------------------------------------------------------------------------

function exchangeName(x) {
  return x.name === '' ? '(AMQP default)' : x.name;
}

function exchangesPage(main) {
  const view = {};
  const list = h('div', {});
  const addBox = h('div', {});
  const onSort = sorter(view, 'name');
  main.append(h('div', { class: 'title-row' }, h('h1', {}, 'Exchanges')), h('div', { class: 'panel' }, list), addBox);
  (async () => {
    const vhost = await vhostSelect('new-exchange-vhost');
    const name = h('input', { type: 'text', required: true, 'aria-label': 'Name' });
    const type = h('select', { 'aria-label': 'Type' }, ['direct', 'fanout', 'topic', 'headers'].map((t) => h('option', { value: t }, t)));
    const durable = h('input', { type: 'checkbox', checked: true });
    const args = h('input', { type: 'text', placeholder: '{"alternate-exchange": "ae"}', 'aria-label': 'Arguments' });
    const submit = h('button', { type: 'submit', class: 'primary' }, 'Add exchange');
    addBox.append(h('div', { class: 'panel' }, h('details', {}, h('summary', {}, 'Add an exchange'),
      actionForm('form-grid', submit, 'Exchange declared.', async () => {
        await api('PUT', `/api/exchanges/${enc(vhost.value)}/${enc(name.value)}`, { type: type.value, durable: durable.checked, arguments: parseArgs(args.value) });
        name.value = '';
      },
      h('label', { class: 'field' }, 'Vhost', vhost),
      h('label', { class: 'field' }, 'Name', name),
      h('label', { class: 'field' }, 'Type', type),
      h('label', { class: 'check' }, durable, 'Durable'),
      h('label', { class: 'field' }, 'Arguments (JSON)', args),
      h('div', {}, submit)))));
  })().catch(() => {});
  view.refresh = async () => {
    const xs = await get('/api/exchanges');
    clear(list).append(table(xs, [
      { key: 'vhost', label: 'Vhost', value: (x) => x.vhost, hideNarrow: true },
      { key: 'name', label: 'Name', value: (x) => x.name, cell: (x) => h('a', { href: `#/exchanges/${enc(x.vhost)}/${enc(x.name === '' ? 'amq.default' : x.name)}` }, exchangeName(x)) },
      { key: 'type', label: 'Type', value: (x) => x.type },
      { key: 'features', label: 'Features', hideNarrow: true, cell: (x) => [x.durable ? h('span', { class: 'tag grey' }, 'D') : null, x.auto_delete ? h('span', { class: 'tag grey' }, 'AD') : null, x.internal ? h('span', { class: 'tag grey' }, 'I') : null, ...Object.keys(x.arguments || {}).map((k) => h('span', { class: 'tag' }, k))] },
    ], view.sort, onSort, 'No exchanges.'));
  };
  return view;
}

function exchangePage(main, vhost, name) {
  const apiName = name === '' ? 'amq.default' : name;
  const base = `/api/exchanges/${enc(vhost)}/${enc(apiName)}`;
  const info = h('div', { class: 'panel' });
  const out = h('div', {});
  const into = h('div', {});
  const del = h('button', { type: 'button', class: 'danger', dataset: { test: 'delete-exchange' } }, 'Delete');
  del.addEventListener('click', async () => {
    if (await confirmAction(`Delete exchange "${name}" and its bindings?`)) {
      const done = await act(del, () => api('DELETE', base), 'Exchange deleted.');
      if (done) location.hash = '#/exchanges';
    }
  });
  const system = apiName === 'amq.default' || apiName.startsWith('amq.');
  main.append(
    h('div', { class: 'title-row' },
      h('div', {}, h('div', { class: 'muted small' }, h('a', { href: '#/exchanges' }, 'Exchanges'), ` / vhost ${vhost}`), h('h1', {}, apiName === 'amq.default' ? '(AMQP default)' : name)),
      system ? null : h('div', { class: 'actions' }, del)),
    h('div', { class: 'grid2' }, info, publishPanel(vhost, apiName === 'amq.default' ? '' : name, '', false)),
    h('div', { class: 'stack' }),
    h('div', { class: 'panel' }, h('h2', {}, 'Bindings from this exchange'), out, apiName === 'amq.default' ? null : bindForm(vhost, { name, fromExchange: true })),
    h('div', { class: 'panel' }, h('h2', {}, 'Bindings to this exchange'), into));
  return {
    async refresh() {
      const [x, src, dst] = await Promise.all([get(base), get(`${base}/bindings/source`), get(`${base}/bindings/destination`)]);
      const args = Object.entries(x.arguments || {});
      clear(info).append(h('h2', {}, 'Details'), h('dl', { class: 'kv' },
        h('dt', {}, 'Type'), h('dd', {}, x.type),
        h('dt', {}, 'Durable'), h('dd', {}, x.durable ? 'yes' : 'no'),
        h('dt', {}, 'Auto-delete'), h('dd', {}, x.auto_delete ? 'yes' : 'no'),
        h('dt', {}, 'Internal'), h('dd', {}, x.internal ? 'yes' : 'no'),
        h('dt', {}, 'Arguments'), h('dd', {}, args.length ? args.map(([k, v]) => h('div', { class: 'mono' }, `${k} = ${JSON.stringify(v)}`)) : h('span', { class: 'muted' }, 'none'))));
      const unbind = (b) => {
        const button = h('button', { type: 'button', class: 'small danger' }, 'Unbind');
        button.addEventListener('click', () => act(button, () => api('DELETE', `/api/bindings/${enc(b.vhost)}/e/${enc(b.source)}/${b.destination_type === 'queue' ? 'q' : 'e'}/${enc(b.destination)}/${enc(b.properties_key)}`), 'Binding removed.'));
        return b.source === '' ? null : button;
      };
      const destLink = (b) => (b.destination_type === 'queue'
        ? h('a', { href: `#/queues/${enc(b.vhost)}/${enc(b.destination)}` }, b.destination)
        : h('a', { href: `#/exchanges/${enc(b.vhost)}/${enc(b.destination)}` }, b.destination));
      clear(out).append(table(src, [
        { key: 'to', label: 'To', cell: destLink },
        { key: 'type', label: 'Type', cell: (b) => b.destination_type },
        { key: 'key', label: 'Routing key', cell: (b) => h('span', { class: 'mono' }, b.routing_key) },
        { key: 'args', label: 'Arguments', wrap: true, cell: (b) => h('span', { class: 'mono' }, Object.keys(b.arguments || {}).length ? JSON.stringify(b.arguments) : '') },
        { key: 'act', label: '', cell: unbind },
      ], null, null, 'No bindings.'));
      clear(into).append(table(dst, [
        { key: 'from', label: 'From', cell: (b) => h('a', { href: `#/exchanges/${enc(b.vhost)}/${enc(b.source)}` }, b.source) },
        { key: 'key', label: 'Routing key', cell: (b) => h('span', { class: 'mono' }, b.routing_key) },
        { key: 'act', label: '', cell: unbind },
      ], null, null, 'No exchange binds to this one.'));
    },
  };
}

// ----- Connections and channels ---------------------------------------------------------

function connectionsPage(main) {
  const view = {};
  const list = h('div', {});
  const onSort = sorter(view, 'name');
  main.append(h('div', { class: 'title-row' }, h('h1', {}, 'Connections')), h('div', { class: 'panel' }, list));
  view.refresh = async () => {
    const conns = await get('/api/connections');
    clear(list).append(table(conns, [
      { key: 'name', label: 'Client', value: (c) => c.name, cell: (c) => h('span', { class: 'mono' }, `${c.peer_host}:${c.peer_port}`) },
      { key: 'user', label: 'User', value: (c) => c.user },
      { key: 'vhost', label: 'Vhost', value: (c) => c.vhost, hideNarrow: true },
      { key: 'channels', label: 'Channels', num: true, value: (c) => c.channels || 0, cell: (c) => fmtNum(c.channels || 0) },
      { key: 'since', label: 'Connected', value: (c) => c.connected_at, cell: (c) => fmtTime(c.connected_at), hideNarrow: true },
      { key: 'state', label: 'State', value: (c) => c.state, hideNarrow: true },
      {
        key: 'close',
        label: '',
        cell: (c) => {
          const button = h('button', { type: 'button', class: 'small danger', dataset: { test: 'close-connection', user: c.user, peer: `${c.peer_host}:${c.peer_port}` } }, 'Close');
          button.addEventListener('click', async () => {
            if (await confirmAction(`Close the connection from ${c.peer_host}:${c.peer_port} (user ${c.user})?`)) {
              act(button, () => api('DELETE', `/api/connections/${enc(c.name)}`), 'Connection closed.');
            }
          });
          return button;
        },
      },
    ], view.sort, onSort, 'No client is connected.'));
  };
  return view;
}

function channelsPage(main) {
  const view = {};
  const list = h('div', {});
  const onSort = sorter(view, 'name');
  main.append(h('div', { class: 'title-row' }, h('h1', {}, 'Channels')), h('div', { class: 'panel' }, list));
  view.refresh = async () => {
    const chans = await get('/api/channels');
    clear(list).append(table(chans, [
      { key: 'name', label: 'Channel', value: (c) => c.name, cell: (c) => h('span', { class: 'mono' }, `${c.connection_details.peer_host}:${c.connection_details.peer_port} (${c.number})`) },
      { key: 'user', label: 'User', value: (c) => c.user },
      { key: 'vhost', label: 'Vhost', value: (c) => c.vhost, hideNarrow: true },
      { key: 'mode', label: 'Mode', value: (c) => (c.confirm ? 'confirm' : c.transactional ? 'tx' : ''), cell: (c) => (c.confirm ? h('span', { class: 'tag' }, 'confirm') : c.transactional ? h('span', { class: 'tag' }, 'tx') : '') },
      { key: 'prefetch', label: 'Prefetch', num: true, value: (c) => c.prefetch_count, cell: (c) => fmtNum(c.prefetch_count), hideNarrow: true },
      { key: 'unacked', label: 'Unacked', num: true, value: (c) => c.messages_unacknowledged, cell: (c) => fmtNum(c.messages_unacknowledged) },
      { key: 'unconfirmed', label: 'Unconfirmed', num: true, value: (c) => c.messages_unconfirmed, cell: (c) => fmtNum(c.messages_unconfirmed), hideNarrow: true },
      { key: 'consumers', label: 'Consumers', num: true, value: (c) => c.consumer_count, cell: (c) => fmtNum(c.consumer_count) },
    ], view.sort, onSort, 'No channels are open.'));
  };
  return view;
}

// ----- Admin: users, vhosts, permissions ------------------------------------------------

const TAGS = ['administrator', 'monitoring', 'management', 'policymaker'];

function adminPage(main) {
  const users = h('div', {});
  const vhosts = h('div', {});
  const perms = h('div', {});

  // Add a user.
  const uname = h('input', { type: 'text', required: true, id: 'new-user-name', autocomplete: 'off' });
  const upass = h('input', { type: 'password', required: true, id: 'new-user-pass', autocomplete: 'new-password' });
  const checks = TAGS.map((t) => h('input', { type: 'checkbox', value: t, dataset: { tag: t } }));
  const uadd = h('button', { type: 'submit', class: 'primary', dataset: { test: 'add-user' } }, 'Add user');
  const userForm = actionForm('form-grid', uadd, 'User saved.', async () => {
    const tags = checks.filter((c) => c.checked).map((c) => c.value).join(',');
    await api('PUT', `/api/users/${enc(uname.value)}`, { password: upass.value, tags });
    uname.value = '';
    upass.value = '';
    checks.forEach((c) => { c.checked = false; });
  },
  h('label', { class: 'field' }, 'Name', uname),
  h('label', { class: 'field' }, 'Password', upass),
  h('div', { class: 'wide actions' }, checks.map((c) => h('label', { class: 'check' }, c, c.value))),
  h('div', {}, uadd));

  // Add a vhost.
  const vname = h('input', { type: 'text', required: true, 'aria-label': 'Vhost name' });
  const vadd = h('button', { type: 'submit' }, 'Add vhost');
  const vhostForm = actionForm('inline', vadd, 'Vhost added.', async () => {
    await api('PUT', `/api/vhosts/${enc(vname.value)}`);
    vname.value = '';
  }, h('label', { class: 'field' }, 'Name', vname), vadd);

  // Set permissions.
  const puser = h('select', { 'aria-label': 'User', dataset: { test: 'perm-user' } });
  const pvhost = h('select', { 'aria-label': 'Vhost', dataset: { test: 'perm-vhost' } });
  const conf = h('input', { type: 'text', value: '.*', 'aria-label': 'Configure', dataset: { test: 'perm-configure' } });
  const write = h('input', { type: 'text', value: '.*', 'aria-label': 'Write', dataset: { test: 'perm-write' } });
  const read = h('input', { type: 'text', value: '.*', 'aria-label': 'Read', dataset: { test: 'perm-read' } });
  const padd = h('button', { type: 'submit', dataset: { test: 'set-permission' } }, 'Set permissions');
  const permForm = actionForm('form-grid', padd, 'Permissions set.', () => api('PUT', `/api/permissions/${enc(pvhost.value)}/${enc(puser.value)}`, { configure: conf.value, write: write.value, read: read.value }),
  h('label', { class: 'field' }, 'User', puser),
  h('label', { class: 'field' }, 'Vhost', pvhost),
  h('label', { class: 'field' }, 'Configure', conf),
  h('label', { class: 'field' }, 'Write', write),
  h('label', { class: 'field' }, 'Read', read),
  h('div', {}, padd));

  // Definitions: download the broker's, upload a file (RabbitMQ's format either way).
  const exportButton = h('button', { type: 'button', dataset: { test: 'export-definitions' } }, 'Download definitions');
  exportButton.addEventListener('click', () => act(exportButton, async () => {
    const defs = await get('/api/definitions');
    const url = URL.createObjectURL(new Blob([JSON.stringify(defs, null, 2)], { type: 'application/json' }));
    const a = h('a', { href: url, download: 'lepus-definitions.json' });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }, null));
  const file = h('input', { type: 'file', accept: 'application/json,.json', 'aria-label': 'Definitions file' });
  const importButton = h('button', { type: 'submit' }, 'Import');
  const importForm = h('form', {
    class: 'inline',
    onsubmit: (ev) => {
      ev.preventDefault();
      if (!file.files.length) return;
      act(importButton, async () => {
        const defs = JSON.parse(await file.files[0].text());
        const answer = await api('POST', '/api/definitions', defs);
        flash(answer && answer.skipped
          ? `Imported; skipped (Lepus has none): ${Object.keys(answer.skipped).join(', ')}`
          : 'Definitions imported.', true);
      }, null);
    },
  }, file, importButton);

  main.append(
    h('div', { class: 'title-row' }, h('h1', {}, 'Admin'), h('div', { class: 'actions' }, exportButton)),
    h('div', { class: 'panel' }, h('h2', {}, 'Users'), users, h('details', { dataset: { test: 'user-form' } }, h('summary', {}, 'Add or update a user'), userForm)),
    h('div', { class: 'grid2' },
      h('div', { class: 'panel' }, h('h2', {}, 'Virtual hosts'), vhosts, h('details', {}, h('summary', {}, 'Add a vhost'), vhostForm)),
      h('div', { class: 'panel' }, h('h2', {}, 'Permissions'), perms, h('details', { dataset: { test: 'permission-form' } }, h('summary', {}, 'Set permissions'), permForm))),
    h('div', { class: 'stack' }),
    h('div', { class: 'panel' }, h('h2', {}, 'Import definitions'),
      h('p', { class: 'muted small' }, 'A definitions file from Lepus or RabbitMQ: users, vhosts, permissions, exchanges, queues, bindings are added or updated, never deleted.'),
      importForm),
  );

  const fillSelect = (select, names) => {
    const keep = select.value;
    clear(select).append(...names.map((n) => h('option', { value: n }, n)));
    if (names.includes(keep)) select.value = keep;
  };

  return {
    async refresh() {
      const [us, vs, ps] = await Promise.all([get('/api/users'), get('/api/vhosts'), get('/api/permissions')]);
      const del = (label, path, text) => {
        const b = h('button', { type: 'button', class: 'small danger' }, label);
        b.addEventListener('click', async () => {
          if (await confirmAction(text)) act(b, () => api('DELETE', path), 'Done.');
        });
        return b;
      };
      clear(users).append(table(us, [
        { key: 'name', label: 'Name', value: (u) => u.name, cell: (u) => h('span', { dataset: { user: u.name } }, u.name) },
        { key: 'tags', label: 'Tags', cell: (u) => (u.tags.length ? u.tags.map((t) => h('span', { class: 'tag' }, t)) : h('span', { class: 'muted' }, 'none')) },
        { key: 'del', label: '', cell: (u) => (u.name === state.user.name ? null : del('Delete', `/api/users/${enc(u.name)}`, `Delete user "${u.name}" and its permissions?`)) },
      ], { key: 'name', asc: true }, null, 'No users.'));
      clear(vhosts).append(table(vs, [
        { key: 'name', label: 'Name', value: (v) => v.name },
        { key: 'messages', label: 'Messages', num: true, cell: (v) => fmtNum(v.messages) },
        { key: 'del', label: '', cell: (v) => del('Delete', `/api/vhosts/${enc(v.name)}`, `Delete vhost "${v.name}" with all its queues and exchanges?`) },
      ], { key: 'name', asc: true }, null, 'No vhosts.'));
      clear(perms).append(table(ps, [
        { key: 'user', label: 'User', value: (p) => p.user },
        { key: 'vhost', label: 'Vhost', value: (p) => p.vhost },
        { key: 'c', label: 'Configure', cell: (p) => h('span', { class: 'mono' }, p.configure) },
        { key: 'w', label: 'Write', cell: (p) => h('span', { class: 'mono' }, p.write) },
        { key: 'r', label: 'Read', cell: (p) => h('span', { class: 'mono' }, p.read) },
        { key: 'del', label: '', cell: (p) => del('Clear', `/api/permissions/${enc(p.vhost)}/${enc(p.user)}`, `Clear the permissions of "${p.user}" in "${p.vhost}"?`) },
      ], { key: 'user', asc: true }, null, 'No permissions.'));
      fillSelect(puser, us.map((u) => u.name));
      fillSelect(pvhost, vs.map((v) => v.name));
    },
  };
}

// ---------------------------------------------------------------------------------------
// Start

// Uncaught errors are kept for the browser tests to check (and shown, so a user can report).
window.lepusErrors = [];
window.addEventListener('error', (ev) => {
  window.lepusErrors.push(String(ev.message));
  flash(`Page error: ${ev.message}`, false);
});
window.addEventListener('unhandledrejection', (ev) => {
  window.lepusErrors.push(String(ev.reason));
});
window.addEventListener('hashchange', () => render());
document.addEventListener('visibilitychange', () => {
  if (!document.hidden) refreshNow();
});
document.addEventListener('DOMContentLoaded', () => {
  $('#logout').addEventListener('click', () => logout());
  const saved = sessionStorage.getItem(USER_KEY);
  if (state.auth && saved) {
    try {
      state.user = JSON.parse(saved);
    } catch (e) {
      state.user = null;
    }
  }
  render();
});
