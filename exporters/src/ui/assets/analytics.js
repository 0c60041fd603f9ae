// Network Analytics: the client/server dependency table, grouped by any two
// keys, filtered by key=value and peer CIDR, sortable, with a time series
// of the selected row and a CSV download of the same query.
'use strict';

(() => {
  const { el, api, state, save } = FS;
  const $ = id => document.getElementById(id);
  let rows = [];
  // The API names the default keys (they follow the telemetry contract).
  let DEF = { client_key: 'service.name', server_key: 'service.name' };
  let sort = { col: state.get('sort') || 'bytes_client_to_server', desc: state.get('order') !== 'asc' };

  function params() {
    const p = FS.rangeParams(new URLSearchParams());
    p.set('client_key', state.get('client_key') || DEF.client_key);
    p.set('server_key', state.get('server_key') || DEF.server_key);
    for (const f of (state.get('filter') || '').split(',')) if (f.trim()) p.append('filter', f.trim());
    if (state.get('cidr')) p.set('cidr', state.get('cidr'));
    return p;
  }

  const CELLS = [
    ['client', r => r.client],
    ['server', r => r.server],
    // Exact byte counts: this is the table to reconcile against.
    ['bytes_client_to_server', r => FS.num(r.bytes_client_to_server) + ' B'],
    ['bytes_server_to_client', r => FS.num(r.bytes_server_to_client) + ' B'],
    ['throughput_bytes_per_second', r => FS.bytes(r.throughput_bytes_per_second) + '/s'],
    ['retransmits', r => FS.num(r.retransmits)],
    ['rtt_p50_ms', r => FS.ms(r.rtt_p50_ms)],
    ['rtt_p99_ms', r => FS.ms(r.rtt_p99_ms)],
    ['connections_opened', r => FS.num(r.connections_opened)],
    ['connections_closed', r => FS.num(r.connections_closed)],
    ['connections_failed', r => FS.num(r.connections_failed)],
    ['resets', r => FS.num(r.resets)],
  ];

  function render() {
    const { col, desc } = sort;
    rows.sort((a, b) => {
      const x = a[col], y = b[col];
      const c = typeof x === 'string' || typeof y === 'string'
        ? String(x).localeCompare(String(y)) : (Number(x) || 0) - (Number(y) || 0);
      return desc ? -c : c;
    });
    for (const th of document.querySelectorAll('#rows th')) {
      if (th.dataset.col === col) th.setAttribute('aria-sort', desc ? 'descending' : 'ascending');
      else th.removeAttribute('aria-sort');
    }
    const body = $('rows').tBodies[0];
    body.replaceChildren();
    for (const r of rows) {
      const tr = el('tr', { 'data-client': r.client, 'data-server': r.server });
      for (const [key, f] of CELLS) {
        const unresolved = (key === 'client' && r.client_unresolved) || (key === 'server' && r.server_unresolved);
        tr.append(el('td', { 'data-col': key, class: unresolved ? 'unresolved' : '', text: f(r) }));
      }
      tr.addEventListener('click', () => select(tr, r));
      body.append(tr);
    }
    if (!rows.length) body.append(el('tr', {}, el('td', { colspan: CELLS.length, text: 'No dependencies match.' })));
  }

  async function select(tr, r) {
    for (const x of document.querySelectorAll('#rows tr.selected')) x.classList.remove('selected');
    tr.classList.add('selected');
    $('series-title').textContent = r.client + ' → ' + r.server + ' over time';
    const p = params();
    FS.pathLink($('series-links'), r.client, r.server, p.get('client_key'));
    p.set('client', r.client);
    p.set('server', r.server);
    try {
      const ts = await api('timeseries', p);
      FS.chart($('series-chart'), ts.points, [
        { key: 'bytes_client_to_server', label: 'bytes sent', color: '#1565c0', fmt: FS.bytes },
        { key: 'bytes_server_to_client', label: 'bytes received', color: '#ef6c00', fmt: FS.bytes },
      ]);
      FS.totals($('series-table'), r);
    } catch (e) { FS.showError(e); }
  }

  async function load() {
    const p = params();
    $('csv').href = '/api/analytics.csv?' + p.toString();
    try {
      const data = await api('analytics', p);
      FS.showError(null);
      rows = data.rows;
      $('rows-title').textContent = 'Dependencies: ' + data.client_key + ' → ' + data.server_key + ' (' + rows.length + ')';
    } catch (e) {
      FS.showError(e);
      rows = [];
    }
    render();
    document.body.dataset.loads = String(Number(document.body.dataset.loads || 0) + 1);
  }

  for (const th of document.querySelectorAll('#rows th')) {
    th.addEventListener('click', () => {
      const col = th.dataset.col;
      sort = { col, desc: sort.col === col ? !sort.desc : !(col === 'client' || col === 'server') };
      state.set('sort', col);
      state.set('order', sort.desc ? 'desc' : 'asc');
      save();
      render();
    });
  }

  function apply() {
    for (const id of ['client_key', 'server_key', 'range', 'filter', 'cidr']) state.set(id, $(id).value);
    save();
    load();
  }

  (async () => {
    const keys = await FS.status();
    if (keys.defaults) DEF = keys.defaults;
    FS.fillKeys($('client_key'), keys, state.get('client_key') || DEF.client_key);
    FS.fillKeys($('server_key'), keys, state.get('server_key') || DEF.server_key);
    $('filter').value = state.get('filter') || '';
    $('cidr').value = state.get('cidr') || '';
    for (const id of ['client_key', 'server_key', 'range']) $(id).addEventListener('change', apply);
    for (const id of ['filter', 'cidr']) $(id).addEventListener('keydown', e => { if (e.key === 'Enter') apply(); });
    $('apply').addEventListener('click', apply);
    await load();
  })();
})();
