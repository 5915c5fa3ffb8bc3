// @ts-check
// Files: upload (file picker or drag and drop, with progress), the list, and one file's
// validation report and trained-token preview (GET /v1/files/{id}/preview).

import {api, upload, download, listAll} from '../api.js';
import {h, add, clear, changed, notice, announce, fmtBytes, fmtTime, fmtNum, facts, table, poll, field, select, pageTitle, statusBadge} from '../dom.js';

const PURPOSES = ['fine-tune', 'evals', 'user_data', 'batch', 'assistants'];

/** @param {HTMLElement} root @param {import('../app.js').Route} route */
export async function render(root, route) {
  const selected = route.parts[0] || null;
  const listBox = h('div', {class: 'file-list', 'aria-busy': 'true'}, h('p', {class: 'muted'}, 'Loading files…'));
  const detail = h('section', {class: 'card file-detail', 'aria-labelledby': 'file-detail-h'});
  add(root, 
    pageTitle('Files', h('p', {class: 'lede'}, 'Training data in, with a validation report for every upload and a preview of the tokens a job will train on.')),
    h('div', {class: 'split'},
      h('div', {class: 'stack'}, uploadCard(), h('section', {class: 'card', 'aria-labelledby': 'files-list-h'},
        h('h2', {id: 'files-list-h'}, 'Uploaded files'), listBox)),
      detail));

  if (selected) showFile(detail, selected);
  else clear(detail, h('h2', {id: 'file-detail-h'}, 'File details'), h('p', {class: 'muted'}, 'Choose a file to see its validation report and token preview.'));

  return poll(async () => {
    try {
      const files = await listAll('/v1/files', {limit: 1000});
      if (changed(listBox, files)) renderList(listBox, files, selected);
    } catch (err) {
      clear(listBox, notice('error', `The files cannot be listed: ${err.message}`));
    }
    listBox.setAttribute('aria-busy', 'false');
  }, 5000);
}

/** @param {HTMLElement} box @param {any[]} files @param {string | null} selected */
function renderList(box, files, selected) {
  if (!files.length) { clear(box, h('p', {class: 'muted'}, 'No files yet: upload one above.')); return; }
  clear(box, table(['File', 'Purpose', 'Size', 'Status'], files.map((f) => h('tr', {class: f.id === selected ? 'selected' : '', 'data-file': f.id},
    h('td', {}, h('a', {href: `#/files/${f.id}`, 'aria-current': f.id === selected ? 'true' : null}, f.filename),
      h('div', {class: 'small muted'}, h('code', {}, f.id), ' · ',
        h('time', {datetime: new Date(f.created_at * 1000).toISOString(), title: fmtTime(f.created_at)}, fmtTime(f.created_at)))),
    h('td', {}, f.purpose),
    h('td', {class: 'num nowrap'}, fmtBytes(f.bytes)),
    h('td', {}, statusBadge(f.status)))),
  {caption: `${files.length} file${files.length === 1 ? '' : 's'}, newest first`}));
}

function uploadCard() {
  const input = h('input', {type: 'file', id: 'upload-input', name: 'file', accept: '.jsonl,.json,.parquet,.txt,.csv'});
  const purpose = select(PURPOSES, {id: 'upload-purpose', name: 'purpose', value: 'fine-tune'});
  const progress = h('progress', {max: 1, value: 0, hidden: true, 'aria-label': 'Upload progress'});
  const status = h('div', {class: 'upload-status', 'aria-live': 'polite'});
  const zone = h('div', {class: 'dropzone', id: 'dropzone'},
    h('p', {class: 'dropzone-text'}, h('strong', {}, 'Drop a file here'), ' or choose one:'),
    field('File to upload (JSONL, JSON, Parquet)', input));

  /** @param {File | undefined} file */
  async function send(file) {
    if (!file) return;
    const form = new FormData();
    form.append('purpose', purpose.value);
    form.append('file', file, file.name);
    progress.hidden = false;
    progress.value = 0;
    clear(status, notice('info', `Uploading ${file.name} (${fmtBytes(file.size)})…`));
    try {
      const created = await upload('/v1/files', form, (share) => { progress.value = share; });
      progress.value = 1;
      clear(status, notice('ok', `Uploaded ${created.filename} as `, h('code', {}, created.id), `: ${created.status_details || created.status}`));
      announce(`Uploaded ${created.filename}`);
      location.hash = `#/files/${created.id}`;
    } catch (err) {
      clear(status, notice('error', h('strong', {}, `${file.name} was not accepted. `), err.message));
    } finally {
      progress.hidden = true;
      input.value = '';  // so picking the same file again uploads it again
    }
  }

  input.addEventListener('change', () => send(input.files?.[0]));
  zone.addEventListener('dragover', (e) => { e.preventDefault(); zone.classList.add('dragging'); });
  zone.addEventListener('dragleave', () => zone.classList.remove('dragging'));
  zone.addEventListener('drop', (e) => {
    e.preventDefault();
    zone.classList.remove('dragging');
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (file) send(file);
  });
  return h('section', {class: 'card', 'aria-labelledby': 'upload-h'},
    h('h2', {id: 'upload-h'}, 'Upload'),
    field('Purpose', purpose, 'fine-tune files are checked line by line on upload.'),
    zone, progress, status);
}

/** @param {HTMLElement} box @param {string} id */
async function showFile(box, id) {
  clear(box, h('h2', {id: 'file-detail-h'}, 'File details'), h('p', {class: 'muted'}, 'Loading…'));
  let file;
  try {
    file = await api(`/v1/files/${encodeURIComponent(id)}`);
  } catch (err) {
    clear(box, h('h2', {id: 'file-detail-h'}, 'File details'), notice('error', err.message));
    return;
  }
  const actionStatus = h('div', {'aria-live': 'polite'});
  clear(box,
    h('h2', {id: 'file-detail-h'}, file.filename),
    facts([['Id', h('code', {}, file.id)], ['Purpose', file.purpose], ['Size', fmtBytes(file.bytes)],
      ['Status', [statusBadge(file.status), ' ', file.status_details || '']], ['Uploaded', fmtTime(file.created_at)]]),
    h('div', {class: 'actions'},
      h('button', {type: 'button', onclick: async () => {
        try { await download(`/v1/files/${file.id}/content`, file.filename); } catch (err) { clear(actionStatus, notice('error', err.message)); }
      }}, 'Download'),
      h('button', {type: 'button', class: 'danger', onclick: async () => {
        if (!confirm(`Delete ${file.filename} (${file.id})?`)) return;
        try { await api(`/v1/files/${file.id}`, {method: 'DELETE'}); announce('File deleted'); location.hash = '#/files'; } catch (err) { clear(actionStatus, notice('error', err.message)); }
      }}, 'Delete')),
    actionStatus,
    file.validation ? reportView(file.validation) : h('p', {class: 'muted'}, 'No validation report: only fine-tune files are checked.'),
    file.purpose === 'fine-tune' && file.validation && file.validation.ok ? previewView(file) : null);
}

function reportView(v) {
  const issues = (title, items, counts, kind) => {
    if (!items || !items.length) return null;
    const total = Object.values(counts || {}).reduce((a, b) => a + b, 0) || items.length;
    return h('div', {class: `issues issues-${kind}`},
      h('h4', {}, `${total} ${title}`, counts && Object.keys(counts).length ? ` (${Object.entries(counts).map(([c, n]) => `${c} ×${n}`).join(', ')})` : ''),
      table(['Line', 'Code', 'Message'], items.map((it) => h('tr', {},
        h('td', {class: 'num'}, it.line ?? '—'), h('td', {}, h('code', {}, it.code || '')), h('td', {}, it.message || String(it))))));
  };
  const t = v.tokens;
  return h('section', {class: 'report', 'aria-labelledby': 'report-h'},
    h('h3', {id: 'report-h'}, 'Validation report ', h('span', {class: `badge ${v.ok ? 'status-succeeded' : 'status-failed'}`}, v.ok ? 'OK' : 'cannot be trained on')),
    facts([['Format', `${v.format || '?'} (${v.kind || '?'}, ${v.container || '?'})`], ['Examples', fmtNum(v.n_examples)],
      ['Duplicates', fmtNum(v.duplicates)], ['Empty assistant turns', fmtNum(v.empty_assistant_turns)]]),
    issues('errors', v.errors, v.error_counts, 'error'),
    issues('warnings', v.warnings, v.warning_counts, 'warn'),
    !v.errors?.length && !v.warnings?.length ? h('p', {class: 'muted'}, 'No errors, no warnings.') : null,
    t ? h('div', {}, h('h4', {}, `Tokens with ${t.model} (max_seq_length ${t.max_seq_length})`),
      facts([['Per example (min / mean / p50 / p95 / max)', ['min', 'mean', 'p50', 'p95', 'max'].map((k) => fmtNum(t[k], 3)).join(' / ')],
        ['Total tokens', fmtNum(t.total_tokens)], ['Trained tokens', `${fmtNum(t.trained_tokens)} (${fmtNum(100 * (t.trained_share || 0), 3)}%)`],
        ['Over max_seq_length', fmtNum(t.over_max_length)],
        [`Training tokens over ${t.n_epochs} epochs`, fmtNum(t.estimated_training_tokens)]])) : null);
}

function previewView(file) {
  const model = h('select', {id: 'preview-model', name: 'model'}, h('option', {value: ''}, 'Loading models…'));
  const n = h('input', {id: 'preview-n', type: 'number', min: 1, max: 20, value: 3});
  const maxLen = h('input', {id: 'preview-max', type: 'number', min: 1, max: 131072, value: 1024});
  const out = h('div', {class: 'preview-out', 'aria-live': 'polite'});
  const button = h('button', {type: 'submit', class: 'primary'}, 'Show trained tokens');
  api('/v1/models').then((list) => {
    const bases = list.data.filter((m) => !m.parent).map((m) => m.id);
    clear(model, bases.map((id) => h('option', {value: id}, id)));
    const tiny = bases.find((b) => b.includes('tiny'));  // the fastest tokenizer to load, when present
    if (tiny) model.value = tiny;
  }).catch((err) => clear(out, notice('error', `Models cannot be listed: ${err.message}`)));

  const form = h('form', {class: 'inline-form', onsubmit: async (e) => {
    e.preventDefault();
    button.disabled = true;
    clear(out, notice('info', h('span', {class: 'spinner', 'aria-hidden': 'true'}), ' Rendering with the model’s tokenizer and chat template…'));
    try {
      const q = new URLSearchParams({model: model.value, n: n.value, max_seq_length: maxLen.value});
      const res = await api(`/v1/files/${file.id}/preview?${q}`);
      clear(out, h('p', {class: 'legend-line'}, h('mark', {class: 'trained'}, 'highlighted'), ' tokens are trained on; the rest is context.'),
        res.data.map((ex) => h('article', {class: 'example', 'data-line': ex.line},
          h('h4', {}, `Line ${ex.line}: ${ex.n_tokens} tokens, ${ex.n_trained} trained (${fmtNum(100 * ex.n_trained / Math.max(1, ex.n_tokens), 3)}%)`,
            ex.truncated ? ` — truncated from ${ex.n_tokens_full}` : ''),
          h('pre', {class: 'tokens'}, ex.segments.map((s) => (s.trained ? h('mark', {class: 'trained'}, s.text) : h('span', {}, s.text)))))));
      announce('Preview ready');
    } catch (err) {
      clear(out, notice('error', err.message));
    } finally {
      button.disabled = false;
    }
  }},
  field('Tokenizer of', model), field('Examples', n), field('max_seq_length', maxLen), button);
  return h('section', {class: 'preview', 'aria-labelledby': 'preview-h'},
    h('h3', {id: 'preview-h'}, 'Trained-token preview'),
    h('p', {class: 'muted'}, 'The first examples as the model sees them, with the tokens a job trains on marked.'),
    form, out);
}
