// @ts-check
// Models: base models and the fine-tuned models grown from them, as a lineage tree
// (`parent` = the model a job started from, `root` = its base, `fine_tuning_job_id` = the job).

import {api} from '../api.js';
import {h, add, clear, notice, announce, fmtTime, poll, pageTitle} from '../dom.js';

/** @param {HTMLElement} root */
export async function render(root) {
  const box = h('div', {'aria-busy': 'true'}, h('p', {class: 'muted'}, 'Loading models…'));
  const status = h('div', {'aria-live': 'polite'});
  add(root, pageTitle('Models', h('p', {class: 'lede'}, 'Base models, and the fine-tuned models made from them.')), status,
    h('section', {class: 'card', 'aria-labelledby': 'lineage-h'}, h('h2', {id: 'lineage-h'}, 'Lineage'), box));

  let signature = '';
  const refresh = async () => {
    try {
      const list = await api('/v1/models');
      const sig = JSON.stringify(list.data.map((m) => m.id));
      if (sig !== signature) {  // redraw only on change, so keyboard focus stays put
        signature = sig;
        clear(box, tree(list.data, status, () => { signature = ''; refresh(); }));
      }
    } catch (err) {
      clear(box, notice('error', `The models cannot be listed: ${err.message}`));
    }
    box.setAttribute('aria-busy', 'false');
  };
  return poll(refresh, 5000);
}

/**
 * @param {any[]} models
 * @param {HTMLElement} status where a deletion's outcome is shown
 * @param {() => void} changed called after a deletion
 */
function tree(models, status, changed) {
  const ids = new Set(models.map((m) => m.id));
  const children = new Map();
  const tops = [];
  for (const m of models) {
    const parent = m.parent && ids.has(m.parent) ? m.parent : (m.parent && ids.has(m.root) && m.root !== m.id ? m.root : null);
    if (!parent) tops.push(m);
    else children.set(parent, [...(children.get(parent) || []), m]);
  }
  const node = (m) => {
    const kids = children.get(m.id) || [];
    const base = !m.parent;
    return h('li', {class: base ? 'model base' : 'model tuned', 'data-model': m.id},
      h('div', {class: 'model-row'},
        h('span', {class: `badge ${base ? 'badge-base' : 'badge-tuned'}`}, base ? 'base' : 'fine-tuned'),
        h('code', {class: 'model-id wrap'}, m.id),
        h('span', {class: 'model-meta muted small'},
          base ? `owned by ${m.owned_by}` : [
            `from `, h('code', {}, m.parent), m.fine_tuning_job_id ? [' by job ', h('a', {href: `#/jobs/${m.fine_tuning_job_id}`}, m.fine_tuning_job_id)] : null,
            m.created ? ` · ${fmtTime(m.created)}` : ''],
          kids.length ? ` · ${kids.length} fine-tuned` : ''),
        h('span', {class: 'row-actions'},
          h('a', {href: `#/playground?model=${encodeURIComponent(m.id)}`, 'aria-label': `Chat with ${m.id}`}, 'Chat'),
          !base ? h('a', {href: `#/playground?model=${encodeURIComponent(m.id)}&compare=${encodeURIComponent(m.parent)}`,
            'aria-label': `Compare ${m.id} with ${m.parent}`}, 'Compare with parent') : null,
          base ? h('a', {href: `#/jobs/new?model=${encodeURIComponent(m.id)}`, 'aria-label': `Fine-tune ${m.id}`}, 'Fine-tune') : null,
          !base ? h('button', {type: 'button', class: 'link danger', 'aria-label': `Delete ${m.id}`, onclick: async () => {
            if (!confirm(`Remove ${m.id} from serving? Its job stays.`)) return;
            try {
              await api(`/v1/models/${m.id.split('/').map(encodeURIComponent).join('/')}`, {method: 'DELETE'});
              announce(`Deleted ${m.id}`);
              clear(status, notice('ok', `Deleted ${m.id}.`));
              changed();
            } catch (err) { clear(status, notice('error', err.message)); }
          }}, 'Delete') : null)),
      kids.length ? h('ul', {class: 'lineage'}, kids.map((k) => node(k))) : null);
  };
  return h('ul', {class: 'lineage root', 'aria-label': 'Models by lineage'}, tops.map((m) => node(m)));
}
