// The dataset page's upload form: sends the chosen file as the request body
// (so the server streams it to storage), shows progress, then either opens
// the new version or lists what was wrong with the file, row by row.
(function () {
  'use strict';
  var form = document.getElementById('upload-form');
  if (!form) return;
  var fallback = document.getElementById('upload-noscript');
  if (fallback) fallback.hidden = true;
  form.hidden = false;

  var input = document.getElementById('upload-file');
  var types = document.getElementById('upload-types');
  var progress = document.getElementById('upload-progress');
  var status = document.getElementById('upload-status');
  var errors = document.getElementById('upload-errors');
  var button = form.querySelector('button[type=submit]');

  var MEDIA = {
    csv: 'text/csv', txt: 'text/csv', tsv: 'text/tab-separated-values', tab: 'text/tab-separated-values',
    json: 'application/json', ndjson: 'application/x-ndjson', jsonl: 'application/x-ndjson',
    geojson: 'application/geo+json', parquet: 'application/vnd.apache.parquet'
  };

  function kindOf(name) {
    var parts = name.toLowerCase().split('.');
    var gzip = false;
    if (parts.length > 2 && parts[parts.length - 1] === 'gz') { gzip = true; parts.pop(); }
    return { type: MEDIA[parts[parts.length - 1]], gzip: gzip };
  }

  function megabytes(n) { return (n / 1048576).toFixed(1) + ' MB'; }

  function showProblem(problem) {
    errors.textContent = '';
    var box = document.createElement('div');
    box.className = 'error-box';
    var heading = document.createElement('h4');
    heading.textContent = 'Nothing was published';
    box.appendChild(heading);
    var detail = document.createElement('p');
    detail.textContent = problem.detail || problem.title || 'The upload was refused.';
    box.appendChild(detail);
    var items = problem.errors || [];
    if (items.length) {
      var list = document.createElement('ul');
      list.className = 'upload-errors-list';
      items.slice(0, 50).forEach(function (e) {
        var li = document.createElement('li');
        var where = [];
        if (e.line) where.push('line ' + e.line);
        if (e.column) where.push('column ' + e.column);
        if (e.field) where.push('"' + e.field + '"');
        li.textContent = (where.length ? where.join(', ') + ': ' : '') + e.message;
        list.appendChild(li);
      });
      box.appendChild(list);
      if (problem.total_errors && problem.total_errors > items.length) {
        var more = document.createElement('p');
        more.textContent = 'and ' + (problem.total_errors - items.length) + ' more.';
        box.appendChild(more);
      }
    }
    errors.appendChild(box);
  }

  form.addEventListener('submit', function (event) {
    event.preventDefault();
    errors.textContent = '';
    var file = input.files && input.files[0];
    if (!file) { status.textContent = 'Choose a file first.'; input.focus(); return; }
    var kind = kindOf(file.name);
    if (!kind.type) {
      showProblem({ detail: 'CityTrust cannot tell the format of "' + file.name +
        '": name it .csv, .tsv, .json, .ndjson, .geojson or .parquet (optionally followed by .gz).' });
      return;
    }
    var params = new URLSearchParams();
    var onError = form.querySelector('input[name=on_error]:checked');
    params.set('on_error', onError ? onError.value : 'reject');
    if (types.value.trim()) params.set('types', types.value.trim());

    var xhr = new XMLHttpRequest();
    xhr.open('POST', form.getAttribute('action') + '?' + params.toString());
    xhr.setRequestHeader('Content-Type', kind.type);
    if (kind.gzip) xhr.setRequestHeader('Content-Encoding', 'gzip');
    xhr.setRequestHeader('X-CSRF-Token', form.getAttribute('data-csrf'));
    xhr.setRequestHeader('Accept', 'application/json');
    progress.hidden = false;
    progress.value = 0;
    button.disabled = true;
    status.textContent = 'Uploading ' + file.name + ' (' + megabytes(file.size) + ')…';
    xhr.upload.onprogress = function (e) {
      if (!e.lengthComputable) return;
      var pct = Math.floor(e.loaded / e.total * 100);
      progress.value = pct;
      status.textContent = 'Uploading: ' + pct + '% (' + megabytes(e.loaded) + ' of ' + megabytes(e.total) + ')';
    };
    xhr.upload.onload = function () {
      progress.removeAttribute('value');
      status.textContent = 'Uploaded. Checking every row and measuring quality…';
    };
    xhr.onload = function () {
      button.disabled = false;
      progress.hidden = true;
      var body = null;
      try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
      if (xhr.status === 201 && body) {
        status.textContent = 'Version ' + body.version + ' published with ' + body.rows + ' rows. Opening it…';
        window.location.assign('/datasets/' + encodeURIComponent(form.getAttribute('data-dataset')) +
          '?published=' + body.version + '#content');
        return;
      }
      status.textContent = 'The upload was refused.';
      showProblem(body || { detail: 'The server answered ' + xhr.status + '.' });
    };
    xhr.onerror = function () {
      button.disabled = false;
      progress.hidden = true;
      status.textContent = 'The upload failed.';
      showProblem({ detail: 'The connection failed before the upload finished; nothing was stored.' });
    };
    xhr.send(file);
  });
})();
