// flowscope UI helpers shared by the three pages. Everything from the API
// is inserted as text (textContent / text nodes), never as markup.
'use strict';

const FS = (() => {
  const SVG = 'http://www.w3.org/2000/svg';

  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'text') e.textContent = String(v);
      else if (k === 'class') e.className = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    return e;
  }

  // Page state lives in the URL query, so a view can be bookmarked.
  const state = new URLSearchParams(location.search);
  function save() {
    const q = state.toString();
    history.replaceState(null, '', location.pathname + (q ? '?' + q : ''));
  }

  async function api(path, params) {
    const q = params ? '?' + params.toString() : '';
    const r = await fetch('/api/' + path + q, { credentials: 'same-origin', headers: { accept: 'application/json' } });
    const body = await r.json().catch(() => ({ error: r.statusText }));
    if (!r.ok) {
      const p = body.parameter ? ' (parameter ' + body.parameter + ')' : '';
      throw new Error((body.error || r.statusText) + p);
    }
    return body;
  }

  function showError(err) {
    const box = document.getElementById('error');
    if (!box) return;
    if (err) { box.textContent = String(err.message || err); box.hidden = false; }
    else { box.textContent = ''; box.hidden = true; }
  }

  function bytes(n) {
    if (n === null || n === undefined) return '-';
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0; let v = Number(n);
    while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
    return (i === 0 ? v.toFixed(0) : v.toFixed(1)) + ' ' + u[i];
  }
  function num(n, digits) {
    if (n === null || n === undefined) return '-';
    return Number(n).toLocaleString('en-US', { maximumFractionDigits: digits === undefined ? 0 : digits });
  }
  function pct(r) { return r === null || r === undefined ? '-' : (100 * r).toFixed(2) + ' %'; }
  function ms(v) { return v === null || v === undefined ? '-' : Number(v).toFixed(3) + ' ms'; }
  function time(t) { return new Date(t).toISOString().slice(11, 19) + ' UTC'; }

  // Fills a <select> with the suggested keys and every key of the data.
  function fillKeys(select, keys, current) {
    select.replaceChildren();
    const seen = new Set();
    const group = (label, list) => {
      const g = el('optgroup', { label });
      for (const k of list) {
        if (seen.has(k)) continue;
        seen.add(k);
        g.append(el('option', { value: k, text: k }));
      }
      if (g.children.length) select.append(g);
    };
    group('Suggested', keys.suggested);
    group('All keys in the data', keys.keys);
    if (current && !seen.has(current)) select.append(el('option', { value: current, text: current }));
    select.value = current;
  }

  function rangeParams(params) {
    params.set('range', state.get('range') || '1h');
    return params;
  }

  async function status() {
    try {
      const k = await api('keys');
      const s = k.status;
      const line = s.latest_ms
        ? 'data up to ' + time(s.latest_ms) + ' · ' + num(s.series) + ' series' + (s.dropped_points ? ' · ' + num(s.dropped_points) + ' points dropped (series limit)' : '')
        : 'no data yet';
      document.getElementById('status').textContent = line;
      return k;
    } catch (e) {
      showError(e);
      return { keys: [], suggested: [], status: {} };
    }
  }

  function nav() {
    const page = document.body.dataset.page;
    for (const a of document.querySelectorAll('header nav a')) {
      if (a.dataset.page === page) a.classList.add('current');
      // Keep the time range when moving between pages.
      const r = state.get('range');
      if (r) a.href = a.getAttribute('href').split('?')[0] + '?range=' + encodeURIComponent(r);
    }
    const range = document.getElementById('range');
    if (range) range.value = state.get('range') || '1h';
  }

  // A line chart of `series` ([{key, label, color, fmt}]) over points
  // ([{t_ms, ...}]), drawn as SVG elements.
  function chart(box, points, series) {
    box.replaceChildren();
    box.classList.add('chart');
    if (!points.length) { box.append(el('p', { class: 'muted', text: 'No data in this time range.' })); return; }
    const W = 340, H = 180, L = 56, B = 20, T = 8, R = 8;
    const s = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img' });
    const t0 = points[0].t_ms, t1 = points[points.length - 1].t_ms;
    let max = 0;
    for (const p of points) for (const x of series) max = Math.max(max, Number(p[x.key]) || 0);
    if (max === 0) max = 1;
    const X = t => L + (t1 === t0 ? (W - L - R) / 2 : (t - t0) / (t1 - t0) * (W - L - R));
    const Y = v => T + (1 - v / max) * (H - T - B);
    s.append(svg('line', { class: 'axis', x1: L, y1: H - B, x2: W - R, y2: H - B }));
    s.append(svg('line', { class: 'axis', x1: L, y1: T, x2: L, y2: H - B }));
    const label = (x, y, text, anchor) => { const t = svg('text', { x, y, 'text-anchor': anchor }); t.textContent = text; s.append(t); };
    const fmt = series[0].fmt || num;
    label(L - 4, T + 8, fmt(max), 'end');
    label(L - 4, H - B, fmt(0), 'end');
    label(L, H - 4, time(t0), 'start');
    label(W - R, H - 4, time(t1), 'end');
    for (const x of series) {
      const d = points.map((p, i) => (i ? 'L' : 'M') + X(p.t_ms).toFixed(1) + ' ' + Y(Number(p[x.key]) || 0).toFixed(1)).join(' ');
      s.append(svg('path', { class: 'series', d, stroke: x.color }));
      if (points.length === 1) s.append(svg('circle', { cx: X(t0), cy: Y(Number(points[0][x.key]) || 0), r: 3, fill: x.color }));
    }
    const key = el('div', { class: 'key' });
    for (const x of series) {
      const sp = el('span', { text: x.label });
      sp.style.setProperty('--c', x.color);
      key.append(sp);
    }
    box.append(key, s);
  }

  // A two-column table of a dependency's totals.
  function totals(table, t) {
    table.replaceChildren();
    const rows = [
      ['bytes client → server', bytes(t.bytes_client_to_server)],
      ['bytes server → client', bytes(t.bytes_server_to_client)],
      ['throughput', bytes(t.throughput_bytes_per_second) + '/s'],
      ['retransmits', num(t.retransmits) + ' (' + pct(t.retransmit_ratio) + ')'],
      ['RTT p50 / p99', ms(t.rtt_p50_ms) + ' / ' + ms(t.rtt_p99_ms)],
      ['connections opened / closed', num(t.connections_opened) + ' / ' + num(t.connections_closed)],
      ['connections failed', num(t.connections_failed)],
      ['resets', num(t.resets)],
    ];
    for (const [k, v] of rows) table.append(el('tr', {}, el('td', { text: k }), el('td', { text: v })));
  }

  // Sums time series points into totals for the detail table.
  function sum(points) {
    const t = { bytes_client_to_server: 0, bytes_server_to_client: 0, retransmits: 0, packets: 0, connections_opened: 0, connections_closed: 0, connections_failed: 0, resets: 0 };
    for (const p of points) for (const k of Object.keys(t)) t[k] += p[k] || 0;
    t.retransmit_ratio = t.packets ? t.retransmits / t.packets : 0;
    return t;
  }

  // An IP literal's single-address CIDR, or null.
  function hostCidr(s) {
    const v = String(s || '');
    if (/^\d{1,3}(\.\d{1,3}){3}$/.test(v)) return v + '/32';
    if (v.includes(':') && /^[0-9a-fA-F:.]+$/.test(v)) return v + '/128';
    return null;
  }

  // Pivot from a dependency to the Network Path tests that trace it: by
  // the server's address when the server side is one (dynamic tests are
  // made from those flows), else by the client's service.name (a dynamic
  // test's Resource is its client workload).
  function pathLink(box, client, server, clientKey) {
    box.replaceChildren();
    const p = new URLSearchParams();
    p.set('range', state.get('range') || '1h');
    const cidr = hostCidr(server);
    if (cidr) p.set('cidr', cidr);
    else if (clientKey === 'service.name' && client) p.set('filter', 'service.name=' + client);
    else return;
    box.append(el('a', { class: 'pivot', href: '/path?' + p.toString(), text: 'Network paths to ' + (cidr ? server : 'the servers of ' + client) }));
  }

  nav();
  return { el, api, state, save, showError, bytes, num, pct, ms, time, fillKeys, rangeParams, status, chart, totals, sum, hostCidr, pathLink };
})();
