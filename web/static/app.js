// Pulse dashboard: live segments for marketers. Plain JavaScript, no build
// step. Talks to the scorer API on the same origin:
//   GET  /v1/segments                     counts (polled, and refreshed after each change)
//   GET  /v1/segments?history=1h          the same with the server's last hour of counts
//   GET  /v1/segments/live (SSE)          enters and exits as they happen
//   GET  /v1/segments/{name}/members      paginated members
//   GET  /v1/profiles/user/{id}           a customer's features, segments, linked ids, traits, events
//   POST /v1/predict                      a prediction, when the page config names models
//   GET  /v1/rfm                          the RFM grid, when the config has an rfm block
(function () {
  'use strict';

  var cfg = window.PULSE_CONFIG || {};
  var KEY_STORE = 'pulse.readKey';
  var HISTORY_STORE = 'pulse.segmentHistory.v1';
  var HOUR = 3600 * 1000;
  var POLL_MS = 10000;
  // How often a poll also asks for the server's last hour. The page's own
  // samples fill in between; asking again catches what a sleeping tab missed.
  var HISTORY_MS = 10 * 60000;
  var FEED_MAX = 60;

  var state = {
    key: '',
    segments: [],            // [{name, description, rule, entity, members}]
    cards: {},               // name -> card elements
    history: loadHistory(),  // name -> [[time ms, count], ...] for the last hour
    selected: null,
    membersCursor: '',
    membersShown: 0,
    source: null,
    lastEventId: '',
    feedIds: {},
    pollTimer: null,
    refreshTimer: null,
    lastRefresh: 0,
    historyAt: 0,            // when the server's history was last merged
    rfm: null,               // the last GET /v1/rfm answer
    rfmMoves: [],            // [[time ms, from, to]] of the last hour, from the live feed
    rfmExits: {},            // user + at -> group left, waiting for its enter
    models: modelNames(cfg.models)
  };

  function $(id) { return document.getElementById(id); }

  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        if (k === 'text') e.textContent = attrs[k];
        else if (k === 'class') e.className = attrs[k];
        else if (k.indexOf('on') === 0) e.addEventListener(k.slice(2), attrs[k]);
        else e.setAttribute(k, attrs[k]);
      });
    }
    (children || []).forEach(function (c) {
      if (c == null) return;
      e.appendChild(typeof c === 'string' ? document.createTextNode(c) : c);
    });
    return e;
  }

  function modelNames(models) {
    if (!Array.isArray(models)) return [];
    return models.map(function (m) { return typeof m === 'string' ? m : (m && m.name); }).filter(Boolean);
  }

  // human names a segment, feature or group for the page: "rfm:at_risk"
  // reads "RFM: At risk", "rfm_r" "RFM R", "rfm_previous_group" "RFM
  // previous group".
  function human(name) {
    var s = String(name);
    if (s.indexOf('rfm:') === 0) return 'RFM: ' + human(s.slice(4));
    if (s.indexOf('rfm_') === 0) return 'RFM ' + (s.length === 5 ? s.slice(4).toUpperCase() : s.slice(4).replace(/_/g, ' '));
    s = s.replace(/_/g, ' ');
    return s.charAt(0).toUpperCase() + s.slice(1);
  }

  var nf = new Intl.NumberFormat(undefined);
  var nf2 = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
  var money = new Intl.NumberFormat(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });

  function ago(t) {
    var s = Math.max(0, Math.round((Date.now() - t) / 1000));
    if (s < 5) return 'just now';
    if (s < 60) return s + 's ago';
    var m = Math.round(s / 60);
    if (m < 60) return m + ' min ago';
    var h = Math.round(m / 60);
    if (h < 48) return h + ' h ago';
    return new Date(t).toLocaleDateString();
  }

  // ---- API ----------------------------------------------------------------

  function ApiError(status, message) {
    this.status = status;
    this.message = message;
  }

  function api(path, opts) {
    opts = opts || {};
    var headers = { 'Authorization': 'Bearer ' + state.key };
    if (opts.body) headers['Content-Type'] = 'application/json';
    return fetch(path, { method: opts.method || 'GET', headers: headers, body: opts.body, cache: 'no-store' })
      .catch(function () { throw new ApiError(0, 'Pulse cannot be reached. Is the scorer running?'); })
      .then(function (resp) {
        return resp.text().then(function (text) {
          var body = null;
          try { body = text ? JSON.parse(text) : null; } catch (e) { body = null; }
          if (!resp.ok) {
            var msg = (body && body.error) || ('The server answered ' + resp.status + '.');
            throw new ApiError(resp.status, msg);
          }
          return body;
        });
      });
  }

  function politeError(err) {
    if (!(err instanceof ApiError)) return 'Something went wrong: ' + err;
    if (err.status === 401) return 'Your key was not accepted. Please enter it again.';
    if (err.status === 403) return 'This key cannot read segments: it needs the read scope.';
    if (err.status === 429) return 'Pulse is busy (rate limit for this key). Trying again shortly.';
    if (err.status === 503) return 'Pulse is starting or a store is unavailable. Trying again shortly.';
    return err.message;
  }

  function notice(msg) {
    var n = $('notice');
    n.textContent = msg || '';
    n.hidden = !msg;
  }

  // ---- Key ----------------------------------------------------------------

  function askKey(message) {
    stopLive();
    $('app').hidden = true;
    $('key-dialog').hidden = false;
    $('key-error').textContent = message || '';
    $('key-error').hidden = !message;
    $('key-input').value = '';
    $('key-input').focus();
    setStatus('idle', 'Not connected');
  }

  $('key-form').addEventListener('submit', function (e) {
    e.preventDefault();
    var key = $('key-input').value.trim();
    if (!key) return;
    state.key = key;
    localStorage.setItem(KEY_STORE, key);
    $('key-dialog').hidden = true;
    connect();
  });

  $('change-key').addEventListener('click', function () {
    localStorage.removeItem(KEY_STORE);
    askKey('');
  });

  // ---- Segments -----------------------------------------------------------

  function loadHistory() {
    try {
      var h = JSON.parse(localStorage.getItem(HISTORY_STORE) || '{}');
      return h && typeof h === 'object' ? h : {};
    } catch (e) { return {}; }
  }

  var saveTimer = null;
  function saveHistory() {
    if (saveTimer) return;
    saveTimer = setTimeout(function () {
      saveTimer = null;
      try { localStorage.setItem(HISTORY_STORE, JSON.stringify(state.history)); } catch (e) { /* full: keep in memory */ }
    }, 2000);
  }

  function record(name, count, t) {
    var h = state.history[name] || (state.history[name] = []);
    var last = h[h.length - 1];
    // One sample per 10 s at most keeps an hour small enough for localStorage.
    if (last && t - last[0] < 10000 && h.length > 1) last[1] = count;
    else if (!last || last[1] !== count || t - last[0] > 60000) h.push([t, count]);
    while (h.length > 2 && h[1][0] < t - HOUR) h.shift();
    saveHistory();
  }

  // The scorer samples every segment's count while it runs, open page or
  // not: from its history_since on, its points replace the page's own;
  // the page's older points stay (it may have watched before this scorer
  // started). A scorer without history sends none, and nothing changes.
  function mergeHistory(s) {
    if (!Array.isArray(s.history) || typeof s.history_since !== 'number') return;
    var since = s.history_since;
    var local = (state.history[s.name] || []).filter(function (p) { return p[0] < since; });
    var server = s.history.filter(function (p) { return Array.isArray(p) && p.length === 2; })
      .map(function (p) { return [Number(p[0]), Number(p[1])]; });
    state.history[s.name] = local.concat(server);
  }

  function refreshSegments() {
    state.lastRefresh = Date.now();
    var withHistory = state.lastRefresh - state.historyAt >= HISTORY_MS;
    return api('/v1/segments' + (withHistory ? '?history=1h' : '')).then(function (body) {
      notice('');
      var segs = (body && body.segments) || [];
      var now = Date.now();
      if (withHistory) state.historyAt = now;
      segs.forEach(function (s) {
        if (withHistory) mergeHistory(s);
        record(s.name, Number(s.members) || 0, now);
      });
      var names = segs.map(function (s) { return s.name; }).join(',');
      var known = state.segments.map(function (s) { return s.name; }).join(',');
      state.segments = segs;
      if (names !== known || !state.rendered) { state.rendered = true; renderSegments(); }
      else segs.forEach(updateCard);
      $('updated').textContent = 'Updated ' + new Date(now).toLocaleTimeString();
      if (segs.some(function (s) { return s.name.indexOf('rfm:') === 0; })) refreshRFM();
      return segs;
    });
  }

  // ---- RFM ------------------------------------------------------------------

  function refreshRFM() {
    return api('/v1/rfm').then(function (body) {
      if (!body || !body.enabled) { $('rfm').hidden = true; return; }
      state.rfm = body;
      renderRFM();
    }).catch(function () { /* the segments poll reports trouble */ });
  }

  function groupLabel(g) { return g ? human(g) : '—'; }

  function renderRFM() {
    var body = state.rfm;
    $('rfm').hidden = false;
    var n = body.scores || 5;
    var grid = $('rfm-grid');
    grid.textContent = '';
    var head = el('tr', {}, [el('th', { text: 'R ↓  F →' })]);
    for (var f = 1; f <= n; f++) head.appendChild(el('th', { text: 'F' + f }));
    grid.appendChild(el('thead', {}, [head]));
    var tbody = el('tbody');
    var row = null;
    (body.grid || []).forEach(function (c) {
      if (c.f === 1) { row = el('tr', {}, [el('th', { text: 'R' + c.r })]); tbody.appendChild(row); }
      var td = el('td', {
        class: c.count ? '' : 'empty', 'data-r': String(c.r), 'data-f': String(c.f), 'data-group': c.group || '',
        'data-count': String(c.count), title: groupLabel(c.group) + ': ' + nf.format(c.count) + ' buyers',
        onclick: function () { if (c.group) selectSegment('rfm:' + c.group, { r: c.r, f: c.f, count: c.count }); }
      }, [
        el('span', { class: 'n', text: nf.format(c.count) }),
        el('span', { class: 'g', text: groupLabel(c.group) }),
        el('span', { class: 'm', text: c.count ? 'avg $' + money.format(c.avg_monetary) : '' })
      ]);
      row.appendChild(td);
    });
    grid.appendChild(tbody);
    var at = body.at ? Date.parse(body.at) : 0;
    var under = body.grid_version && body.grid_version !== body.version ? ' under v' + body.grid_version : '';
    $('rfm-updated').textContent = body.version ? 'Boundaries v' + body.version + (at > 0 ? ' · counted ' + ago(at) + under : '') : 'Waiting for the first boundaries…';
    renderRFMGroups();
    renderRFMMoves();
  }

  function renderRFMGroups() {
    var list = $('rfm-groups');
    list.textContent = '';
    state.segments.filter(function (s) { return s.name.indexOf('rfm:') === 0; }).forEach(function (s) {
      var c = state.cards[s.name];
      list.appendChild(el('li', { 'data-group': s.name.slice(4) }, [
        el('button', { type: 'button', text: human(s.name.slice(4)), onclick: function () { selectSegment(s.name); } }),
        el('span', {}, [el('strong', { text: nf.format(Number(s.members) || 0) }), ' ', el('span', { class: 'muted small', text: c ? c.delta.textContent : '' })])
      ]));
    });
  }

  // A group change is an exit and an enter of rfm: segments for the same
  // user at the same time, in either order; entering and leaving one group
  // at one time (an anonymous id's first event and its merge) is none.
  function trackMove(rec) {
    if (String(rec.segment).indexOf('rfm:') !== 0) return;
    var k = rec.id + '|' + rec.at;
    var other = state.rfmExits[k];
    if (!other) { state.rfmExits[k] = rec; return; }
    delete state.rfmExits[k];
    var from = rec.change === 'exit' ? rec : other, to = rec.change === 'enter' ? rec : other;
    if (from.change !== 'exit' || to.change !== 'enter' || from.segment === to.segment) return;
    state.rfmMoves.push([Date.parse(rec.at) || Date.now(), from.segment.slice(4), to.segment.slice(4)]);
    if (state.rfm) renderRFMMoves();
  }

  // The server's last hour of moves (GET /v1/rfm); a scorer without it
  // leaves the page's own, paired from the live feed since it opened.
  function renderRFMMoves() {
    var since = Date.now() - HOUR;
    state.rfmMoves = state.rfmMoves.filter(function (m) { return m[0] >= since; });
    var counts = {};
    if (state.rfm && Array.isArray(state.rfm.moves)) {
      state.rfm.moves.forEach(function (m) { counts[m.from + ' → ' + m.to] = m.count; });
    } else {
      state.rfmMoves.forEach(function (m) { var k = m[1] + ' → ' + m[2]; counts[k] = (counts[k] || 0) + 1; });
    }
    var keys = Object.keys(counts).sort(function (a, b) { return counts[b] - counts[a]; });
    var list = $('rfm-moves');
    list.textContent = '';
    keys.slice(0, 12).forEach(function (k) {
      var parts = k.split(' → ');
      list.appendChild(el('li', { 'data-move': k }, [
        el('span', { text: nf.format(counts[k]) + ' ' + groupLabel(parts[0]) + ' → ' + groupLabel(parts[1]) })
      ]));
    });
    $('rfm-moves-empty').hidden = keys.length > 0;
  }

  // Counts come from the server; a change on the feed asks for them again
  // soon (at most about once a second), the poll catches anything else.
  function refreshSoon() {
    if (state.refreshTimer) return;
    var wait = Math.max(250, 1000 - (Date.now() - state.lastRefresh));
    state.refreshTimer = setTimeout(function () {
      state.refreshTimer = null;
      refreshSegments().catch(onBackgroundError);
    }, wait);
  }

  function onBackgroundError(err) {
    if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
      askKey(politeError(err));
      return;
    }
    notice(politeError(err) + ' Retrying…');
  }

  function renderSegments() {
    var grid = $('segments');
    grid.textContent = '';
    state.cards = {};
    if (!state.segments.length) {
      grid.appendChild(el('div', { class: 'card empty', style: 'grid-column: 1 / -1' }, [
        el('p', {}, [el('strong', { text: 'No segments yet' })]),
        el('p', { class: 'muted small', text: 'Add segments to pulse.yaml (a name and a rule over features) and reload the config.' })
      ]));
      return;
    }
    state.segments.forEach(function (s) {
      var count = el('div', { class: 'count', text: '0' });
      var delta = el('span', { class: 'delta', title: 'Change over the last hour' });
      var spark = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
      spark.setAttribute('class', 'spark');
      spark.setAttribute('viewBox', '0 0 100 40');
      spark.setAttribute('preserveAspectRatio', 'none');
      spark.setAttribute('aria-hidden', 'true');
      var card = el('button', {
        type: 'button', class: 'card segment', 'data-segment': s.name,
        'aria-label': human(s.name) + ': show members',
        onclick: function () { selectSegment(s.name); }
      }, [
        el('div', { class: 'segment-name', text: human(s.name) }),
        el('div', { class: 'segment-desc', text: s.description || '' }),
        el('div', { class: 'segment-row' }, [
          el('div', {}, [count, el('div', { class: 'count-label', text: s.entity === 'user' || !s.entity ? 'customers' : s.entity + 's' })]),
          delta
        ]),
        spark,
        el('div', { class: 'rule mono', title: s.rule || '', text: s.rule || '' })
      ]);
      if (state.selected === s.name) card.classList.add('selected');
      state.cards[s.name] = { card: card, count: count, delta: delta, spark: spark };
      grid.appendChild(card);
      updateCard(s);
    });
  }

  function updateCard(s) {
    var c = state.cards[s.name];
    if (!c) return;
    var n = Number(s.members) || 0;
    var before = c.count.getAttribute('data-value');
    c.count.textContent = nf.format(n);
    c.count.setAttribute('data-value', String(n));
    if (before !== null && Number(before) !== n) {
      c.count.classList.remove('flash-enter', 'flash-exit');
      void c.count.offsetWidth; // restart the animation
      c.count.classList.add(n > Number(before) ? 'flash-enter' : 'flash-exit');
    }
    var h = state.history[s.name] || [];
    var now = Date.now();
    // The count an hour ago is the last sample from before the hour. A
    // page that has watched for less than an hour knows only the change
    // since its first sample, and says so rather than claim an hour.
    var base = null;
    for (var i = h.length - 1; i >= 0; i--) { if (h[i][0] <= now - HOUR) { base = h[i]; break; } }
    var span = ' in 1h';
    if (!base && h.length) {
      base = h[0];
      span = ' since ' + new Date(base[0]).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    }
    var d = base ? n - base[1] : 0;
    c.delta.textContent = (d > 0 ? '+' : d < 0 ? '−' : '±') + nf.format(Math.abs(d)) + span;
    c.delta.className = 'delta' + (d > 0 ? ' up' : d < 0 ? ' down' : '');
    drawSpark(c.spark, h, n, now);
  }

  function drawSpark(svg, h, current, now) {
    var pts = h.filter(function (p) { return p[0] >= now - HOUR; });
    // Carry the last count from before the hour in, so the line starts at
    // the left.
    var before = h.filter(function (p) { return p[0] < now - HOUR; });
    if (before.length) pts.unshift([now - HOUR, before[before.length - 1][1]]);
    pts.push([now, current]);
    var lo = Infinity, hi = -Infinity;
    pts.forEach(function (p) { lo = Math.min(lo, p[1]); hi = Math.max(hi, p[1]); });
    if (hi === lo) { hi += 1; lo = Math.max(0, lo - 1); }
    // Less than an hour known (the page is new): stretch what is known.
    var t0 = Math.max(now - HOUR, Math.min(pts[0][0], now - 2 * 60000));
    var xy = pts.map(function (p) {
      var x = (p[0] - t0) / (now - t0) * 100;
      var y = 38 - (p[1] - lo) / (hi - lo) * 34;
      return x.toFixed(2) + ',' + y.toFixed(2);
    });
    // Step line: a count holds until it changes.
    var step = [];
    for (var i = 0; i < xy.length; i++) {
      if (i > 0) step.push(xy[i].split(',')[0] + ',' + xy[i - 1].split(',')[1]);
      step.push(xy[i]);
    }
    var line = step.join(' ');
    var firstX = xy[0].split(',')[0];
    svg.innerHTML = '<polygon class="area" points="' + firstX + ',40 ' + line + ' 100,40"></polygon>' +
      '<polyline class="line" points="' + line + '"></polyline>';
  }

  // ---- Members ------------------------------------------------------------

  // selectSegment lists a segment's members; with cell (an RFM grid cell,
  // {r, f, count}) only those of the segment's group in that cell.
  function selectSegment(name, cell) {
    state.selected = name;
    state.selectedCell = cell || null;
    Object.keys(state.cards).forEach(function (n) { state.cards[n].card.classList.toggle('selected', n === name); });
    var seg = state.segments.filter(function (s) { return s.name === name; })[0] || {};
    $('members').hidden = false;
    $('members-title').textContent = human(name) + (cell ? ' · R' + cell.r + ' F' + cell.f : '');
    $('members-desc').textContent = cell ? 'Buyers in the R' + cell.r + ' × F' + cell.f + ' cell of the RFM grid' : (seg.description || seg.rule || '');
    $('members-list').textContent = '';
    $('members-empty').hidden = true;
    $('members-more').hidden = true;
    $('members-count').textContent = 'Loading…';
    state.membersCursor = '';
    state.membersShown = 0;
    loadMembers(name);
    $('members').scrollIntoView({ behavior: 'smooth', block: 'nearest' });
  }

  function loadMembers(name) {
    var q = '?limit=48' + (state.membersCursor ? '&cursor=' + encodeURIComponent(state.membersCursor) : '');
    var cell = state.selectedCell;
    var path = cell ? '/v1/rfm/cells/' + cell.r + '/' + cell.f + '/members' : '/v1/segments/' + encodeURIComponent(name) + '/members';
    api(path + q).then(function (body) {
      if (state.selected !== name || state.selectedCell !== cell) return;
      var list = $('members-list');
      (body.members || []).forEach(function (id) {
        list.appendChild(el('li', {}, [el('button', { type: 'button', text: 'User ' + id, onclick: function () { lookup(id); } })]));
      });
      state.membersShown += (body.members || []).length;
      state.membersCursor = body.next_cursor || '';
      $('members-more').hidden = !state.membersCursor;
      $('members-empty').hidden = state.membersShown > 0;
      var seg = state.segments.filter(function (s) { return s.name === name; })[0];
      var total = cell ? Number(cell.count) : seg ? Number(seg.members) : state.membersShown;
      $('members-count').textContent = state.membersShown ? 'Showing ' + nf.format(state.membersShown) + ' of ' + nf.format(Math.max(total, state.membersShown)) : '';
    }).catch(function (err) {
      $('members-count').textContent = '';
      $('members-list').appendChild(el('li', { class: 'error', style: 'grid-column: 1 / -1', text: 'Members could not be loaded: ' + politeError(err) }));
    });
  }

  $('members-more').addEventListener('click', function () { if (state.selected) loadMembers(state.selected); });
  $('members-close').addEventListener('click', function () {
    state.selected = null;
    $('members').hidden = true;
    Object.keys(state.cards).forEach(function (n) { state.cards[n].card.classList.remove('selected'); });
  });

  // ---- Live feed ----------------------------------------------------------

  function setStatus(s, text) {
    var st = $('status');
    st.setAttribute('data-state', s);
    st.querySelector('.status-text').textContent = text;
  }

  function stopLive() {
    if (state.source) { state.source.close(); state.source = null; }
  }

  function startLive() {
    stopLive();
    var url = '/v1/segments/live?api_key=' + encodeURIComponent(state.key);
    // A stream we open ourselves resumes where the last one stopped; the
    // browser's own reconnects send Last-Event-ID by themselves.
    url += state.lastEventId ? '&last_event_id=' + encodeURIComponent(state.lastEventId) : '&history=25';
    var es = new EventSource(url);
    state.source = es;
    setStatus('reconnecting', 'Connecting…');
    es.onopen = function () { setStatus('live', 'Live'); };
    es.onerror = function () {
      if (state.source !== es) return;
      if (es.readyState === EventSource.CLOSED) {
        setStatus('error', 'Live feed unavailable');
        // The browser gave up (an error status): check the key, then try again.
        api('/v1/segments').then(function () {
          setTimeout(function () { if (state.source === es) startLive(); }, 5000);
        }).catch(onBackgroundError);
      } else {
        setStatus('reconnecting', 'Reconnecting…');
      }
    };
    es.addEventListener('enter', onChange);
    es.addEventListener('exit', onChange);
  }

  function onChange(ev) {
    if (ev.lastEventId) state.lastEventId = ev.lastEventId;
    var rec;
    try { rec = JSON.parse(ev.data); } catch (e) { return; }
    if (addFeedItem(rec)) trackMove(rec);
    refreshSoon();
  }

  function addFeedItem(rec) {
    var id = rec.change_id || (rec.segment + rec.id + rec.change + rec.at);
    if (state.feedIds[id]) return false;
    state.feedIds[id] = true;
    var t = Date.parse(rec.at) || Date.now();
    var enter = rec.change === 'enter';
    var deleted = !enter && rec.reason === 'deleted'; // the person was deleted on request
    var who = el('button', { type: 'button', class: 'linklike', text: (rec.entity && rec.entity !== 'user' ? human(rec.entity) : 'User') + ' ' + rec.id,
      onclick: function () { lookup(rec.id); } });
    var item = el('li', { class: 'feed-item ' + (enter ? 'enter' : 'exit'), 'data-segment': rec.segment, 'data-change': rec.change, 'data-reason': rec.reason || '' }, [
      el('span', { class: 'mark', 'aria-hidden': 'true' }),
      el('span', { class: 'what' }, [who, ' ', el('span', { class: 'verb', text: enter ? 'entered' : deleted ? 'was deleted from' : 'left' }), ' ', el('strong', { text: human(rec.segment) })]),
      el('time', { class: 'when', 'data-t': String(t), datetime: new Date(t).toISOString(), title: new Date(t).toLocaleString(), text: ago(t) })
    ]);
    var feed = $('feed');
    feed.insertBefore(item, feed.firstChild);
    while (feed.children.length > FEED_MAX) {
      var last = feed.lastChild;
      feed.removeChild(last);
    }
    $('feed-empty').hidden = true;
    return true;
  }

  setInterval(function () {
    var times = document.querySelectorAll('#feed time[data-t]');
    for (var i = 0; i < times.length; i++) times[i].textContent = ago(Number(times[i].getAttribute('data-t')));
    Object.keys(state.cards).forEach(function (n) {
      var s = state.segments.filter(function (x) { return x.name === n; })[0];
      if (s) updateCard(s);
    });
  }, 5000);

  // ---- Lookup -------------------------------------------------------------

  function formatValue(name, v) {
    if (v === null || v === undefined) return '—';
    if (Array.isArray(v)) return v.length ? v.map(function (x) { return formatValue('', x); }).join(', ') : '—';
    if (typeof v === 'number') {
      if (/_at$|^first_seen$/.test(name) && v > 1e11) return v ? new Date(v).toLocaleString() : 'never';
      if (/revenue|order_value|spend|max_order|amount|price/.test(name)) return '$' + money.format(v);
      return nf2.format(v);
    }
    if (typeof v === 'boolean') return v ? 'yes' : 'no';
    if (typeof v === 'object') return JSON.stringify(v);
    if (/^rfm_(previous_)?group$/.test(name)) return human(v);
    return String(v);
  }

  function lookup(id) {
    $('lookup-id').value = id;
    $('lookup').scrollIntoView({ behavior: 'smooth', block: 'start' });
    var out = $('lookup-result');
    out.textContent = '';
    out.appendChild(el('p', { class: 'muted', text: 'Looking up user ' + id + '…' }));
    var entity = api('/v1/profiles/user/' + encodeURIComponent(id) + '?events=10');
    var prediction = state.models.length ? predict(id, state.models[0]) : Promise.resolve(null);
    entity.then(function (e) {
      return prediction.then(function (p) { renderProfile(id, e, p); });
    }).catch(function (err) {
      out.textContent = '';
      if (err instanceof ApiError && err.status === 404) {
        out.appendChild(el('div', { class: 'empty' }, [
          el('p', {}, [el('strong', { text: 'No customer with id “' + id + '” yet' })]),
          el('p', { class: 'muted small', text: 'Pulse knows a customer once one of their events has been processed.' })
        ]));
        return;
      }
      out.appendChild(el('p', { class: 'error', text: 'This customer could not be loaded: ' + politeError(err) }));
    });
  }

  function predict(id, model) {
    var row = { user: { id: /^\d+$/.test(id) ? Number(id) : id } };
    return api('/v1/predict', { method: 'POST', body: JSON.stringify({ api_key: state.key, model: model, features: [row] }) })
      .then(function (res) {
        var r = Array.isArray(res) ? res[0] : (res && res.predictions ? res.predictions[0] : res);
        return r ? { model: model, result: r } : null;
      })
      .catch(function (err) { return { model: model, error: politeError(err) }; });
  }

  function renderProfile(id, e, p) {
    var out = $('lookup-result');
    out.textContent = '';
    var person = e.canonical_id || id;
    var feats = e.features || {};
    // The feature the traits come from shows as the Traits table, not as
    // one line of JSON among the features.
    var traitsFeature = /^feature:/.test(e.traits_from || '') ? e.traits_from.slice(8) : '';
    var rows = Object.keys(feats).filter(function (k) { return k !== traitsFeature; }).sort().map(function (k) {
      return el('tr', {}, [el('td', { text: human(k) }), el('td', { text: formatValue(k, feats[k]) })]);
    });
    var segs = (e.segments || []).map(function (s) {
      return el('button', { type: 'button', class: 'pill pill-seg linklike', text: human(s), onclick: function () { selectSegment(s); } });
    });
    var side = [];
    if (p && p.result) {
      var r = p.result;
      var score = typeof r.score === 'number' ? r.score : null;
      side.push(el('div', { class: 'prediction', 'data-model': p.model }, [
        el('div', { class: 'muted small', text: human(p.model) }),
        el('div', { class: 'label', text: r.prediction === undefined || r.prediction === null ? '—' : String(r.prediction) }),
        score === null ? null : el('div', { class: 'meter', title: 'Score ' + nf2.format(score) }, [el('span', { style: 'width:' + Math.round(Math.max(0, Math.min(1, score)) * 100) + '%' })]),
        el('div', { class: 'muted small', text: score === null ? '' : 'Score ' + nf2.format(score) + (r.model_used === false ? ' · default answer (model not used)' : '') })
      ]));
    } else if (p && p.error) {
      side.push(el('p', { class: 'muted small', text: 'No prediction: ' + p.error }));
    }
    side.push(el('h3', { text: 'Segments' }));
    side.push(segs.length ? el('div', {}, segs) : el('p', { class: 'muted', text: 'In no segment right now.' }));
    side.push(el('h3', { text: 'Identities' }));
    var ids = (e.identities || []).map(function (l) {
      return el('li', { 'data-identifier': l.identifier }, [
        el('span', { class: 'pill', text: human(l.kind) }), ' ', el('strong', { text: l.value }),
        el('span', { class: 'muted small', text: ' · linked ' + ago(Date.parse(l.linked_at)) + ' by ' + (l.cause || 'identify') })
      ]);
    });
    side.push(ids.length ? el('ul', { class: 'identities' }, ids) : el('p', { class: 'muted', text: 'Only this id: never linked to another.' }));
    var traits = e.traits || {};
    var traitRows = Object.keys(traits).sort().map(function (k) {
      return el('tr', {}, [el('td', { text: k }), el('td', { text: formatValue(k, traits[k]) })]);
    });
    if (traitRows.length) {
      side.push(el('h3', { text: 'Traits' }));
      side.push(el('table', { class: 'features traits' }, [el('tbody', {}, traitRows)]));
    }
    if (e.updated_at) side.push(el('p', { class: 'muted small', style: 'margin-top:14px', text: 'Features updated ' + ago(Date.parse(e.updated_at)) }));
    var events = (e.events || []).map(function (ev) {
      var what = ev.type === 'track' ? ev.event : ev.type + (ev.name ? ' ' + ev.name : '');
      return el('li', { 'data-message': ev.messageId }, [
        el('strong', { text: what }),
        el('span', { class: 'muted small', text: ' · ' + ago(Date.parse(ev.timestamp)) + ' as ' + (ev.userId || ev.anonymousId || '') })
      ]);
    });
    var recent = [el('h3', { text: 'Recent events' })];
    if (events.length) recent.push(el('ol', { class: 'recent-events' }, events));
    else recent.push(el('p', { class: 'muted small', text: e.history_error ? 'No event history: ' + e.history_error : 'No events in the history yet.' }));
    var title = 'User ' + person + ' · features';
    out.appendChild(el('div', { class: 'profile', 'data-user': String(id), 'data-person': String(person) }, [
      el('div', {}, [
        el('h3', { text: title }),
        person !== id ? el('p', { class: 'muted small merged-note', text: id + ' is one of this customer’s ids: their activity counts here.' }) : null,
        rows.length ? el('table', { class: 'features' }, [el('tbody', {}, rows)]) : el('p', { class: 'muted', text: 'No features yet.' })
      ].concat(recent)),
      el('div', {}, side)
    ]));
  }

  $('lookup-form').addEventListener('submit', function (e) {
    e.preventDefault();
    var id = $('lookup-id').value.trim();
    if (id) lookup(id);
  });

  // ---- Start --------------------------------------------------------------

  function connect() {
    setStatus('reconnecting', 'Connecting…');
    state.historyAt = 0; // a page that was away asks for what it missed
    refreshSegments().then(function () {
      $('app').hidden = false;
      $('change-key').hidden = false;
      $('lookup-predict-hint').hidden = !state.models.length;
      startLive();
      clearInterval(state.pollTimer);
      state.pollTimer = setInterval(function () { refreshSegments().catch(onBackgroundError); }, POLL_MS);
    }).catch(function (err) {
      if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
        localStorage.removeItem(KEY_STORE);
        askKey(politeError(err));
        return;
      }
      $('app').hidden = false;
      state.rendered = false;
      notice(politeError(err) + ' Retrying…');
      setStatus('error', 'Offline');
      setTimeout(connect, 5000);
    });
  }

  // The dev key, when `pulse dev` hands one out: only in answer to this
  // page's own same-origin fetch, never in a script another site could
  // include (docs/api.md, "The dashboard").
  function devKey() {
    return fetch('/v1/dashboard/config', { headers: { 'Accept': 'application/json' }, cache: 'no-store', credentials: 'same-origin' })
      .then(function (resp) { return resp.ok ? resp.json() : {}; })
      .then(function (c) { return (c && c.readKey) || ''; })
      .catch(function () { return ''; });
  }

  state.key = localStorage.getItem(KEY_STORE) || '';
  if (state.key) connect();
  else devKey().then(function (key) {
    state.key = key;
    if (key) connect();
    else askKey('');
  });
})();
