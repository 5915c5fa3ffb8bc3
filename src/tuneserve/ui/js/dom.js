// @ts-check
// Small DOM and formatting helpers shared by the pages. No framework: h() builds elements.

/** @typedef {Node | string | number | boolean | null | undefined} Leaf */
/** @typedef {Leaf | Leaf[] | (Leaf | Leaf[])[] | (Leaf | Leaf[] | (Leaf | Leaf[])[])[]} Child What h() and add() take as children: nested arrays are flattened. */
/** @typedef {Record<string, unknown>} Attrs Attributes; `on...` functions are listeners, `class`, `dataset`, `text` and the form properties are set as such. */

/**
 * h('a', {href: '#/jobs', class: 'x', onclick: fn}, 'text', childNode, [more])
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Attrs | null} [attrs]
 * @param {...Child} children
 * @returns {HTMLElementTagNameMap[K]}
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), /** @type {EventListener} */ (value));
    else if (key === 'class') el.setAttribute('class', String(value));
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key === 'value' || key === 'checked' || key === 'selected' || key === 'indeterminate') /** @type {any} */ (el)[key] = value;
    else if (key === 'text') el.textContent = String(value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

/** @param {Element} el @param {Child[]} children */
function append(el, children) {
  for (const child of /** @type {Child[]} */ (children).flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/**
 * el.append(...) that skips null/false children (native append would write "null").
 * @template {Element} E
 * @param {E} el
 * @param {...Child} children
 * @returns {E}
 */
export function add(el, ...children) {
  append(el, children);
  return el;
}

/**
 * Replace el's children.
 * @template {Element} E
 * @param {E} el
 * @param {...Child} children
 * @returns {E}
 */
export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/**
 * A notice in the page. Errors are alerts (read out at once).
 * @param {'info' | 'error' | 'warn' | 'ok'} kind
 * @param {...Child} children
 */
export function notice(kind, ...children) {
  return h('div', {class: `notice notice-${kind}`, role: kind === 'error' ? 'alert' : 'status'}, ...children);
}

/** Announce a short message to screen readers through the shell's polite live region. @param {string} text */
export function announce(text) {
  const live = document.getElementById('live');
  if (live) live.textContent = text;
}

/** @param {string | null | undefined} status */
export function statusBadge(status) {
  return h('span', {class: `badge status-${status}`}, (status || 'unknown').replace('_', ' '));
}

/** @param {number | null | undefined} seconds Unix time */
export function fmtTime(seconds) {
  if (!seconds) return '—';
  const d = new Date(seconds * 1000);
  return d.toLocaleString(undefined, {year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit'});
}

/** @param {number | null | undefined} seconds */
export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return '—';
  if (seconds < 60) return `${Math.round(seconds)} s`;
  const m = Math.floor(seconds / 60);
  return m < 60 ? `${m} min ${Math.round(seconds % 60)} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** @param {number | null | undefined} n */
export function fmtBytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

/** @param {unknown} x @param {number} [digits] significant digits of a fraction */
export function fmtNum(x, digits = 4) {
  if (x === null || x === undefined || Number.isNaN(x)) return '—';
  if (typeof x !== 'number') return String(x);
  if (Number.isInteger(x)) return x.toLocaleString();
  if (Math.abs(x) >= 1000) return x.toLocaleString(undefined, {maximumFractionDigits: 1});
  if (Math.abs(x) < 0.001 && x !== 0) return x.toExponential(2);
  return Number(x.toPrecision(digits)).toString();
}

/** A definition list from [label, value] pairs; values may be nodes. Empty values are skipped. @param {[string, Child][]} pairs */
export function facts(pairs) {
  return h('dl', {class: 'facts'}, pairs.filter(([, v]) => v !== undefined && v !== null && v !== '')
    .map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

/**
 * A table in its scrolling box.
 * @param {Child[]} headers
 * @param {Child} rows the body's rows
 * @param {{caption?: string, className?: string}} [opts]
 */
export function table(headers, rows, {caption, className} = {}) {
  return h('div', {class: 'table-wrap'},
    h('table', {class: className || ''},
      caption ? h('caption', {}, caption) : null,
      h('thead', {}, h('tr', {}, headers.map((x) => h('th', {scope: 'col'}, x)))),
      h('tbody', {}, rows)));
}

/**
 * Run `fn` now and again `ms` after each run ends, while the page shows; returns stop().
 * A hidden tab skips its turns. fn may return false to stop polling (e.g. a finished job).
 * @param {() => unknown} fn
 * @param {number} ms
 * @returns {() => void}
 */
export function poll(fn, ms) {
  let stopped = false;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let timer;
  const tick = async () => {
    if (stopped) return;
    let again = true;
    if (!document.hidden) {
      try { again = (await fn()) !== false; } catch { again = true; }  // the page shows its own errors
    }
    if (!stopped && again) timer = setTimeout(tick, ms);
  };
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}

/** What changed() last saw drawn into each element: its data, as JSON. @type {WeakMap<Element, string>} */
const drawn = new WeakMap();

/**
 * Whether `value` differs from what was last drawn into `el` (by JSON). Live pages redraw a region
 * only when its data changed, so a keyboard user's focus inside it is not lost on every poll.
 * @param {Element} el
 * @param {unknown} value
 */
export function changed(el, value) {
  const sig = JSON.stringify(value);
  if (drawn.get(el) === sig) return false;
  drawn.set(el, sig);
  return true;
}

let counter = 0;
/** A unique id for label/aria wiring. @param {string} [prefix] */
export function uid(prefix = 'f') { counter += 1; return `${prefix}-${counter}`; }

/**
 * A labelled form field: [label, control] (and an optional hint) wrapped in a div; returns the div.
 * @param {Child} label
 * @param {HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement} control
 * @param {Child} [hint]
 */
export function field(label, control, hint) {
  if (!control.id) control.id = uid('field');
  const hintEl = hint ? h('small', {class: 'hint', id: `${control.id}-hint`}, hint) : null;
  if (hintEl) control.setAttribute('aria-describedby', hintEl.id);
  const wrap = h('div', {class: control.type === 'checkbox' ? 'field check' : 'field'},
    control.type === 'checkbox' ? [control, h('label', {for: control.id}, label)] : [h('label', {for: control.id}, label), control],
    hintEl);
  return wrap;
}

/**
 * A <select> of options given as values or [value, label] pairs; attrs.value is the one selected.
 * @param {(string | [string, string])[]} options
 * @param {Attrs} [attrs]
 */
export function select(options, attrs = {}) {
  return h('select', attrs, options.map((o) => {
    const [value, label] = Array.isArray(o) ? o : [o, o];
    return h('option', {value, selected: attrs.value === value}, label);
  }));
}

/**
 * A page heading that takes focus after navigation, so keyboard and screen-reader users land on it.
 * @param {string} text
 * @param {...Child} extra
 */
export function pageTitle(text, ...extra) {
  return h('div', {class: 'page-head'}, h('h1', {tabindex: '-1'}, text), ...extra);
}
