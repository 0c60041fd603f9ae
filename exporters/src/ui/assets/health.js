// Network Health: ranked findings with their evidence and the affected
// client and server groups.
'use strict';

(() => {
  const { el, api, state, save } = FS;
  const $ = id => document.getElementById(id);
  const KIND = {
    dns_failure: 'DNS', connection_failure: 'Connections', resets: 'Resets',
    retransmits: 'Retransmits', path_unreachable: 'Network path', path_loss: 'Network path',
    route_changed: 'Network path', certificate_expired: 'Certificate', certificate_expiring: 'Certificate',
    retransmits_rise: 'Rise over baseline', connection_failure_rise: 'Rise over baseline',
    dns_failure_rise: 'Rise over baseline', connection_churn: 'Connection churn',
    drops: 'Kernel drops', host_drops: 'Kernel drops (host)',
  };

  async function load() {
    const list = $('findings');
    let data;
    try {
      const p = FS.rangeParams(new URLSearchParams());
      if (state.get('cidr')) p.set('cidr', state.get('cidr'));
      data = await api('health', p);
      FS.showError(null);
    } catch (e) {
      FS.showError(e);
      return;
    }
    const t = data.thresholds;
    $('thresholds').textContent = 'Thresholds: retransmits above ' + FS.pct(t.retransmit_ratio) + ' of at least ' + t.min_packets +
      ' packets; path loss above ' + FS.pct(t.path_loss_ratio) + '; at least ' + t.min_failures + ' failure(s); rises of ' +
      t.baseline_ratio + '× with at least ' + t.baseline_min_count + ' events over ' +
      (data.baselines.length ? data.baselines.join(' and ') : 'no baseline (the store holds no span before this range)') +
      '; churn from ' + t.churn_connections_per_second + ' new connections/s with ' + FS.pct(t.churn_short_ratio) + ' under 100 ms.';
    list.replaceChildren();
    data.findings.forEach((f, i) => {
      const dl = el('dl', {});
      const row = (k, v) => { if (v) dl.append(el('dt', { text: k }), el('dd', { text: v })); };
      row('Kind', KIND[f.kind] || f.kind);
      row('Client', f.client);
      row('Server', f.server);
      row(f.kind === 'drops' || f.kind === 'host_drops' ? 'Drop reason' : 'Error', f.error_type);
      row('Count', FS.num(f.count));
      row('Next step', f.runbook);
      list.append(el('li', { class: f.severity, 'data-kind': f.kind, 'data-rank': i + 1 },
        el('div', { class: 'title' }, el('span', { class: 'sev', text: f.severity }), f.title),
        el('p', { class: 'evidence', text: f.evidence }),
        dl));
    });
    if (!data.findings.length) list.append(el('li', { class: 'empty', text: 'Nothing wrong in this time range.' }));
    document.body.dataset.loads = String(Number(document.body.dataset.loads || 0) + 1);
  }

  (async () => {
    await FS.status();
    $('cidr').value = state.get('cidr') || '';
    const apply = () => { state.set('range', $('range').value); state.set('cidr', $('cidr').value); save(); load(); };
    $('range').addEventListener('change', apply);
    $('apply').addEventListener('click', apply);
    $('cidr').addEventListener('keydown', e => { if (e.key === 'Enter') apply(); });
    await load();
  })();
})();
