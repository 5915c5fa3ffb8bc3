// @ts-check
// Evals: evaluation reports (tuneserve's /v1/evaluations), listed and shown in detail: the summary
// per model and metric with confidence intervals, the answers item by item, and the HTML report.

import {api, listAll} from '../api.js';
import {h, add, clear, changed, notice, announce, fmtTime, fmtNum, facts, table, poll, field, pageTitle, statusBadge, uid} from '../dom.js';

const ACTIVE = new Set(['queued', 'running']);
const METRICS = [['rouge1', 'ROUGE-1'], ['rouge2', 'ROUGE-2'], ['rougeL', 'ROUGE-L'], ['exact_match', 'Exact match'], ['judge_yes', 'Judge: yes']];

/** @param {HTMLElement} root @param {import('../app.js').Route} route */
export async function render(root, route) {
  return route.parts[0] ? renderDetail(root, route.parts[0]) : renderList(root, route);
}

/** @param {HTMLElement} root @param {import('../app.js').Route} route */
function renderList(root, route) {
  const box = h('div', {'aria-busy': 'true'}, h('p', {class: 'muted'}, 'Loading evaluations…'));
  const formBox = h('details', {class: 'card new-eval', open: route.query.has('model')}, h('summary', {}, 'New evaluation'));
  add(root, pageTitle('Evaluations', h('p', {class: 'lede'}, 'Fine-tuned models against their base on held-out questions: ROUGE, exact match and an optional LLM judge.')),
    formBox, h('section', {class: 'card', 'aria-labelledby': 'evals-h'}, h('h2', {id: 'evals-h'}, 'Reports'), box));
  createForm(formBox, route.query.get('model'));
  return poll(async () => {
    try {
      const page = await api('/v1/evaluations?limit=100');
      if (!changed(box, page)) return;
      clear(box, page.data.length ? table(['Evaluation', 'Status', 'Models', 'Progress', 'Created'], page.data.map((e) => h('tr', {'data-eval': e.id},
        h('td', {}, h('a', {href: `#/evals/${e.id}`}, h('code', {}, e.id)), e.fine_tuning_job_id ? h('div', {class: 'small'}, 'from ', h('a', {href: `#/jobs/${e.fine_tuning_job_id}`}, e.fine_tuning_job_id)) : null),
        h('td', {}, statusBadge(e.status)),
        h('td', {}, (e.models || []).map((m) => h('code', {class: 'small wrap block'}, m))),
        h('td', {}, progressOf(e)),
        h('td', {}, h('span', {title: fmtTime(e.created_at)}, fmtTime(e.created_at))))), {caption: `${page.data.length} evaluation(s), newest first`})
        : h('p', {class: 'muted'}, 'No evaluations yet.'));
    } catch (err) {
      changed(box, null);
      clear(box, notice('error', err.message));
    }
    box.setAttribute('aria-busy', 'false');
  }, 3000);
}

function progressOf(e) {
  const p = e.progress || {};
  if (!p.total) return '—';
  return h('span', {}, h('progress', {max: p.total, value: p.done || 0, 'aria-label': `${p.done || 0} of ${p.total} items`}), ` ${p.done || 0}/${p.total}`);
}

/** @param {HTMLElement} box @param {string | null} wantedModel ticked, with its base */
async function createForm(box, wantedModel) {
  const status = h('div', {'aria-live': 'assertive'});
  const modelsBox = h('fieldset', {class: 'checks'}, h('legend', {}, 'Models (1 to 8)'));
  const dataset = h('select', {id: 'eval-dataset', required: true});
  const judge = h('select', {id: 'eval-judge'}, h('option', {value: ''}, 'No judge'));
  const maxTokens = h('input', {id: 'eval-max-tokens', type: 'number', min: 1, value: 256});
  const temperature = h('input', {id: 'eval-temperature', type: 'number', min: 0, max: 2, step: 'any', value: 0});
  const maxItems = h('input', {id: 'eval-max-items', type: 'number', min: 1, step: 1, placeholder: 'all'});
  const submit = h('button', {type: 'submit', class: 'primary'}, 'Start evaluation');
  const form = h('form', {class: 'eval-form'}, modelsBox,
    h('div', {class: 'grid-fields'}, field('Dataset file ({question, answer} or chat)', dataset), field('Judge model', judge),
      field('Max tokens per answer', maxTokens), field('Temperature', temperature), field('Items (the first N)', maxItems)),
    h('div', {class: 'actions'}, submit), status);
  box.append(form);
  try {
    const [models, files] = await Promise.all([api('/v1/models'), listAll('/v1/files', {limit: 1000})]);
    const wanted = new Set([wantedModel].filter(Boolean));
    const ft = models.data.find((m) => m.id === wantedModel);
    if (ft && ft.parent) wanted.add(ft.parent);
    for (const m of models.data) {
      const id = uid('eval-model');
      modelsBox.append(h('span', {class: 'check'}, h('input', {type: 'checkbox', id, value: m.id, checked: wanted.has(m.id)}), h('label', {for: id}, m.id)));
      judge.append(h('option', {value: m.id}, m.id));
    }
    const usable = files.filter((f) => ['fine-tune', 'evals', 'user_data'].includes(f.purpose));
    clear(dataset, h('option', {value: ''}, 'Choose a file…'), usable.map((f) => h('option', {value: f.id}, `${f.filename} (${f.purpose})`)));
  } catch (err) {
    clear(status, notice('error', `The form cannot be filled: ${err.message}`));
  }
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const models = [.../** @type {NodeListOf<HTMLInputElement>} */ (modelsBox.querySelectorAll('input:checked'))].map((x) => x.value);
    if (!models.length || models.length > 8 || !dataset.value) {
      clear(status, notice('error', 'Choose 1 to 8 models and a dataset file.'));
      return;
    }
    const body = {models, dataset_file: dataset.value, max_tokens: Number(maxTokens.value), temperature: Number(temperature.value)};
    if (judge.value) body.judge_model = judge.value;
    if (maxItems.value) body.max_items = Number(maxItems.value);
    submit.disabled = true;
    try {
      const created = await api('/v1/evaluations', {json: body});
      announce(`Started evaluation ${created.id}`);
      location.hash = `#/evals/${created.id}`;
    } catch (err) {
      clear(status, notice('error', err.message));
    } finally {
      submit.disabled = false;
    }
  });
}

/** @param {HTMLElement} root @param {string} id */
function renderDetail(root, id) {
  const badge = h('span', {'aria-live': 'polite'});
  const actions = h('div', {class: 'actions'});
  const head = h('div');
  const summaryBox = h('div');
  const itemsBox = h('div');
  const reportBox = h('div');
  add(root, pageTitle(`Evaluation ${id}`, badge), actions, head,
    h('section', {class: 'card', 'aria-labelledby': 'eval-summary-h'}, h('h2', {id: 'eval-summary-h'}, 'Summary'), summaryBox),
    h('section', {class: 'card', 'aria-labelledby': 'eval-items-h'}, h('h2', {id: 'eval-items-h'}, 'Answers'), itemsBox),
    h('section', {class: 'card', 'aria-labelledby': 'eval-report-h'}, h('h2', {id: 'eval-report-h'}, 'HTML report'), reportBox));

  let itemsLoaded = false;
  let reportLoaded = false;
  return poll(async () => {
    let ev;
    try {
      ev = await api(`/v1/evaluations/${id}`);
    } catch (err) {
      clear(head, notice('error', err.message));
      return false;
    }
    clear(badge, statusBadge(ev.status));
    clear(actions, ACTIVE.has(ev.status) ? h('button', {type: 'button', class: 'danger', onclick: async () => {
      try { await api(`/v1/evaluations/${id}/cancel`, {method: 'POST'}); announce('Evaluation cancelled'); } catch (err) { clear(head, notice('error', err.message)); }
    }}, 'Cancel') : null);
    clear(head, ev.error ? notice('error', ev.error.message || 'failed') : null,
      facts([['Models', (ev.models || []).map((m) => h('code', {class: 'block wrap'}, m))], ['Dataset', h('a', {href: `#/files/${ev.dataset_file}`}, ev.dataset_file)],
        ['Judge', ev.judge_model || 'none'], ['Fine-tuning job', ev.fine_tuning_job_id ? h('a', {href: `#/jobs/${ev.fine_tuning_job_id}`}, ev.fine_tuning_job_id) : null],
        ['Progress', progressOf(ev)], ['Created', fmtTime(ev.created_at)], ['Finished', ev.finished_at ? fmtTime(ev.finished_at) : null]]));
    clear(summaryBox, ev.summary ? summaryTable(ev) : h('p', {class: 'muted'}, ACTIVE.has(ev.status) ? 'The summary appears when the evaluation is done.' : 'No summary.'));
    const done = !ACTIVE.has(ev.status);
    if (done && !itemsLoaded) { itemsLoaded = true; loadItems(itemsBox, id, ev.models || []); }
    if (!done) clear(itemsBox, h('p', {class: 'muted'}, 'Answers appear when the evaluation is done.'));
    if (done && ev.status === 'succeeded' && !reportLoaded) { reportLoaded = true; reportView(reportBox, id); }
    return !done;
  }, 2000);
}

function summaryTable(ev) {
  const metrics = METRICS.filter(([k]) => Object.values(ev.summary).some((s) => s && s[k]));
  const best = {};
  for (const [k] of metrics) {
    const means = Object.values(ev.summary).map((s) => (s && s[k] ? s[k].mean : -Infinity));
    best[k] = means.every((m) => m === means[0]) ? null : Math.max(...means);  // a tie has no winner
  }
  return table(['Model', 'n', ...metrics.map(([, label]) => label)], Object.entries(ev.summary).map(([model, s]) => h('tr', {},
    h('th', {scope: 'row'}, h('code', {class: 'wrap'}, model)), h('td', {class: 'num'}, s.n),
    metrics.map(([k]) => {
      const m = s[k];
      if (!m) return h('td', {}, '—');
      return h('td', {class: `metric${m.mean === best[k] ? ' best' : ''}`},
        h('span', {class: 'bar', style: `--v:${Math.max(0, Math.min(1, m.mean))}`, 'aria-hidden': 'true'}),
        h('strong', {}, fmtNum(m.mean, 3)), h('span', {class: 'muted small'}, ` [${fmtNum(m.ci_low, 3)}, ${fmtNum(m.ci_high, 3)}]`));
    }))), {caption: 'Mean per model, with the 95% confidence interval; the best mean per metric is marked.'});
}

/** @param {HTMLElement} box @param {string} id @param {string[]} models */
async function loadItems(box, id, models) {
  let after = null;
  const rows = h('tbody');
  const more = h('button', {type: 'button'}, 'Show more answers');
  clear(box, h('div', {class: 'table-wrap'}, h('table', {class: 'items'},
    h('thead', {}, h('tr', {}, h('th', {scope: 'col'}, '#'), h('th', {scope: 'col'}, 'Question and reference'), models.map((m) => h('th', {scope: 'col'}, h('code', {class: 'wrap'}, m))))),
    rows)), more);
  const load = async () => {
    more.disabled = true;
    try {
      const page = await api(`/v1/evaluations/${id}/items?limit=20${after !== null ? `&after=${after}` : ''}`);
      for (const it of page.data) {
        rows.append(h('tr', {}, h('td', {class: 'num'}, it.index),
          h('td', {}, h('div', {class: 'q'}, it.question), h('div', {class: 'ref muted'}, 'Reference: ', it.reference)),
          models.map((m) => {
            const a = (it.answers || {})[m];
            if (!a) return h('td', {}, '—');
            if (a.error) return h('td', {}, notice('error', a.error.message || String(a.error)));
            return h('td', {}, h('div', {class: 'a'}, a.text || h('em', {class: 'muted'}, '(empty answer)')),
              h('div', {class: 'small muted'}, `R1 ${fmtNum(a.rouge1, 3)} · RL ${fmtNum(a.rougeL, 3)}${a.exact_match ? ' · exact' : ''}`),
              a.judge ? h('div', {class: `small judge judge-${a.judge.verdict}`, title: a.judge.reason || ''}, `Judge: ${a.judge.verdict}`) : null);
          })));
      }
      if (page.data.length) after = page.data[page.data.length - 1].index ?? page.data[page.data.length - 1].id;
      more.hidden = !page.has_more;
    } catch (err) {
      box.append(notice('error', err.message));
      more.hidden = true;
    }
    more.disabled = false;
  };
  more.addEventListener('click', load);
  await load();
}

/** @param {HTMLElement} box @param {string} id */
function reportView(box, id) {
  const frame = h('iframe', {title: 'Evaluation report', class: 'report-frame', sandbox: 'allow-scripts', hidden: true});
  const button = h('button', {type: 'button', onclick: async () => {
    button.disabled = true;
    try {
      const response = await api(`/v1/evaluations/${id}/report.html`, {raw: true});
      frame.srcdoc = await response.text();
      frame.hidden = false;
      button.hidden = true;
    } catch (err) {
      box.append(notice('error', err.message));
    }
    button.disabled = false;
  }}, 'Show the HTML report');
  clear(box, h('p', {class: 'muted'}, 'The report as a self-contained page, the same one the API serves.'), button, frame);
}
