// @ts-check
// Jobs: the list (live statuses), the create form with every method and hyperparameter of the
// job request (OpenAI's fields plus tuneserve's extensions), and, for #/jobs/ID, the detail page.

import {api, listAll} from '../api.js';
import {h, add, clear, changed, notice, announce, fmtTime, table, poll, field, select, pageTitle, statusBadge, uid} from '../dom.js';

/** @param {HTMLElement} root @param {import('../app.js').Route} route */
export async function render(root, route) {
  if (route.parts[0] === 'new') return renderCreate(root, route);
  if (route.parts[0]) return (await import('./job.js')).render(root, route);
  return renderList(root);
}

const ACTIVE = new Set(['validating_files', 'queued', 'running', 'paused']);

/** @param {HTMLElement} root */
function renderList(root) {
  const box = h('div', {'aria-busy': 'true'}, h('p', {class: 'muted'}, 'Loading jobs…'));
  add(root, pageTitle('Fine-tuning jobs', h('a', {href: '#/jobs/new', class: 'button primary'}, 'New job')),
    h('section', {class: 'card', 'aria-labelledby': 'jobs-h'}, h('h2', {id: 'jobs-h', class: 'visually-hidden'}, 'All jobs'), box));
  let shown = 50;
  let lastStatuses = new Map();
  const refresh = async () => {
    try {
      const page = await api(`/v1/fine_tuning/jobs?limit=${shown}`);
      for (const job of page.data) {
        const before = lastStatuses.get(job.id);
        if (before && before !== job.status) announce(`Job ${job.id} is now ${job.status.replace('_', ' ')}`);
      }
      lastStatuses = new Map(page.data.map((j) => [j.id, j.status]));
      if (!changed(box, page)) return;
      if (!page.data.length) {
        clear(box, notice('info', 'No jobs yet. ', h('a', {href: '#/jobs/new'}, 'Create the first one'), ' from an uploaded file.'));
      } else {
        clear(box, table(['Job', 'Status', 'Model', 'Fine-tuned model', 'Created', 'Finished'], page.data.map((j) => h('tr', {'data-job': j.id},
          h('td', {}, h('a', {href: `#/jobs/${j.id}`}, h('code', {}, j.id)), j.suffix ? h('div', {class: 'muted small'}, j.suffix) : null),
          h('td', {}, statusBadge(j.status)),
          h('td', {}, h('code', {class: 'small'}, j.model)),
          h('td', {}, j.fine_tuned_model ? h('a', {href: `#/playground?model=${encodeURIComponent(j.fine_tuned_model)}`, title: 'Chat with it'}, h('code', {class: 'small wrap'}, j.fine_tuned_model)) : '—'),
          h('td', {}, h('span', {title: fmtTime(j.created_at)}, fmtTime(j.created_at))),
          h('td', {}, j.finished_at ? h('span', {title: fmtTime(j.finished_at)}, fmtTime(j.finished_at)) : '—'))),
        {caption: `${page.data.length} job${page.data.length === 1 ? '' : 's'}, newest first; ${page.data.some((j) => ACTIVE.has(j.status)) ? 'updating live' : 'all finished'}`}),
        page.has_more ? h('button', {type: 'button', onclick: () => { shown += 50; refresh(); }}, 'Show more') : null);
      }
    } catch (err) {
      changed(box, null);
      clear(box, notice('error', `The jobs cannot be listed: ${err.message}`));
    }
    box.setAttribute('aria-busy', 'false');
  };
  return poll(refresh, 2500);
}

// -- create form ---------------------------------------------------------------------------

// Every field of the request, grouped as the form shows them. `path` is where the value goes in the
// request body; `hp` marks the method's hyperparameters (method.{type}.hyperparameters.NAME).
const NUM = 'number';
const GROUPS = [
  {legend: 'Hyperparameters', fields: [
    {path: 'n_epochs', hp: true, label: 'Epochs (n_epochs)', type: NUM, min: 1, max: 50, step: 1, placeholder: 'auto'},
    {path: 'batch_size', hp: true, label: 'Batch size', type: NUM, min: 1, max: 256, step: 1, placeholder: 'auto'},
    {path: 'learning_rate_multiplier', hp: true, label: 'Learning-rate multiplier', type: NUM, min: 0, step: 'any', placeholder: 'auto'},
    {path: 'beta', hp: true, dpo: true, label: 'DPO beta', type: NUM, min: 0, step: 'any', placeholder: 'auto'},
  ]},
  {legend: 'Adapter', fields: [
    {path: 'training_type', label: 'Training type', options: [['', 'default (lora)'], ['lora', 'LoRA'], ['qlora', 'QLoRA (4-bit base)'], ['ia3', 'IA3'], ['full', 'Full fine-tuning']]},
    {path: 'lora.r', label: 'LoRA rank r', type: NUM, min: 1, step: 1, placeholder: 'default', lora: true},
    {path: 'lora.alpha', label: 'LoRA alpha', type: NUM, min: 0, step: 'any', placeholder: 'default', lora: true},
    {path: 'lora.dropout', label: 'LoRA dropout', type: NUM, min: 0, max: 1, step: 'any', placeholder: 'default', lora: true},
    {path: 'lora.target_modules', label: 'Target modules', type: 'text', placeholder: 'all-linear, or q_proj, v_proj', list: true, lora: true},
    {path: 'lora.use_rslora', label: 'rsLoRA (rank-stabilised scaling)', bool: true, lora: true},
    {path: 'lora.use_dora', label: 'DoRA (weight-decomposed LoRA)', bool: true, lora: true},
  ]},
  {legend: 'Optimizer and schedule', fields: [
    {path: 'learning_rate', label: 'Learning rate (absolute; overrides the multiplier)', type: NUM, min: 0, step: 'any', placeholder: 'auto'},
    {path: 'lr_scheduler_type', label: 'Scheduler', options: [['', 'default'], ['linear', 'linear'], ['cosine', 'cosine'], ['constant', 'constant']]},
    {path: 'warmup_ratio', label: 'Warmup ratio', type: NUM, min: 0, max: 1, step: 'any', placeholder: 'default'},
    {path: 'min_lr_ratio', label: 'Minimum LR ratio', type: NUM, min: 0, max: 1, step: 'any', placeholder: 'default'},
    {path: 'weight_decay', label: 'Weight decay', type: NUM, min: 0, step: 'any', placeholder: 'default'},
    {path: 'max_grad_norm', label: 'Max gradient norm', type: NUM, min: 0, step: 'any', placeholder: 'default'},
    {path: 'gradient_accumulation_steps', label: 'Gradient accumulation steps', type: NUM, min: 1, step: 1, placeholder: 'default'},
  ]},
  {legend: 'Data, checkpoints and evaluation', fields: [
    {path: 'max_seq_length', label: 'Max sequence length', type: NUM, min: 1, step: 1, placeholder: 'default'},
    {path: 'train_on_inputs', label: 'Train on inputs', options: [['', 'default (auto)'], ['auto', 'auto'], ['true', 'yes'], ['false', 'no']]},
    {path: 'n_checkpoints', label: 'Checkpoints (n_checkpoints)', type: NUM, min: 1, step: 1, placeholder: 'default'},
    {path: 'n_evals', label: 'Validation runs (n_evals)', type: NUM, min: 0, step: 1, placeholder: 'default'},
    {path: 'validation_split', label: 'Held-out share without a validation file', type: NUM, min: 0, max: 0.5, step: 'any', placeholder: 'default (0: none)'},
    {path: 'early_stopping_patience', label: 'Early-stopping patience (validations; 0: keep the last)', type: NUM, min: 0, step: 1, placeholder: 'default (0)'},
    {path: 'early_stopping_metric', label: 'Judge validations by', options: [['', 'default (loss)'], ['loss', 'validation loss'], ['answers', 'held-out answers (ROUGE-L)']]},
    {path: 'neftune_noise_alpha', label: 'NEFTune noise alpha', type: NUM, min: 0, step: 'any', placeholder: 'default (off)'},
    {path: 'auto_evaluate', label: 'Evaluate against the base model when done (needs a validation file)', bool: true},
  ]},
  {legend: 'Performance', fields: [
    {path: 'gradient_checkpointing', label: 'Gradient checkpointing', options: [['', 'default'], ['true', 'on'], ['false', 'off']]},
    {path: 'torch_compile', label: 'torch.compile', options: [['', 'default'], ['true', 'on'], ['false', 'off']]},
    {path: 'precision', label: 'Precision', options: [['', 'default'], ['auto', 'auto'], ['bf16', 'bf16'], ['fp32', 'fp32']]},
    {path: 'packing', label: 'Packing', options: [['', 'default'], ['auto', 'auto'], ['padding_free', 'padding-free'], ['per_example', 'per example'], ['length_grouped', 'length-grouped']]},
    {path: 'num_workers', label: 'Workers (Ray runner)', type: NUM, min: 1, step: 1, placeholder: 'default'},
    {path: 'resources_per_worker', label: 'Resources per worker', type: 'text', placeholder: 'CPU=2, GPU=1', dict: true},
  ]},
  {legend: 'Weights & Biases', fields: [
    {path: 'wandb.project', label: 'W&B project', type: 'text', placeholder: 'none'},
    {path: 'wandb.name', label: 'W&B run name', type: 'text'},
    {path: 'wandb.entity', label: 'W&B entity', type: 'text'},
    {path: 'wandb.tags', label: 'W&B tags', type: 'text', placeholder: 'comma, separated', list: true},
  ]},
];

/** The input for one field of GROUPS. */
function control(spec) {
  const id = `job-${spec.path.replace(/\./g, '-')}`;
  const attrs = {id, name: spec.path, 'data-param': spec.hp ? `hyperparameters.${spec.path}` : spec.path};
  if (spec.options) return select(spec.options, attrs);
  if (spec.bool) return h('input', {...attrs, type: 'checkbox'});
  return h('input', {...attrs, type: spec.type, min: spec.min, max: spec.max, step: spec.step, placeholder: spec.placeholder || '', inputmode: spec.type === NUM ? 'decimal' : null});
}

/** obj.a.b = value for path 'a.b', making obj.a if needed. @param {Record<string, any>} obj @param {string} path @param {unknown} value */
function setPath(obj, path, value) {
  const keys = path.split('.');
  let cur = obj;
  for (const k of keys.slice(0, -1)) cur = cur[k] ??= {};
  cur[keys[keys.length - 1]] = value;
}

/** A control of the form by name (an input, or a select or textarea: all have value and disabled). */
function named(/** @type {HTMLFormElement} */ form, /** @type {string} */ name) {
  return /** @type {HTMLInputElement | null} */ (form.elements.namedItem(name));
}

/** The method chosen: supervised or dpo. */
function methodOf(/** @type {HTMLFormElement} */ form) {
  return /** @type {HTMLInputElement} */ (form.querySelector('input[name="method"]:checked')).value;
}

/**
 * The request body from the form: only what the user set, so the server's defaults ("auto") apply.
 * @param {HTMLFormElement} form
 */
function buildRequest(form) {
  const v = (/** @type {string} */ name) => /** @type {HTMLInputElement} */ (named(form, name));
  /** @type {Record<string, any>} */
  const body = {model: v('model').value, training_file: v('training_file').value};
  if (v('validation_file').value) body.validation_file = v('validation_file').value;
  if (v('suffix').value.trim()) body.suffix = v('suffix').value.trim();
  if (v('seed').value !== '') body.seed = Number(v('seed').value);
  const method = methodOf(form);
  /** @type {Record<string, unknown>} */
  const hp = {};
  /** @type {Record<string, unknown>} */
  const wandb = {};
  for (const group of GROUPS) {
    for (const spec of group.fields) {
      const el = named(form, spec.path);
      if (!el || el.disabled) continue;
      let value;
      if (spec.bool) { if (!el.checked) continue; value = true; } else {
        const raw = el.value.trim();
        if (raw === '') continue;
        if (spec.list) value = raw === 'all-linear' ? raw : raw.split(',').map((s) => s.trim()).filter(Boolean);
        else if (spec.dict) value = Object.fromEntries(raw.split(',').map((s) => s.split('=').map((x) => x.trim())).filter(([k, n]) => k && n).map(([k, n]) => [k, Number(n)]));
        else if (spec.type === NUM) value = Number(raw);
        else if (raw === 'true' || raw === 'false') value = raw === 'true';
        else value = raw;
      }
      if (spec.hp) hp[spec.path] = value;
      else if (spec.path.startsWith('wandb.')) wandb[spec.path.slice(6)] = value;
      else setPath(body, spec.path, value);
    }
  }
  body.method = {type: method, [method]: {hyperparameters: hp}};
  if (wandb.project) body.integrations = [{type: 'wandb', wandb}];
  /** @type {Record<string, string>} */
  const metadata = {};
  for (const line of v('metadata').value.split('\n')) {
    const cut = line.indexOf('=');
    if (cut > 0) metadata[line.slice(0, cut).trim()] = line.slice(cut + 1).trim();
  }
  if (Object.keys(metadata).length) body.metadata = metadata;
  return body;
}

/** @param {HTMLElement} root @param {import('../app.js').Route} route */
async function renderCreate(root, route) {
  const status = h('div', {class: 'form-status', 'aria-live': 'assertive'});
  const model = h('select', {id: 'job-model', name: 'model', required: true, 'data-param': 'model'});
  const training = h('select', {id: 'job-training_file', name: 'training_file', required: true, 'data-param': 'training_file'});
  const validation = h('select', {id: 'job-validation_file', name: 'validation_file', 'data-param': 'validation_file'});
  const suffix = h('input', {id: 'job-suffix', name: 'suffix', type: 'text', maxlength: 64, pattern: '[^:\\s]+', placeholder: 'e.g. support-bot', 'data-param': 'suffix'});
  const seed = h('input', {id: 'job-seed', name: 'seed', type: 'number', min: 0, step: 1, placeholder: 'random', 'data-param': 'seed'});
  const metadata = h('textarea', {id: 'job-metadata', name: 'metadata', rows: 2, placeholder: 'team=search\nticket=123', 'data-param': 'metadata'});
  const methodName = uid('method');
  const methods = h('fieldset', {class: 'radios'}, h('legend', {}, 'Method'),
    [['supervised', 'Supervised (SFT)'], ['dpo', 'Preference (DPO)']].map(([value, label]) => {
      const input = h('input', {type: 'radio', name: 'method', value, id: `${methodName}-${value}`, checked: value === 'supervised'});
      return h('span', {class: 'radio'}, input, h('label', {for: input.id}, label));
    }));
  const preview = h('pre', {class: 'request-preview', id: 'job-request-preview'});
  const submit = h('button', {type: 'submit', class: 'primary'}, 'Create job');

  const form = h('form', {class: 'job-form', novalidate: true, 'aria-describedby': 'job-form-help'},
    h('p', {id: 'job-form-help', class: 'muted'}, 'Empty fields use the server’s defaults ("auto"). The request is shown below as it will be sent.'),
    h('fieldset', {}, h('legend', {}, 'Model and data'),
      h('div', {class: 'grid-fields'},
        field('Base or fine-tuned model', model), field('Training file', training), field('Validation file', validation, 'Optional: validation loss and accuracy during training.'),
        field('Suffix of the model name', suffix), field('Seed', seed))),
    methods,
    GROUPS.map((g) => h('fieldset', {'data-group': g.legend}, h('legend', {}, g.legend),
      h('div', {class: 'grid-fields'}, g.fields.map((spec) => {
        const wrap = field(spec.label, control(spec));
        if (spec.dpo) wrap.dataset.dpo = 'true';
        if (spec.lora) wrap.dataset.lora = 'true';
        return wrap;
      })))),
    h('fieldset', {}, h('legend', {}, 'Metadata'), field('Metadata (key=value, one per line)', metadata)),
    h('details', {class: 'request-details'}, h('summary', {}, 'Request body (JSON)'), preview),
    h('div', {class: 'actions'}, submit, h('a', {href: '#/jobs', class: 'button'}, 'Cancel')),
    status);

  const sync = () => {
    const method = methodOf(form);
    const type = named(form, 'training_type')?.value || 'lora';
    for (const el of form.querySelectorAll('[data-dpo]')) toggle(el, method === 'dpo');
    for (const el of form.querySelectorAll('[data-lora]')) toggle(el, type === 'lora' || type === 'qlora');
    const auto = /** @type {HTMLInputElement} */ (named(form, 'auto_evaluate'));
    auto.disabled = !validation.value;
    if (auto.disabled) auto.checked = false;
    preview.textContent = JSON.stringify(buildRequest(form), null, 2);
  };
  form.addEventListener('input', sync);
  form.addEventListener('change', sync);

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
    if (!model.value || !training.value) {
      clear(status, notice('error', 'Choose a model and a training file.'));
      (model.value ? training : model).focus();
      return;
    }
    submit.disabled = true;
    clear(status, notice('info', 'Creating the job…'));
    try {
      const job = await api('/v1/fine_tuning/jobs', {json: buildRequest(form)});
      announce(`Created job ${job.id}`);
      location.hash = `#/jobs/${job.id}`;
    } catch (err) {
      clear(status, notice('error', h('strong', {}, 'The job was not created. '), err.message, err.param ? ` (field: ${err.param})` : ''));
      const culprit = err.param && findField(form, err.param);
      if (culprit) { culprit.setAttribute('aria-invalid', 'true'); culprit.focus(); }
    } finally {
      submit.disabled = false;
    }
  });

  add(root, pageTitle('New fine-tuning job', h('a', {href: '#/jobs', class: 'button'}, 'All jobs')),
    h('section', {class: 'card'}, form));

  try {
    const [models, files] = await Promise.all([api('/v1/models'), listAll('/v1/files?purpose=fine-tune', {limit: 1000})]);
    const wanted = route.query.get('model');
    clear(model, models.data.map((m) => h('option', {value: m.id}, m.parent ? `${m.id} (fine-tuned)` : m.id)));
    model.value = wanted || (models.data.find((m) => !m.parent) || {}).id || '';
    const usable = files.filter((f) => f.status !== 'error' && (!f.validation || f.validation.ok));
    if (!usable.length) {
      clear(status, notice('warn', 'No fine-tune file is uploaded yet. ', h('a', {href: '#/files'}, 'Upload one'), ' first.'));
    }
    const opts = (empty) => [h('option', {value: ''}, empty), usable.map((f) => h('option', {value: f.id}, `${f.filename} · ${f.validation ? `${f.validation.n_examples} examples` : f.id}`))];
    clear(training, opts('Choose a file…'));
    clear(validation, opts('None'));
    const wantedFile = route.query.get('training_file');
    if (wantedFile) training.value = wantedFile;
    else if (usable.length) training.value = (usable.find((f) => (f.validation?.n_examples ?? 10) >= 10) || usable[0]).id;
  } catch (err) {
    clear(status, notice('error', `The form cannot be filled: ${err.message}`));
  }
  sync();
  return null;
}

/** Show or hide a field, and disable its control while hidden (so it stays out of the request). */
function toggle(/** @type {Element} */ wrap, /** @type {boolean} */ on) {
  /** @type {HTMLElement} */ (wrap).hidden = !on;
  for (const el of wrap.querySelectorAll('input, select, textarea')) /** @type {HTMLInputElement} */ (el).disabled = !on;
}

/** The control an API error's `param` names (e.g. method.supervised.hyperparameters.n_epochs). */
function findField(/** @type {HTMLFormElement} */ form, /** @type {string} */ param) {
  const tail = param.split('.').slice(-1)[0];
  const controls = /** @type {HTMLElement[]} */ ([...form.querySelectorAll('[data-param]')]);
  return controls.find((el) => el.dataset.param === param)
    || controls.find((el) => (el.dataset.param || '').endsWith(`.${tail}`) || el.dataset.param === tail) || null;
}
