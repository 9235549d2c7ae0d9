// The Import page: drop a CSV, see its first rows and the guessed mapping,
// fix it, import, watch the progress and the refused rows. It talks to
// /v1/import on the scorer with a key of the write (or admin) scope.
(function () {
  'use strict';

  var KEY_STORE = 'pulse.importKey';
  var ORDER = ['type', 'userId', 'anonymousId', 'event', 'name', 'timestamp', 'messageId'];
  var current = null; // {name, text}

  function $(id) { return document.getElementById(id); }

  function cell(tag, text) {
    var c = document.createElement(tag);
    c.textContent = text == null ? '' : String(text);
    return c;
  }

  function showError(msg) {
    $('import-error').textContent = msg || '';
    $('import-error').hidden = !msg;
  }

  function key() {
    var k = $('import-key').value.trim();
    try { if (k) localStorage.setItem(KEY_STORE, k); } catch (e) { /* private mode */ }
    return k;
  }

  function call(method, path, body) {
    var k = key();
    if (!k) return Promise.reject(new Error('Enter a key with the write scope first.'));
    return fetch(path, { method: method, headers: { 'Authorization': 'Bearer ' + k, 'Content-Type': 'text/csv' }, body: body, cache: 'no-store' })
      .catch(function () { throw new Error('Pulse cannot be reached. Is the scorer running?'); })
      .then(function (resp) {
        return resp.text().then(function (text) {
          var out = null;
          try { out = text ? JSON.parse(text) : null; } catch (e) { out = null; }
          if (!resp.ok) {
            if (resp.status === 401) throw new Error('This key was not accepted: enter a key with the write scope.');
            if (resp.status === 403) throw new Error('This key cannot import: it needs the write (or admin) scope.');
            throw new Error((out && out.error) || ('The server answered ' + resp.status + '.'));
          }
          return out;
        });
      });
  }

  function fieldRank(f) {
    var i = ORDER.indexOf(f);
    if (i >= 0) return '0' + String(i).padStart(2, '0');
    return (f.indexOf('traits.') === 0 ? '1' : '2') + f;
  }

  function mappingRow(field, source) {
    var tr = document.createElement('tr');
    var f = document.createElement('input');
    f.value = field;
    f.className = 'map-field';
    f.setAttribute('aria-label', 'Event field');
    var s = document.createElement('input');
    s.value = source;
    s.className = 'map-source';
    s.setAttribute('data-field', field);
    s.setAttribute('aria-label', 'Column or "constant" for ' + field);
    f.addEventListener('input', function () { s.setAttribute('data-field', f.value.trim()); });
    var a = document.createElement('td'); a.appendChild(f);
    var b = document.createElement('td'); b.appendChild(s);
    tr.appendChild(a); tr.appendChild(b);
    return tr;
  }

  function renderPreview(p) {
    var t = $('import-rows');
    t.textContent = '';
    var head = document.createElement('tr');
    p.columns.forEach(function (c) { head.appendChild(cell('th', c)); });
    t.appendChild(head);
    (p.rows || []).forEach(function (r) {
      var tr = document.createElement('tr');
      r.forEach(function (v) { tr.appendChild(cell('td', v)); });
      t.appendChild(tr);
    });
    var m = $('import-mapping');
    m.textContent = '';
    var mh = document.createElement('tr');
    mh.appendChild(cell('th', 'Field'));
    mh.appendChild(cell('th', 'Column, or "constant"'));
    m.appendChild(mh);
    Object.keys(p.mapping || {}).sort(function (a, b) { return fieldRank(a) < fieldRank(b) ? -1 : 1; })
      .forEach(function (f) { m.appendChild(mappingRow(f, p.mapping[f])); });
    $('import-time-format').value = p.timestampFormat || '';
    $('import-file-name').textContent = current.name + ': the first ' + (p.rows || []).length + ' rows';
    $('import-preview').hidden = false;
  }

  function readMapping() {
    var out = {};
    Array.prototype.forEach.call(document.querySelectorAll('#import-mapping tr'), function (tr) {
      var f = tr.querySelector('.map-field'), s = tr.querySelector('.map-source');
      if (f && s && f.value.trim() && s.value.trim()) out[f.value.trim()] = s.value.trim();
    });
    return { mapping: out, timestampFormat: $('import-time-format').value.trim() };
  }

  function load(file) {
    showError('');
    $('import-progress').hidden = true;
    $('import-report').hidden = true;
    file.text().then(function (text) {
      current = { name: file.name, text: text };
      return call('POST', '/v1/import/preview', text);
    }).then(renderPreview).catch(function (err) { showError(err.message); });
  }

  function progress(s) {
    var p = $('import-progress');
    p.hidden = false;
    p.setAttribute('data-done', s.done ? 'true' : 'false');
    p.textContent = s.done ? (s.error ? 'Stopped: ' : 'Done: ') + s.rows + ' rows, ' + s.imported + ' imported, ' + s.refused + ' refused'
      : 'Importing… ' + s.rows + ' rows read, ' + s.imported + ' imported, ' + s.refused + ' refused';
  }

  function report(rows) {
    var t = $('import-report-table');
    t.textContent = '';
    var head = document.createElement('tr');
    ['Row', 'Column', 'Value', 'Reason'].forEach(function (h) { head.appendChild(cell('th', h)); });
    t.appendChild(head);
    rows.forEach(function (r) {
      var tr = document.createElement('tr');
      r.forEach(function (v) { tr.appendChild(cell('td', v)); });
      t.appendChild(tr);
    });
    $('import-report').hidden = rows.length === 0;
  }

  function poll(id) {
    call('GET', '/v1/import/' + encodeURIComponent(id)).then(function (s) {
      progress(s);
      if (!s.done) { setTimeout(function () { poll(id); }, 300); return; }
      $('import-go').disabled = false;
      if (s.error) showError(s.error);
      report(s.report || []);
    }).catch(function (err) { $('import-go').disabled = false; showError(err.message); });
  }

  $('import-go').addEventListener('click', function () {
    if (!current) return;
    showError('');
    $('import-report').hidden = true;
    var q = '?name=' + encodeURIComponent(current.name) + '&mapping=' + encodeURIComponent(JSON.stringify(readMapping()));
    $('import-go').disabled = true;
    call('POST', '/v1/import' + q, current.text).then(function (j) {
      progress({ done: false, rows: 0, imported: 0, refused: 0 });
      poll(j.job);
    }).catch(function (err) { $('import-go').disabled = false; showError(err.message); });
  });

  $('import-file').addEventListener('change', function (e) {
    if (e.target.files && e.target.files[0]) load(e.target.files[0]);
  });
  var drop = $('import-drop');
  drop.addEventListener('dragover', function (e) { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', function () { drop.classList.remove('over'); });
  drop.addEventListener('drop', function (e) {
    e.preventDefault();
    drop.classList.remove('over');
    if (e.dataTransfer.files && e.dataTransfer.files[0]) load(e.dataTransfer.files[0]);
  });
  try { $('import-key').value = localStorage.getItem(KEY_STORE) || ''; } catch (e) { /* private mode */ }
})();
