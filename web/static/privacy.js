// The Privacy requests card: export what Pulse keeps of a customer, delete
// a customer, and follow the deletions. It talks to the scorer's
// /v1/exports, /v1/profiles (DELETE) and /v1/deletions with a key of the
// admin scope, kept in this tab only (sessionStorage).
(function () {
  'use strict';

  var KEY_STORE = 'pulse.adminKey';
  var POLL_MS = 2000;
  var pollTimer = null;
  var exportURL = null;

  function $(id) { return document.getElementById(id); }

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text != null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function showError(msg) {
    $('privacy-error').textContent = msg || '';
    $('privacy-error').hidden = !msg;
  }

  function key() {
    var k = $('privacy-key').value.trim();
    try { if (k) sessionStorage.setItem(KEY_STORE, k); } catch (e) { /* private mode */ }
    return k;
  }

  // subject is the path and query naming the customer: user/{id}[?kind=].
  function subject() {
    var id = $('privacy-id').value.trim();
    if (!id) throw new Error('Enter one of the customer\'s ids first.');
    var kind = $('privacy-kind').value;
    return 'user/' + encodeURIComponent(id) + (kind ? '?kind=' + encodeURIComponent(kind) : '');
  }

  function call(method, path) {
    var k = key();
    if (!k) return Promise.reject(new Error('Enter a key with the admin scope first.'));
    return fetch(path, { method: method, headers: { 'Authorization': 'Bearer ' + k }, cache: 'no-store' })
      .catch(function () { throw new Error('Pulse cannot be reached. Is the scorer running?'); })
      .then(function (resp) {
        return resp.text().then(function (text) {
          if (!resp.ok) {
            var out = null;
            try { out = JSON.parse(text); } catch (e) { out = null; }
            if (resp.status === 401) throw new Error('This key was not accepted: enter a key with the admin scope.');
            if (resp.status === 403) throw new Error('This key cannot do that: it needs the admin scope.');
            throw new Error((out && out.error) || ('The server answered ' + resp.status + '.'));
          }
          return text;
        });
      });
  }

  function exportData() {
    showError('');
    var path;
    try { path = '/v1/exports/' + subject(); } catch (e) { showError(e.message); return; }
    var out = $('privacy-result');
    out.textContent = 'Exporting…';
    call('GET', path).then(function (text) {
      var lines = text.split('\n').filter(function (l) { return l.trim() !== ''; });
      var head = null, profile = null, sum = null;
      lines.forEach(function (l) {
        var m;
        try { m = JSON.parse(l); } catch (e) { return; }
        if (m.type === 'export') head = m;
        else if (m.type === 'profile') profile = m;
        else if (m.type === 'summary') sum = m;
      });
      out.textContent = '';
      out.className = 'privacy-result';
      if (!head || !sum) { showError('The export ended early: try again.'); return; }
      var rows = sum.rows || {};
      var total = Object.keys(rows).reduce(function (n, k) { return n + rows[k]; }, 0);
      var title = el('p');
      title.appendChild(el('strong', head.canonical_id ? 'Customer ' + head.canonical_id : head.identifier));
      title.appendChild(document.createTextNode(profile ? ': a live profile, ' + total + ' history rows.' : ': no live profile, ' + total + ' history rows.'));
      out.appendChild(title);
      var ul = el('ul');
      ul.id = 'privacy-export-summary';
      ul.appendChild(el('li', 'Ids: ' + (head.identifiers || []).join(', ')));
      if (profile) ul.appendChild(el('li', 'Segments now: ' + ((profile.segments || []).join(', ') || 'none')));
      Object.keys(rows).sort().forEach(function (t) { ul.appendChild(el('li', t.replace(/_/g, ' ') + ': ' + rows[t])); });
      out.appendChild(ul);
      if (!sum.complete) out.appendChild(el('p', 'Incomplete: ' + (sum.error || 'the history did not answer') + '. Export again.', 'error'));
      if (exportURL) URL.revokeObjectURL(exportURL);
      exportURL = URL.createObjectURL(new Blob([text], { type: 'application/x-ndjson' }));
      var a = el('a', 'Download the export (' + lines.length + ' lines, JSON)', 'btn');
      a.id = 'privacy-download';
      a.href = exportURL;
      a.download = 'pulse-export-' + (head.canonical_id || $('privacy-id').value.trim()) + '.jsonl';
      out.appendChild(a);
    }).catch(function (e) { out.textContent = ''; showError(e.message); });
  }

  function askDelete() {
    showError('');
    var id = $('privacy-id').value.trim();
    if (!id) { showError('Enter one of the customer\'s ids first.'); return; }
    if (!key()) { showError('Enter a key with the admin scope first.'); return; }
    $('privacy-confirm-id').textContent = id;
    $('privacy-suppress').checked = false;
    $('privacy-confirm').hidden = false;
  }

  function doDelete() {
    showError('');
    var path;
    try { path = '/v1/profiles/' + subject(); } catch (e) { showError(e.message); return; }
    if ($('privacy-suppress').checked) path += (path.indexOf('?') < 0 ? '?' : '&') + 'suppress=true';
    $('privacy-confirm').hidden = true;
    call('DELETE', path).then(function (text) {
      var d = JSON.parse(text);
      var out = $('privacy-result');
      out.textContent = '';
      out.className = 'privacy-result';
      var p = el('p');
      p.id = 'privacy-deleted';
      p.appendChild(el('strong', 'Deletion requested'));
      p.appendChild(document.createTextNode(': ' + (d.identifiers || []).join(', ') + (d.suppressed ? ' (their later events dropped)' : '') + '. Its progress is below.'));
      out.appendChild(p);
      refresh();
    }).catch(function (e) { showError(e.message); });
  }

  function stage(g) {
    if (!g) return '—';
    if (g.done) return '✓';
    var s = g.parts_done + '/' + g.parts;
    return g.mutations_running ? s + ', ClickHouse deleting' : s;
  }

  function render(list) {
    var table = $('privacy-deletions');
    var items = (list && list.deletions) || [];
    table.textContent = '';
    table.hidden = items.length === 0;
    $('privacy-deletions-empty').hidden = items.length > 0;
    $('privacy-deletions-empty').textContent = 'No deletion yet.';
    if (!items.length) return false;
    var head = el('tr');
    ['Requested', 'Asked by', 'Status', 'Identity', 'Stream', 'History', 'Request id'].forEach(function (h) { head.appendChild(el('th', h)); });
    table.appendChild(head);
    var unfinished = false;
    items.forEach(function (d) {
      var tr = el('tr');
      tr.setAttribute('data-request', d.request_id);
      tr.appendChild(el('td', d.requested_at ? new Date(d.requested_at).toLocaleString() : ''));
      tr.appendChild(el('td', (d.kind || '').replace(/_/g, ' ') + (d.suppressed ? ', suppressed' : '')));
      var st = el('td');
      st.appendChild(el('span', d.status.replace(/_/g, ' '), 'pill status-' + d.status + (d.status === 'done' ? ' pill-done' : ' pill-progress')));
      tr.appendChild(st);
      tr.appendChild(el('td', stage(d.identity)));
      tr.appendChild(el('td', stage(d.stream)));
      tr.appendChild(el('td', stage(d.history)));
      tr.appendChild(el('td', d.request_id, 'small muted'));
      table.appendChild(tr);
      if (d.status !== 'done') unfinished = true;
    });
    return unfinished;
  }

  function renderSuppressed(list) {
    var table = $('privacy-suppressed');
    var items = (list && list.suppressed) || [];
    table.textContent = '';
    table.hidden = items.length === 0;
    $('privacy-suppressed-empty').hidden = items.length > 0;
    if (!items.length) return;
    var head = el('tr');
    ['Id', 'Since', 'Deletion', ''].forEach(function (h) { head.appendChild(el('th', h)); });
    table.appendChild(head);
    items.forEach(function (x) {
      var tr = el('tr');
      tr.setAttribute('data-id', x.id);
      tr.appendChild(el('td', x.id));
      tr.appendChild(el('td', x.at ? new Date(x.at).toLocaleString() : ''));
      tr.appendChild(el('td', x.request_id || '', 'small muted'));
      var td = el('td');
      var b = el('button', 'Lift', 'btn btn-ghost lift');
      b.type = 'button';
      b.addEventListener('click', function () { lift(x.id); });
      td.appendChild(b);
      tr.appendChild(td);
      table.appendChild(tr);
    });
  }

  // lift ends id's suppression, then reads the list until the scorer has
  // seen it go (moments).
  function lift(id) {
    showError('');
    call('DELETE', '/v1/suppressions/' + encodeURIComponent(id)).then(function () {
      var tries = 0;
      (function again() {
        call('GET', '/v1/suppressions?limit=100').then(function (text) {
          var list = JSON.parse(text);
          renderSuppressed(list);
          var still = (list.suppressed || []).some(function (x) { return x.id === id; });
          if (still && ++tries < 20) setTimeout(again, 250);
        });
      })();
    }).catch(function (e) { showError(e.message); });
  }

  // refresh reads the latest deletions and the suppressed ids, and again
  // every POLL_MS while a deletion is not done.
  function refresh() {
    if (pollTimer) { clearTimeout(pollTimer); pollTimer = null; }
    if (!$('privacy-key').value.trim()) return;
    call('GET', '/v1/suppressions?limit=100').then(function (text) { renderSuppressed(JSON.parse(text)); })
      .catch(function () { /* said by the deletions' read below */ });
    call('GET', '/v1/deletions?limit=20').then(function (text) {
      if (render(JSON.parse(text))) pollTimer = setTimeout(refresh, POLL_MS);
    }).catch(function (e) {
      $('privacy-deletions').hidden = true;
      $('privacy-deletions-empty').hidden = false;
      $('privacy-deletions-empty').textContent = e.message;
    });
  }

  document.addEventListener('DOMContentLoaded', function () {
    try { $('privacy-key').value = sessionStorage.getItem(KEY_STORE) || ''; } catch (e) { /* private mode */ }
    $('privacy-key').addEventListener('change', refresh);
    $('privacy-export').addEventListener('click', exportData);
    $('privacy-delete').addEventListener('click', askDelete);
    $('privacy-confirm-go').addEventListener('click', doDelete);
    $('privacy-confirm-cancel').addEventListener('click', function () { $('privacy-confirm').hidden = true; });
    $('privacy-form').addEventListener('submit', function (ev) { ev.preventDefault(); exportData(); });
    refresh();
  });
})();
