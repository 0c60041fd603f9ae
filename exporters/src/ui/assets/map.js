// Network Map: nodes are groups (any key), edges the traffic between them,
// laid out by cytoscape.js. Labels are drawn on a canvas as text.
'use strict';

(() => {
  const { el, api, state, save } = FS;
  const $ = id => document.getElementById(id);
  const METRIC_LABEL = { retransmit_ratio: 'Retransmit ratio', rtt: 'RTT p50', failed: 'Failed connections', resets: 'Resets' };
  const fmtMetric = (m, v) => m === 'retransmit_ratio' ? FS.pct(v) : m === 'rtt' ? FS.ms(v) : FS.num(v);

  const cy = cytoscape({
    container: $('cy'),
    wheelSensitivity: 0.3,
    style: [
      { selector: 'node', style: {
        'background-color': 'data(color)', label: 'data(label)', 'font-size': 12, color: '#1d2330',
        'text-valign': 'bottom', 'text-margin-y': 4, width: 'data(size)', height: 'data(size)',
        'text-background-color': '#ffffff', 'text-background-opacity': 0.85, 'text-background-padding': 2,
        'border-width': 2, 'border-color': '#ffffff' } },
      { selector: 'node[?unresolved]', style: { shape: 'round-rectangle', 'background-color': '#90a4ae', color: '#5f6b7a' } },
      { selector: 'edge', style: {
        width: 'data(width)', 'line-color': 'data(color)', 'target-arrow-color': 'data(color)',
        'target-arrow-shape': 'triangle', 'curve-style': 'bezier', 'arrow-scale': 0.9, opacity: 0.85 } },
      { selector: ':selected', style: { 'border-color': '#1565c0', 'border-width': 3, 'line-color': '#1565c0', 'target-arrow-color': '#1565c0' } },
    ],
  });
  window.flowscopeMap = cy;
  let DEF = { group: 'service.name' };

  function params() {
    const p = FS.rangeParams(new URLSearchParams());
    p.set('group', state.get('group') || DEF.group);
    p.set('metric', state.get('metric') || 'retransmit_ratio');
    if (state.get('hide_unresolved') === 'true') p.set('hide_unresolved', 'true');
    for (const f of (state.get('filter') || '').split(',')) if (f.trim()) p.append('filter', f.trim());
    if (state.get('cidr')) p.set('cidr', state.get('cidr'));
    return p;
  }

  async function detail(what) {
    const p = params();
    p.delete('metric');
    let title;
    if (what.node !== undefined) { p.set('node', what.node); title = what.node; }
    else { p.set('client', what.client); p.set('server', what.server); title = what.client + ' → ' + what.server; }
    $('detail-title').textContent = title;
    if (what.node === undefined) FS.pathLink($('detail-links'), what.client, what.server, p.get('group'));
    else $('detail-links').replaceChildren();
    try {
      const ts = await api('timeseries', p);
      FS.chart($('detail-chart'), ts.points, [
        { key: 'bytes_client_to_server', label: 'client → server', color: '#1565c0', fmt: FS.bytes },
        { key: 'bytes_server_to_client', label: 'server → client', color: '#ef6c00', fmt: FS.bytes },
      ]);
      FS.totals($('detail-table'), FS.sum(ts.points));
    } catch (e) { FS.showError(e); }
  }

  async function load() {
    const metric = state.get('metric') || 'retransmit_ratio';
    $('metric-head').textContent = METRIC_LABEL[metric] || metric;
    let data;
    try {
      data = await api('map', params());
      FS.showError(null);
    } catch (e) {
      FS.showError(e);
      return;
    }
    const maxNode = Math.max(1, ...data.nodes.map(n => n.mainstat));
    const elements = [];
    for (const n of data.nodes) {
      elements.push({ group: 'nodes', data: {
        id: n.id, label: n.title, color: n.color, unresolved: n.unresolved,
        size: 22 + 26 * Math.sqrt(n.mainstat / maxNode) } });
    }
    for (const e of data.edges) {
      elements.push({ group: 'edges', data: {
        id: e.id, source: e.source, target: e.target, color: e.color, width: e.thickness } });
    }
    cy.elements().remove();
    cy.add(elements);
    cy.layout({
      name: 'cose', animate: false, padding: 40, randomize: false,
      nodeRepulsion: () => 400000, idealEdgeLength: () => 140, nodeOverlap: 40, componentSpacing: 120,
    }).run();
    cy.fit(undefined, 40);

    const body = $('edges').tBodies[0];
    body.replaceChildren();
    for (const e of data.edges) {
      const tr = el('tr', { 'data-source': e.source, 'data-target': e.target },
        el('td', { class: e.client_unresolved ? 'unresolved' : '', text: e.source }),
        el('td', { class: e.server_unresolved ? 'unresolved' : '', text: e.target }),
        el('td', { text: FS.bytes(e.mainstat) }),
        el('td', { text: fmtMetric(metric, e.secondarystat) }));
      tr.addEventListener('click', () => detail({ client: e.source, server: e.target }));
      body.append(tr);
    }
    if (!data.edges.length) body.append(el('tr', {}, el('td', { colspan: 4, text: 'No traffic in this time range.' })));
    document.body.dataset.loads = String(Number(document.body.dataset.loads || 0) + 1);
  }

  cy.on('tap', 'node', ev => detail({ node: ev.target.id() }));
  cy.on('tap', 'edge', ev => detail({ client: ev.target.data('source'), server: ev.target.data('target') }));

  function apply() {
    state.set('group', $('group').value);
    state.set('metric', $('metric').value);
    state.set('range', $('range').value);
    state.set('filter', $('filter').value);
    state.set('cidr', $('cidr').value);
    state.set('hide_unresolved', $('hide_unresolved').checked ? 'true' : 'false');
    save();
    load();
  }

  (async () => {
    const keys = await FS.status();
    if (keys.defaults) DEF = keys.defaults;
    FS.fillKeys($('group'), keys, state.get('group') || DEF.group);
    $('metric').value = state.get('metric') || 'retransmit_ratio';
    $('filter').value = state.get('filter') || '';
    $('cidr').value = state.get('cidr') || '';
    $('hide_unresolved').checked = state.get('hide_unresolved') === 'true';
    for (const id of ['group', 'metric', 'range', 'hide_unresolved']) $(id).addEventListener('change', apply);
    $('apply').addEventListener('click', apply);
    for (const id of ['filter', 'cidr']) $(id).addEventListener('keydown', e => { if (e.key === 'Enter') apply(); });
    await load();
  })();
})();
