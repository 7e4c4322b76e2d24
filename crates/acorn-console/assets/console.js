// acorn console: live updates over Server-Sent Events, pausing, copying. Plain script, no
// build step; it writes text only (textContent, never HTML), so device data cannot inject
// markup. Served from /assets: the CSP forbids inline script.
'use strict';

(function () {
  // Copy buttons: data-copy names the element whose text is copied.
  for (const button of document.querySelectorAll('button[data-copy]')) {
    button.addEventListener('click', function () {
      const source = document.getElementById(button.dataset.copy);
      if (!source || !navigator.clipboard) return;
      navigator.clipboard.writeText(source.textContent).then(function () {
        button.textContent = 'Copied';
      });
    });
  }

  const live = document.body.dataset.live;
  if (!live) return;

  function cell(text, className) {
    const td = document.createElement('td');
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  function deviceLink(id) {
    const td = document.createElement('td');
    const a = document.createElement('a');
    a.href = '/devices/' + encodeURIComponent(id);
    a.textContent = id;
    td.appendChild(a);
    return td;
  }

  function prepend(tableId, cells, keep) {
    const body = document.querySelector('#' + tableId + ' tbody');
    if (!body) return;
    const tr = document.createElement('tr');
    tr.className = 'fresh';
    for (const c of cells) tr.appendChild(c);
    body.insertBefore(tr, body.firstChild);
    while (body.rows.length > keep) body.deleteRow(body.rows.length - 1);
  }

  function setState(element, state) {
    if (!element) return;
    element.textContent = state;
    element.dataset.state = state;
  }

  // The chart's current minute grows with each press (bars scaled to the peak again).
  function chartPress() {
    const svg = document.getElementById('chart');
    if (!svg) return;
    const bars = Array.from(svg.querySelectorAll('rect.bar'));
    if (!bars.length) return;
    const last = bars[bars.length - 1];
    last.dataset.count = String(Number(last.dataset.count) + 1);
    const height = Number(svg.getAttribute('height')) - 2;
    const peak = Math.max(1, ...bars.map(function (b) { return Number(b.dataset.count); }));
    const peakText = document.getElementById('chart-peak');
    if (peakText) peakText.textContent = String(peak);
    for (const b of bars) {
      const h = Math.ceil(Number(b.dataset.count) * height / peak);
      b.setAttribute('height', String(h));
      b.setAttribute('y', String(height + 2 - h));
    }
  }

  // Fleet: the device's row follows its state, last seen, last press and firmware.
  function onFleet(kind, e) {
    if (kind === 'press') chartPress();
    const row = document.querySelector('tr[data-device="' + CSS.escape(e.deviceId) + '"]');
    if (!row) return;
    const field = function (name) { return row.querySelector('[data-field="' + name + '"]'); };
    field('lastSeen').textContent = e.received;
    if (kind === 'press') {
      const m = e.event.message;
      field('lastPress').textContent = m.timestamp + ' · ' + m.buttonRfId;
    } else {
      const m = e.event.message;
      const state = field('state').querySelector('.state');
      if (state.dataset.state !== 'revoked') setState(state, e.state);
      field('firmware').textContent = m.firmwareVersion;
      if (m.rotation) field('rotation').textContent = m.rotation;
      const online = document.querySelectorAll('#fleet .state[data-state=online], #fleet .state[data-state=error]').length;
      const counter = document.getElementById('count-online');
      if (counter) counter.textContent = String(online);
    }
    row.classList.remove('fresh');
    void row.offsetWidth;
    row.classList.add('fresh');
  }

  // Device: its own events go into its tables.
  function onDevice(kind, e) {
    const page = document.getElementById('device');
    if (!page || page.dataset.device !== e.deviceId) return;
    if (kind === 'press') {
      prepend('presses', [cell(e.event.message.timestamp), cell(e.summary, 'summary')], 50);
      return;
    }
    prepend('statuses', [cell(e.received), cell(e.summary, 'summary')], 50);
    if (e.event.message.requestId) {
      prepend('answers', [cell(e.received), cell(e.summary, 'summary')], 50);
    }
    const state = document.getElementById('device-state');
    if (state && state.dataset.state !== 'revoked') setState(state, e.state);
    const firmware = document.getElementById('firmware');
    if (firmware) firmware.textContent = e.event.message.firmwareVersion;
  }

  // Live: every event, unless paused (then counted and shown on resume).
  let paused = false;
  let held = [];
  function showLive(kind, e) {
    prepend('events', [cell(e.received), deviceLink(e.deviceId), cell(kind), cell(e.summary, 'summary')], 200);
  }
  function onLive(kind, e) {
    if (paused) {
      held.push([kind, e]);
      document.getElementById('paused-count').textContent = held.length + ' waiting';
      return;
    }
    showLive(kind, e);
  }
  const pause = document.getElementById('pause');
  if (pause) {
    pause.addEventListener('click', function () {
      paused = !paused;
      pause.textContent = paused ? 'Resume' : 'Pause';
      pause.setAttribute('aria-pressed', String(paused));
      if (!paused) {
        for (const [kind, e] of held) showLive(kind, e);
        held = [];
        document.getElementById('paused-count').textContent = '';
      }
    });
  }

  const handlers = { fleet: onFleet, device: onDevice, live: onLive };
  const handle = handlers[live];
  if (!handle) return;
  const source = new EventSource('/events');
  // Marks the page once the stream is open (a test or a person can tell live from stale).
  source.addEventListener('open', function () { document.body.dataset.stream = 'open'; });
  source.addEventListener('error', function () { document.body.dataset.stream = 'closed'; });
  for (const kind of ['press', 'status']) {
    source.addEventListener(kind, function (message) {
      let e;
      try { e = JSON.parse(message.data); } catch (_) { return; }
      handle(kind, e);
    });
  }
  window.addEventListener('pagehide', function () { source.close(); });
})();
