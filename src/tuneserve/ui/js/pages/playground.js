// @ts-check
// Playground: chat with any model, or with two side by side on the same prompt (a fine-tuned model
// beside its base), with temperature, top_p, max tokens and a system prompt. Answers stream in, and
// each token is coloured by its probability (from logprobs), its alternatives in its tooltip.

import {api, streamChat} from '../api.js';
import {h, add, clear, notice, announce, fmtNum, field, pageTitle} from '../dom.js';

// Probability bands for the token colours, from likely (4) to unlikely (0).
/** @type {[number, number, string][]} [lowest p, band, label] */
const BANDS = [[0.8, 4, '80% or more'], [0.5, 3, '50–80%'], [0.25, 2, '25–50%'], [0.05, 1, '5–25%'], [0, 0, 'under 5%']];

/** @param {number} p */
function band(p) {
  return (BANDS.find(([lo]) => p >= lo) || BANDS[BANDS.length - 1])[1];  // NaN (no logprob) is the lowest band
}

/** @param {HTMLElement} root @param {import('../app.js').Route} route */
export async function render(root, route) {
  const q = route.query;
  const modelA = h('select', {id: 'pg-model-a', name: 'model_a'});
  const modelB = h('select', {id: 'pg-model-b', name: 'model_b'});
  const compare = h('input', {type: 'checkbox', id: 'pg-compare', checked: q.has('compare')});
  const system = h('textarea', {id: 'pg-system', rows: 3, placeholder: 'You are a helpful assistant.'});
  const temperature = h('input', {id: 'pg-temperature', type: 'range', min: 0, max: 2, step: 0.05, value: 0.7});
  const topP = h('input', {id: 'pg-top-p', type: 'range', min: 0.05, max: 1, step: 0.05, value: 1});
  const maxTokens = h('input', {id: 'pg-max-tokens', type: 'number', min: 1, max: 8192, step: 1, value: 128});
  const colour = h('input', {type: 'checkbox', id: 'pg-logprobs', checked: true});
  const tempOut = h('output', {for: 'pg-temperature', class: 'range-value'}, temperature.value);
  const topPOut = h('output', {for: 'pg-top-p', class: 'range-value'}, topP.value);
  temperature.addEventListener('input', () => { tempOut.textContent = temperature.value; });
  topP.addEventListener('input', () => { topPOut.textContent = topP.value; });

  const prompt = h('textarea', {id: 'pg-prompt', rows: 3, placeholder: 'Ask something… (Enter sends, Shift+Enter for a new line)', required: true});
  const send = h('button', {type: 'submit', class: 'primary', id: 'pg-send'}, 'Send');
  const stopButton = h('button', {type: 'button', id: 'pg-stop', disabled: true}, 'Stop');
  const clearButton = h('button', {type: 'button', id: 'pg-clear'}, 'Clear chat');
  const status = h('div', {'aria-live': 'polite', class: 'pg-status'});
  const panesBox = h('div', {class: 'panes'});

  const legend = h('div', {class: 'token-legend', id: 'token-legend'}, h('span', {}, 'Token probability:'),
    BANDS.map(([, b, label]) => h('span', {class: `tok p${b}`}, label)));

  const compareModel = h('div', {class: 'compare-model'}, field('Second model', modelB));
  const settings = h('aside', {class: 'card pg-settings', 'aria-labelledby': 'pg-settings-h'},
    h('h2', {id: 'pg-settings-h'}, 'Settings'),
    field('Model', modelA),
    field('Compare side by side', compare),
    compareModel,
    h('details', {class: 'sampling', id: 'pg-sampling', open: !matchMedia('(max-width: 1000px)').matches},  // folded on phones
      h('summary', {}, 'System prompt and sampling'),
      field('System prompt', system),
      h('div', {class: 'field range'}, h('label', {for: 'pg-temperature'}, 'Temperature ', tempOut), temperature),
      h('div', {class: 'field range'}, h('label', {for: 'pg-top-p'}, 'top_p ', topPOut), topP),
      field('Max tokens', maxTokens),
      field('Colour tokens by likelihood (logprobs)', colour),
      legend));

  const composer = h('form', {class: 'composer', 'aria-label': 'Message'},
    field('Message', prompt), h('div', {class: 'actions'}, send, stopButton, clearButton), status);

  add(root, pageTitle('Playground'), h('div', {class: 'playground'}, settings,
    h('section', {class: 'pg-chat', 'aria-label': 'Conversation'}, panesBox, composer)));

  // A pane: one model's side of the conversation.
  const panes = [];
  function makePane(select, index) {
    const title = h('h2', {class: 'pane-title'});
    const log = h('div', {class: 'messages', role: 'log', 'aria-live': 'polite', 'aria-label': `Answers of model ${index + 1}`},
      h('p', {class: 'muted empty'}, 'Send a message to start.'));
    const el = h('section', {class: 'card pane', 'data-pane': index}, title, log);
    const pane = {select, el, log, title, messages: []};
    pane.setTitle = () => clear(title, h('span', {class: 'visually-hidden'}, `Model ${index + 1}: `), h('code', {class: 'wrap'}, select.value || '—'));
    select.addEventListener('change', () => { pane.setTitle(); syncHash(); });
    pane.setTitle();
    return pane;
  }
  panes.push(makePane(modelA, 0), makePane(modelB, 1));

  function layout() {
    const two = compare.checked;
    compareModel.hidden = !two;
    modelB.disabled = !two;
    clear(panesBox, two ? [panes[0].el, panes[1].el] : [panes[0].el]);
    panesBox.classList.toggle('two', two);
    panes.forEach((p) => p.setTitle());
    syncHash();
  }
  function syncHash() {
    const params = new URLSearchParams();
    if (modelA.value) params.set('model', modelA.value);
    if (compare.checked && modelB.value) params.set('compare', modelB.value);
    history.replaceState(null, '', `#/playground${params.toString() ? `?${params}` : ''}`);
  }
  compare.addEventListener('change', () => {
    if (compare.checked && !modelB.value) modelB.value = defaultCompare(modelA.value);
    layout();
  });

  let models = [];
  function defaultCompare(id) {
    const m = models.find((x) => x.id === id);
    if (m && m.parent) return m.parent;
    const other = models.find((x) => x.id !== id);
    return other ? other.id : id;
  }

  try {
    models = (await api('/v1/models')).data;
    const opts = () => models.map((m) => h('option', {value: m.id}, m.parent ? `${m.id}` : `${m.id} (base)`));
    clear(modelA, opts());
    clear(modelB, opts());
    const wanted = q.get('model');
    if (wanted && !models.some((m) => m.id === wanted)) {
      modelA.append(h('option', {value: wanted}, wanted));  // e.g. a checkpoint: usable, though not listed
    }
    modelA.value = wanted || (models.find((m) => m.parent) || models[0] || {}).id || '';
    const other = q.get('compare');
    if (other && !models.some((m) => m.id === other)) modelB.append(h('option', {value: other}, other));
    modelB.value = other || defaultCompare(modelA.value);
    if (!models.length) clear(status, notice('warn', 'This server lists no models.'));
  } catch (err) {
    clear(status, notice('error', `The models cannot be listed: ${err.message}`));
  }
  layout();

  let controller = null;

  async function ask(pane, userText, signal) {
    const history = [...pane.messages, {role: 'user', content: userText}];
    const messages = system.value.trim() ? [{role: 'system', content: system.value.trim()}, ...history] : history;
    const body = {model: pane.select.value, messages, temperature: Number(temperature.value), top_p: Number(topP.value),
      max_tokens: Number(maxTokens.value) || undefined, stream_options: {include_usage: true}};
    if (colour.checked) { body.logprobs = true; body.top_logprobs = 5; }
    for (const empty of pane.log.querySelectorAll('.empty')) empty.remove();
    pane.log.append(h('div', {class: 'msg user'}, h('span', {class: 'who'}, 'You'), h('div', {class: 'text'}, userText)));
    const text = h('div', {class: 'text answer', 'aria-busy': 'true'});
    const meta = h('div', {class: 'meta muted small'});
    const bubble = h('div', {class: 'msg assistant'}, h('span', {class: 'who'}, 'Assistant'), text, meta);
    pane.log.append(bubble);
    bubble.scrollIntoView({block: 'nearest'});
    let content = '';
    let finish = null;
    let usage = null;
    let tokens = 0;
    let logSum = 0;
    const started = performance.now();
    let first = null;
    try {
      for await (const chunk of streamChat(body, signal)) {
        if (chunk.usage) usage = chunk.usage;
        for (const choice of chunk.choices || []) {
          if (choice.finish_reason) finish = choice.finish_reason;
          const piece = choice.delta && choice.delta.content;
          const lp = choice.logprobs && choice.logprobs.content;
          if (first === null && (piece || lp)) first = performance.now();
          if (lp && lp.length) {
            for (const t of lp) {
              text.append(tokenSpan(t));
              tokens += 1;
              logSum += t.logprob;
            }
            content += piece || '';
          } else if (piece) {
            text.append(document.createTextNode(piece));
            content += piece;
          }
        }
      }
    } catch (err) {
      if (err.name === 'AbortError') finish = 'stopped';
      else text.append(notice('error', err.message));
    } finally {
      text.setAttribute('aria-busy', 'false');
    }
    if (!content && !text.childNodes.length) text.append(h('em', {class: 'muted'}, '(no text)'));
    const seconds = (performance.now() - started) / 1000;
    const count = usage ? usage.completion_tokens : tokens;
    meta.textContent = [
      count ? `${count} tokens` : null, finish ? `finish: ${finish}` : null, `${fmtNum(seconds, 2)} s`,
      first !== null ? `first token ${fmtNum((first - started) / 1000, 2)} s` : null,
      tokens ? `mean token probability ${fmtNum(100 * Math.exp(logSum / tokens), 3)}%` : null].filter(Boolean).join(' · ');
    pane.messages = [...history, {role: 'assistant', content}];
    return finish;
  }

  composer.addEventListener('submit', async (e) => {
    e.preventDefault();
    const userText = prompt.value.trim();
    if (!userText || controller) return;
    const active = compare.checked ? panes : [panes[0]];
    if (active.some((p) => !p.select.value)) { clear(status, notice('error', 'Choose a model first.')); return; }
    controller = new AbortController();
    send.disabled = true;
    stopButton.disabled = false;
    prompt.value = '';
    clear(status, notice('info', `Generating with ${active.map((p) => p.select.value).join(' and ')}…`));
    const results = await Promise.all(active.map((p) => ask(p, userText, controller.signal)));
    controller = null;
    send.disabled = false;
    stopButton.disabled = true;
    clear(status);
    announce(`Answer${active.length > 1 ? 's' : ''} ready (${results.join(', ')})`);
    prompt.focus();
  });
  prompt.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); composer.requestSubmit(); }
  });
  stopButton.addEventListener('click', () => { if (controller) controller.abort(); });
  clearButton.addEventListener('click', () => {
    for (const p of panes) { p.messages = []; clear(p.log); }
    clear(status, notice('info', 'Conversation cleared.'));
    prompt.focus();
  });

  return () => { if (controller) controller.abort(); };
}

function tokenSpan(t) {
  const p = Math.exp(t.logprob);
  const alternatives = (t.top_logprobs || []).filter((a) => a.token !== t.token).slice(0, 5)
    .map((a) => `${JSON.stringify(a.token)} ${fmtNum(100 * Math.exp(a.logprob), 3)}%`);
  const title = `${JSON.stringify(t.token)}: ${fmtNum(100 * p, 3)}%${alternatives.length ? `\nalternatives: ${alternatives.join(', ')}` : ''}`;
  return h('span', {class: `tok p${band(p)}`, 'data-logprob': t.logprob.toFixed(4), title}, t.token);
}
