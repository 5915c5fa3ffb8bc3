// @ts-check
// One job, live: status timeline, progress, train/valid loss and accuracy charts (from the job's
// metrics events), checkpoints with their metrics, the events log, cancel/pause/resume, download.

import {api, download} from '../api.js';
import {h, add, clear, changed, notice, announce, fmtTime, fmtNum, fmtDuration, facts, table, poll, pageTitle, statusBadge} from '../dom.js';
import {createChart} from '../chart.js';

const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);

/** @type {{id: string, title: string, yLabel: string, always?: boolean, bounds?: [number, number], series: [string, string][]}[]} */
const CHARTS = [
  {id: 'chart-loss', title: 'Loss', yLabel: 'loss', always: true, series: [
    ['train_loss', 'train'], ['valid_loss', 'valid'], ['full_valid_loss', 'full valid']]},
  {id: 'chart-accuracy', title: 'Token accuracy', yLabel: 'accuracy', always: true, bounds: [0, 1], series: [
    ['train_mean_token_accuracy', 'train'], ['valid_mean_token_accuracy', 'valid'], ['full_valid_mean_token_accuracy', 'full valid']]},
  {id: 'chart-lr', title: 'Learning rate', yLabel: 'lr', series: [['learning_rate', 'learning rate']]},
  {id: 'chart-rewards', title: 'DPO rewards', yLabel: 'reward', series: [
    ['rewards_chosen', 'chosen'], ['rewards_rejected', 'rejected'], ['rewards_margin', 'margin'], ['rewards_accuracy', 'accuracy']]},
];

/** @param {HTMLElement} root @param {import('../app.js').Route} route */
export async function render(root, route) {
  const id = route.parts[0];

  const badge = h('span', {id: 'job-status', 'aria-live': 'polite'});
  const actionStatus = h('div', {class: 'action-status', 'aria-live': 'polite'});
  const timeline = h('ol', {class: 'timeline', 'aria-label': 'Status timeline'});
  const progress = h('div', {class: 'job-progress'});
  const summary = h('div', {class: 'job-summary'});
  const charts = CHARTS.map((c) => ({...c, chart: createChart({id: c.id, title: c.title, yLabel: c.yLabel, bounds: c.bounds})}));
  const chartGrid = h('div', {class: 'chart-grid'}, charts.map((c) => c.chart.el));
  const checkpointsBox = h('div', {}, h('p', {class: 'muted'}, 'No checkpoints yet.'));
  const eventsBox = h('ol', {class: 'events', role: 'log', 'aria-label': 'Events, newest first', reversed: true});
  const evalBox = h('div');

  const buttons = {
    cancel: h('button', {type: 'button', class: 'danger', onclick: () => {
      if (confirm(`Cancel ${id}? Its training stops and cannot be resumed.`)) act('cancel', 'Cancelling…');
    }}, 'Cancel job'),
    pause: h('button', {type: 'button', onclick: () => act('pause', 'Pausing (a running job saves a checkpoint first)…')}, 'Pause'),
    resume: h('button', {type: 'button', onclick: () => act('resume', 'Resuming…')}, 'Resume'),
    adapter: h('button', {type: 'button', onclick: () => fetchModel('adapter')}, 'Download adapter'),
    merged: h('button', {type: 'button', onclick: () => fetchModel('merged')}, 'Download merged model'),
    // llama.cpp, Ollama and LM Studio: the merged model as one GGUF (with an Ollama Modelfile), or the LoRA alone.
    gguf: h('button', {type: 'button', onclick: () => fetchModel('gguf')}, 'Download GGUF'),
    ggufLora: h('button', {type: 'button', onclick: () => fetchModel('gguf-lora')}, 'Download LoRA GGUF'),
  };
  const chatLink = h('a', {class: 'button primary', hidden: true}, 'Chat with the model');
  const compareLink = h('a', {class: 'button', hidden: true}, 'Compare with its base');

  add(root, 
    pageTitle(`Job ${id}`, badge),
    h('div', {class: 'actions job-actions'}, buttons.cancel, buttons.pause, buttons.resume, buttons.adapter, buttons.merged,
      buttons.gguf, buttons.ggufLora, chatLink, compareLink),
    actionStatus,
    h('section', {class: 'card', 'aria-labelledby': 'timeline-h'}, h('h2', {id: 'timeline-h'}, 'Status'), timeline, progress),
    h('section', {class: 'card', 'aria-labelledby': 'metrics-h'}, h('h2', {id: 'metrics-h'}, 'Metrics'), chartGrid),
    h('section', {class: 'card', 'aria-labelledby': 'ckpt-h'}, h('h2', {id: 'ckpt-h'}, 'Checkpoints'), checkpointsBox),
    h('div', {class: 'split'},
      h('div', {class: 'stack'},
        h('section', {class: 'card', 'aria-labelledby': 'summary-h'}, h('h2', {id: 'summary-h'}, 'Job'), summary),
        h('section', {class: 'card', 'aria-labelledby': 'job-evals-h'}, h('h2', {id: 'job-evals-h'}, 'Evaluations'), evalBox)),
      h('section', {class: 'card', 'aria-labelledby': 'events-h'}, h('h2', {id: 'events-h'}, 'Events'), eventsBox)));

  let job = null;
  const events = [];          // oldest first
  const known = new Set();
  const seenStatus = new Map();  // status -> when this page first saw it

  async function act(what, message) {
    clear(actionStatus, notice('info', message));
    try {
      job = await api(`/v1/fine_tuning/jobs/${id}/${what}`, {method: 'POST'});
      clear(actionStatus, notice('ok', `Job ${job.status.replace('_', ' ')}.`));
      announce(`Job ${job.status}`);
      draw();
      restart();
    } catch (err) {
      clear(actionStatus, notice('error', err.message));
    }
  }

  async function fetchModel(type) {
    clear(actionStatus, notice('info', h('span', {class: 'spinner', 'aria-hidden': 'true'}),
      {merged: ' Building the merged weights (the first time takes a while)…',
        gguf: ' Building the GGUF file (the first time takes a while)…',
        'gguf-lora': ' Writing the LoRA GGUF…'}[type] || ' Packing the adapter…'));
    try {
      const saved = await download(`/v1/fine_tuning/jobs/${id}/download?type=${type}`, `${id}-${type}.tar.gz`);
      clear(actionStatus, notice('ok', `Downloaded ${saved.name} (${fmtNum(saved.size / 1048576, 3)} MB).`));
    } catch (err) {
      clear(actionStatus, notice('error', err.message));
    }
  }

  async function syncEvents() {
    const fresh = [];
    let after = null;
    for (let page = 0; page < 50; page++) {
      const res = await api(`/v1/fine_tuning/jobs/${id}/events?limit=${events.length ? 100 : 1000}${after ? `&after=${after}` : ''}`);
      let reachedKnown = false;
      for (const e of res.data) {
        if (known.has(e.id)) { reachedKnown = true; break; }
        fresh.push(e);
      }
      if (reachedKnown || !res.has_more || !res.data.length) break;
      after = res.data[res.data.length - 1].id;
    }
    for (const e of fresh.reverse()) { known.add(e.id); events.push(e); }
    return fresh.length;
  }

  async function refresh() {
    const before = job && job.status;
    job = await api(`/v1/fine_tuning/jobs/${id}`);
    if (!seenStatus.has(job.status)) seenStatus.set(job.status, Math.floor(Date.now() / 1000));
    if (before && before !== job.status) announce(`Job is now ${job.status.replace('_', ' ')}`);
    const newEvents = await syncEvents();
    const ckpts = await api(`/v1/fine_tuning/jobs/${id}/checkpoints?limit=100`);
    renderCheckpoints(ckpts.data);
    renderEvals();
    draw(newEvents > 0);
    return !TERMINAL.has(job.status);
  }

  function draw(eventsChanged = true) {
    clear(badge, statusBadge(job.status));
    const active = !TERMINAL.has(job.status);
    buttons.cancel.hidden = !active;
    buttons.pause.hidden = !(job.status === 'running' || job.status === 'queued');
    buttons.resume.hidden = job.status !== 'paused';
    for (const b of [buttons.adapter, buttons.merged, buttons.gguf, buttons.ggufLora]) b.hidden = job.status !== 'succeeded';
    if (job.fine_tuned_model) {
      chatLink.hidden = compareLink.hidden = false;
      chatLink.href = `#/playground?model=${encodeURIComponent(job.fine_tuned_model)}`;
      compareLink.href = `#/playground?model=${encodeURIComponent(job.fine_tuned_model)}&compare=${encodeURIComponent(job.model)}`;
    }
    renderTimeline();
    renderSummary();
    if (eventsChanged) {
      renderCharts();
      renderEvents();
    }
  }

  function metrics() {
    return events.filter((e) => e.type === 'metrics' && e.data).map((e) => e.data);
  }

  function renderCharts() {
    const rows = metrics();
    const last = rows[rows.length - 1];
    const xMax = last && last.total_steps;
    for (const c of charts) {
      const series = c.series.map(([key, name]) => ({key, name,
        points: rows.filter((r) => typeof r[key] === 'number' && typeof r.step === 'number')
          .map((r) => /** @type {import('../chart.js').Point} */ ([r.step, r[key]]))}));
      const any = series.some((s) => s.points.length);
      c.chart.el.hidden = !c.always && !any;
      c.chart.update(series, {xMax});
    }
    clear(progress);
    if (last && last.total_steps) {
      const rate = [...rows].reverse().find((r) => r.tokens_per_second);
      progress.append(h('label', {for: 'job-step-progress'}, `Step ${last.step} of ${last.total_steps}`, last.epoch ? ` · epoch ${fmtNum(last.epoch, 3)}` : '',
        rate ? ` · ${fmtNum(rate.tokens_per_second, 3)} tokens/s` : ''),
      h('progress', {id: 'job-step-progress', max: last.total_steps, value: last.step}));
    }
  }

  function firstEvent(test) {
    const e = events.find(test);
    return e ? e.created_at : null;
  }

  function renderTimeline() {
    if (!changed(timeline, [job, events.length, [...seenStatus]])) return;
    const s = job.status;
    const steps = [
      ['validating_files', 'Validating files', job.created_at],
      ['queued', 'Queued', firstEvent((e) => /queued/i.test(e.message)) || seenStatus.get('queued')],
      ['running', 'Running', firstEvent((e) => e.type === 'metrics' || /training process|claimed|started/i.test(e.message)) || seenStatus.get('running')],
    ];
    if (s === 'paused' || seenStatus.has('paused') || events.some((e) => /paused/i.test(e.message))) {
      steps.push(['paused', 'Paused', firstEvent((e) => /paused/i.test(e.message)) || seenStatus.get('paused')]);
    }
    const end = TERMINAL.has(s) ? s : 'succeeded';
    steps.push([end, {succeeded: 'Succeeded', failed: 'Failed', cancelled: 'Cancelled'}[end], TERMINAL.has(s) ? job.finished_at : null]);
    const order = steps.map((x) => x[0]);
    const at = order.indexOf(s);
    clear(timeline, steps.map(([key, label, when], i) => {
      // Before the current status: done if it happened, skipped if not (a job cancelled while queued never ran).
      const state = i < at ? (when || key === 'validating_files' ? 'done' : 'skipped')
        : i === at ? (s === 'failed' || s === 'cancelled' ? 'bad' : TERMINAL.has(s) ? 'done' : 'current') : 'todo';
      return h('li', {class: `step step-${state}`, 'data-status': key, 'aria-current': i === at ? 'step' : null},
        h('span', {class: 'dot', 'aria-hidden': 'true'}), h('span', {class: 'step-label'}, label),
        h('span', {class: 'step-time'}, when && state !== 'todo' && state !== 'skipped' ? fmtTime(when) : state === 'skipped' ? 'skipped' : ''),
        h('span', {class: 'visually-hidden'}, {todo: ' (not yet)', current: ' (now)'}[state] || ''));
    }));
  }

  function renderSummary() {
    if (!changed(summary, job)) return;
    const hp = (job.method && job.method[job.method.type] && job.method[job.method.type].hyperparameters) || job.hyperparameters || {};
    const took = job.finished_at ? job.finished_at - job.created_at : null;
    clear(summary,
      job.error && job.error.message ? notice('error', h('strong', {}, 'Failed: '), job.error.message) : null,
      facts([
        ['Model', h('code', {}, job.model)],
        ['Fine-tuned model', job.fine_tuned_model ? h('code', {class: 'wrap'}, job.fine_tuned_model) : '—'],
        ['Method', `${job.method ? job.method.type : 'supervised'}${job.training_type ? ` · ${job.training_type}` : ''}`],
        ['Hyperparameters', Object.entries(hp).map(([k, v]) => `${k} ${v}`).join(', ') || '—'],
        ['Training file', h('a', {href: `#/files/${job.training_file}`}, job.training_file)],
        ['Validation file', job.validation_file ? h('a', {href: `#/files/${job.validation_file}`}, job.validation_file) : 'none'],
        ['Trained tokens', fmtNum(job.trained_tokens)],
        ['Kept checkpoint', job.kept_checkpoint ? h('span', {id: 'kept-checkpoint'}, job.kept_checkpoint.reason) : null],
        ['Seed', job.seed],
        ['Suffix', job.suffix],
        ['Created', fmtTime(job.created_at)],
        ['Estimated finish', job.estimated_finish ? fmtTime(job.estimated_finish) : null],
        ['Finished', job.finished_at ? `${fmtTime(job.finished_at)} (${fmtDuration(took)})` : null],
        ['Results', (job.result_files || []).length ? job.result_files.map((f) => h('a', {href: `#/files/${f}`}, f)) : null],
        ['Metadata', job.metadata && Object.keys(job.metadata).length ? Object.entries(job.metadata).map(([k, v]) => `${k}=${v}`).join(', ') : null],
      ]));
  }

  function renderCheckpoints(list) {
    if (!changed(checkpointsBox, [list, job.status])) return;
    if (!list.length) { clear(checkpointsBox, h('p', {class: 'muted'}, TERMINAL.has(job?.status) ? 'This job saved no checkpoints.' : 'No checkpoints yet.')); return; }
    clear(checkpointsBox, table(['Step', 'Model', 'Train loss', 'Valid loss', 'Train acc.', 'Valid acc.', ''], list.map((c) => {
      const m = c.metrics || {};
      const kept = job && job.kept_checkpoint && job.kept_checkpoint.step === c.step_number;
      return h('tr', {'data-step': c.step_number, class: kept ? 'kept' : null, title: kept ? 'The fine-tuned model is this checkpoint' : null},
        h('td', {class: 'num'}, c.step_number, kept ? h('span', {class: 'badge'}, 'kept') : null),
        h('td', {}, h('code', {class: 'small nowrap'}, c.fine_tuned_model_checkpoint)),
        h('td', {class: 'num'}, fmtNum(m.train_loss)), h('td', {class: 'num'}, fmtNum(m.valid_loss ?? m.full_valid_loss)),
        h('td', {class: 'num'}, fmtNum(m.train_mean_token_accuracy)), h('td', {class: 'num'}, fmtNum(m.valid_mean_token_accuracy ?? m.full_valid_mean_token_accuracy)),
        h('td', {class: 'row-actions'},
          h('a', {href: `#/playground?model=${encodeURIComponent(c.fine_tuned_model_checkpoint)}`}, 'Chat'),
          job && job.status === 'succeeded' ? h('button', {type: 'button', class: 'link', onclick: async () => {
            clear(actionStatus, notice('info', `Packing the checkpoint of step ${c.step_number}…`));
            try {
              await download(`/v1/fine_tuning/jobs/${id}/download?type=adapter&checkpoint_step=${c.step_number}`, `${id}-step-${c.step_number}.tar.gz`);
              clear(actionStatus, notice('ok', `Downloaded the checkpoint of step ${c.step_number}.`));
            } catch (err) { clear(actionStatus, notice('error', err.message)); }
          }}, 'Download') : null));
    }), {caption: `${list.length} checkpoint${list.length === 1 ? '' : 's'}, newest first`}));
  }

  function renderEvents() {
    clear(eventsBox, [...events].reverse().slice(0, 500).map((e) => h('li', {class: `event level-${e.level} type-${e.type}`},
      h('time', {datetime: new Date(e.created_at * 1000).toISOString()}, fmtTime(e.created_at)),
      h('span', {class: 'level'}, e.level), h('span', {class: 'message'}, e.message))));
    if (!events.length) eventsBox.append(h('li', {class: 'muted'}, 'No events yet.'));
  }

  let evalsShown = false;
  async function renderEvals() {
    if (evalsShown && TERMINAL.has(job.status)) return;
    try {
      const page = await api('/v1/evaluations?limit=100');
      const mine = page.data.filter((e) => e.fine_tuning_job_id === id);
      evalsShown = mine.length > 0;
      clear(evalBox, mine.length ? table(['Evaluation', 'Status', 'Models'], mine.map((e) => h('tr', {},
        h('td', {}, h('a', {href: `#/evals/${e.id}`}, e.id)), h('td', {}, statusBadge(e.status)), h('td', {}, e.models.join(', ')))))
        : h('p', {class: 'muted'}, 'No evaluation of this job yet. ', h('a', {href: `#/evals?model=${encodeURIComponent(job.fine_tuned_model || '')}`}, 'Evaluate it')));
    } catch (err) {
      clear(evalBox, notice('error', err.message));
    }
  }

  let stopPoll = () => {};
  let followUp = null;  // the one-off pass after the final status; stop() cancels it too
  let live = false;
  function stop() {
    live = false;
    stopPoll();
    clearTimeout(followUp);
    followUp = null;
  }
  function restart() {
    stop();
    live = true;
    stopPoll = poll(async () => {
      try {
        const again = await refresh();
        if (!again && live) {
          // One more pass a moment later picks up what the scheduler wrote with the final status.
          clearTimeout(followUp);
          followUp = setTimeout(() => refresh().catch(() => {}), 1500);
        }
        return again;
      } catch (err) {
        clear(actionStatus, notice('error', err.status === 404 ? `There is no job ${id}.` : `Updates stopped: ${err.message}`));
        return err.status !== 404;
      }
    }, 1500);
  }
  restart();
  return () => {
    stop();
    for (const c of charts) c.chart.destroy();
  };
}
