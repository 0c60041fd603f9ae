// Network Path: every path test of the time range (sortable, filtered by
// key=value and destination CIDR) and, for the selected test, its route
// drawn left to right hop by hop, its end-to-end RTT and loss over time,
// its route changes and route history. Everything from the API is
// inserted as text.
'use strict';

(() => {
  const { el, api, state, save } = FS;
  const $ = id => document.getElementById(id);
  let tests = [];
  let detail = null;
  let sort = { col: state.get('sort') || 'last_run_ms', desc: state.get('order') !== 'asc' };

  function params() {
    const p = FS.rangeParams(new URLSearchParams());
    for (const f of (state.get('filter') || '').split(',')) if (f.trim()) p.append('filter', f.trim());
    if (state.get('cidr')) p.set('cidr', state.get('cidr'));
    return p;
  }

  const dest = t => t.server_port ? t.server_address + ':' + t.server_port : t.server_address;
  const tagsText = t => Object.entries(t.tags || {}).map(([k, v]) => k + '=' + v).join(', ');
  const yesNo = r => r === null || r === undefined ? '-' : (r ? 'yes' : 'no');

  const CELLS = [
    ['source', t => t.source],
    ['destination', t => dest(t)],
    ['protocol', t => t.protocol],
    ['test', t => t.test],
    ['tags_text', t => tagsText(t)],
    ['reachable', t => yesNo(t.reachable)],
    ['rtt_p50_ms', t => FS.ms(t.rtt_p50_ms)],
    ['rtt_p95_ms', t => FS.ms(t.rtt_p95_ms)],
    ['loss_ratio', t => FS.pct(t.loss_ratio)],
    ['jitter_ms', t => FS.ms(t.jitter_ms)],
    ['hops', t => FS.num(t.hops)],
    ['last_run_ms', t => t.last_run_ms ? FS.time(t.last_run_ms) : '-'],
    ['route_changes', t => FS.num(t.route_changes)],
  ];

  function render() {
    const { col, desc } = sort;
    tests.sort((a, b) => {
      const x = a[col], y = b[col];
      const c = typeof x === 'string' || typeof y === 'string'
        ? String(x).localeCompare(String(y)) : (Number(x) || 0) - (Number(y) || 0);
      return desc ? -c : c;
    });
    for (const th of document.querySelectorAll('#tests th')) {
      if (th.dataset.col === col) th.setAttribute('aria-sort', desc ? 'descending' : 'ascending');
      else th.removeAttribute('aria-sort');
    }
    const body = $('tests').tBodies[0];
    body.replaceChildren();
    for (const t of tests) {
      const tr = el('tr', { 'data-id': t.id, class: t.id === state.get('id') ? 'selected' : '' });
      for (const [key, f] of CELLS) tr.append(el('td', { 'data-col': key, text: f(t) }));
      tr.addEventListener('click', () => { state.set('id', t.id); save(); render(); loadDetail(); });
      body.append(tr);
    }
    if (!tests.length) body.append(el('tr', {}, el('td', { colspan: CELLS.length, text: 'No path tests match (is the path receiver in the pipeline?).' })));
  }

  // One node of the route.
  function hopNode(h) {
    const silent = h.address === '*';
    const lossy = !silent && h.loss_ratio > 0;
    const node = el('div', {
      class: 'hop' + (silent ? ' silent' : lossy ? ' lossy' : ''),
      'data-index': h.index, 'data-address': h.address,
    },
    el('div', { class: 'ttl', text: 'hop ' + h.index }),
    el('div', { class: 'addr', text: h.address }));
    if (h.name) node.append(el('div', { class: 'name', text: h.name }));
    if (h.as_number) node.append(el('div', { class: 'as', text: 'AS' + h.as_number + (h.as_name ? ' ' + h.as_name : '') }));
    node.append(el('div', { class: 'muted', text: 'RTT p50 ' + FS.ms(h.rtt_p50_ms) }));
    node.append(el('div', { class: 'muted', text: 'loss ' + FS.pct(h.loss_ratio) + ' (' + FS.num(h.probes_lost) + '/' + FS.num(h.probes_sent) + ')' }));
    return node;
  }

  function edge(h) {
    const d = h && h.delta_ms !== null && h.delta_ms !== undefined ? (h.delta_ms >= 0 ? '+' : '') + Number(h.delta_ms).toFixed(3) + ' ms' : '';
    return el('div', { class: 'edge', text: d });
  }

  function drawRoute(d) {
    const box = $('route');
    box.replaceChildren();
    const t = d.test;
    box.append(el('div', { class: 'hop source', 'data-index': 0 },
      el('div', { class: 'ttl', text: 'source' }),
      el('div', { class: 'addr', text: t.source })));
    const group = $('group_as').checked;
    let i = 0;
    while (i < d.hops.length) {
      const h = d.hops[i];
      box.append(edge(h));
      if (group && h.as_number) {
        // Consecutive hops of one AS in one box.
        const g = el('div', { class: 'as-group', 'data-as': h.as_number },
          el('span', { class: 'as-label', text: 'AS' + h.as_number + (h.as_name ? ' ' + h.as_name : '') }));
        g.append(hopNode(h));
        let j = i + 1;
        while (j < d.hops.length && d.hops[j].as_number === h.as_number) {
          g.append(edge(d.hops[j]), hopNode(d.hops[j]));
          j++;
        }
        box.append(g);
        i = j;
      } else {
        box.append(hopNode(h));
        i++;
      }
    }
    const last = d.hops[d.hops.length - 1];
    const reached = t.reachable === true;
    if (!last || last.address !== t.server_address) {
      box.append(edge(null));
      box.append(el('div', { class: 'hop destination' + (reached ? '' : ' unreachable'), 'data-index': 'destination' },
        el('div', { class: 'ttl', text: 'destination' }),
        el('div', { class: 'addr', text: dest(t) }),
        el('div', { class: 'muted', text: reached ? 'reachable' : 'not reachable' })));
    } else {
      const n = [...box.querySelectorAll('.hop')].pop();
      n.classList.add('destination');
      if (!reached) n.classList.add('unreachable');
      n.append(el('div', { class: 'muted', text: reached ? 'destination, reachable' : 'destination, not reachable' }));
    }
  }

  const routeText = hops => hops.join(' → ');

  function drawDetail() {
    const d = detail;
    if (!d) { $('detail').hidden = true; return; }
    const t = d.test;
    $('detail').hidden = false;
    $('detail-title').textContent = t.source + ' → ' + dest(t) + ' (' + t.protocol + ', ' + t.test + ')';
    $('detail-summary').textContent = 'reachable: ' + yesNo(t.reachable) + ' · RTT p50 ' + FS.ms(t.rtt_p50_ms) +
      ' · p95 ' + FS.ms(t.rtt_p95_ms) + ' · loss ' + FS.pct(t.loss_ratio) + ' · ' + FS.num(t.runs) + ' runs · ' +
      FS.num(t.route_changes) + ' route change(s)' + (tagsText(t) ? ' · tags ' + tagsText(t) : '');
    // Back to the flows: the dependency whose peer is this destination.
    const cidr = FS.hostCidr(t.server_address);
    const dep = $('dependency');
    dep.hidden = !cidr;
    if (cidr) {
      const q = new URLSearchParams({ range: state.get('range') || '1h', client_key: 'service.name', server_key: 'network.peer.address', cidr });
      dep.href = '/analytics?' + q.toString();
    }
    drawRoute(d);
    FS.chart($('rtt-chart'), d.points.filter(p => p.rtt_p50_ms !== null), [
      { key: 'rtt_p50_ms', label: 'RTT p50 (ms)', color: '#1565c0', fmt: v => Number(v).toFixed(2) + ' ms' },
    ]);
    FS.chart($('loss-chart'), d.points.map(p => Object.assign({}, p, { loss_pct: 100 * (p.loss_ratio || 0) })), [
      { key: 'loss_pct', label: 'loss (%)', color: '#c62828', fmt: v => Number(v).toFixed(1) + ' %' },
    ]);
    $('changes-title').textContent = 'Route changes (' + d.changes.length + ' seen in the runs; the receiver counted ' + FS.num(t.route_changes) + ')';
    const cb = $('changes').tBodies[0];
    cb.replaceChildren();
    for (const c of d.changes) {
      cb.append(el('tr', { class: 'change' }, el('td', { text: FS.time(c.at_ms) }),
        el('td', { class: 'from', text: routeText(c.from) }), el('td', { class: 'to', text: routeText(c.to) })));
    }
    if (!d.changes.length) cb.append(el('tr', {}, el('td', { colspan: 3, text: 'The route did not change in this time range.' })));
    const hb = $('history').tBodies[0];
    hb.replaceChildren();
    for (const r of d.history) {
      hb.append(el('tr', { class: 'route-row' }, el('td', { text: routeText(r.hops) }),
        el('td', { text: FS.time(r.first_seen_ms) }), el('td', { text: FS.time(r.last_seen_ms) }),
        el('td', { text: FS.num(r.runs) })));
    }
  }

  async function loadDetail() {
    const id = state.get('id');
    if (!id) { detail = null; drawDetail(); return; }
    const p = FS.rangeParams(new URLSearchParams());
    p.set('id', id);
    try {
      detail = await api('path', p);
      FS.showError(null);
    } catch (e) {
      FS.showError(e);
      detail = null;
    }
    drawDetail();
    document.body.dataset.detailLoads = String(Number(document.body.dataset.detailLoads || 0) + 1);
  }

  async function load() {
    try {
      const data = await api('paths', params());
      FS.showError(null);
      tests = data.tests.map(t => Object.assign(t, { destination: dest(t), tags_text: tagsText(t) }));
      $('tests-title').textContent = 'Path tests (' + tests.length + ')';
    } catch (e) {
      FS.showError(e);
      tests = [];
    }
    render();
    await loadDetail();
    document.body.dataset.loads = String(Number(document.body.dataset.loads || 0) + 1);
  }

  for (const th of document.querySelectorAll('#tests th')) {
    th.addEventListener('click', () => {
      const col = th.dataset.col;
      sort = { col, desc: sort.col === col ? !sort.desc : !['source', 'destination', 'protocol', 'test', 'tags_text'].includes(col) };
      state.set('sort', col);
      state.set('order', sort.desc ? 'desc' : 'asc');
      save();
      render();
    });
  }

  function apply() {
    for (const id of ['range', 'filter', 'cidr']) state.set(id, $(id).value);
    save();
    load();
  }

  (async () => {
    await FS.status();
    $('filter').value = state.get('filter') || '';
    $('cidr').value = state.get('cidr') || '';
    $('group_as').checked = state.get('group_as') === '1';
    $('group_as').addEventListener('change', () => { state.set('group_as', $('group_as').checked ? '1' : '0'); save(); drawDetail(); });
    $('range').addEventListener('change', apply);
    for (const id of ['filter', 'cidr']) $(id).addEventListener('keydown', e => { if (e.key === 'Enter') apply(); });
    $('apply').addEventListener('click', apply);
    await load();
  })();
})();
