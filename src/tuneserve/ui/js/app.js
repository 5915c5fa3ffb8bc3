// @ts-check
// The console's shell: hash routing (#/jobs/ftjob-..., so a reload stays on the page), the
// navigation state, focus after navigation, and the API-key dialog. Each page is a module with
// render(root, route) that may return a cleanup function (to stop its live updates).

import {onKeyNeeded, getKey, setKey} from './api.js';
import {h, notice, clear} from './dom.js';

/** @typedef {{page: string, parts: string[], query: URLSearchParams}} Route The #hash, parsed: #/jobs/ftjob-1?x=1. */
/** @typedef {{render: (root: HTMLElement, route: Route) => Promise<(() => void) | null | undefined>}} Page */

/** @type {Record<string, () => Promise<Page>>} */
const PAGES = {
  files: () => import('./pages/files.js'),
  jobs: () => import('./pages/jobs.js'),
  models: () => import('./pages/models.js'),
  playground: () => import('./pages/playground.js'),
  evals: () => import('./pages/evals.js'),
};
/** @type {Record<string, string>} */
const TITLES = {files: 'Files', jobs: 'Jobs', models: 'Models', playground: 'Playground', evals: 'Evals'};
const DEFAULT = 'jobs';

/** @type {(() => void) | null} */
let cleanup = null;
let renderSeq = 0;

/** '#/jobs/ftjob-1?x=1' -> {page: 'jobs', parts: ['ftjob-1'], query: URLSearchParams} @param {string} hash @returns {Route} */
function parseHash(hash) {
  const raw = hash.replace(/^#\/?/, '');
  const [path, search = ''] = raw.split('?');
  const [page, ...parts] = path.split('/').filter(Boolean).map(decodeURIComponent);
  return {page: page || DEFAULT, parts, query: new URLSearchParams(search)};
}

async function route() {
  if (location.hash && !location.hash.startsWith('#/')) return;  // an in-page anchor, not a route
  const seq = ++renderSeq;
  const r = parseHash(location.hash);
  const main = /** @type {HTMLElement} */ (document.getElementById('main'));
  if (cleanup) { try { cleanup(); } catch { /* the old page is gone either way */ } cleanup = null; }
  for (const a of /** @type {NodeListOf<HTMLElement>} */ (document.querySelectorAll('[data-nav]'))) {
    if (a.dataset.nav === r.page) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (!PAGES[r.page]) {
    clear(main, h('div', {class: 'page-head'}, h('h1', {tabindex: '-1'}, 'Not found')),
      notice('warn', `There is no page “${r.page}”. `, h('a', {href: '#/jobs'}, 'Go to the jobs')));
    document.title = 'Not found · tuneserve';
    main.querySelector('h1')?.focus();
    return;
  }
  document.title = `${TITLES[r.page]} · tuneserve`;
  const module = await PAGES[r.page]();
  if (seq !== renderSeq) return;  // the user navigated again meanwhile
  const root = h('div', {class: `page page-${r.page}`});
  clear(main, root);
  try {
    cleanup = (await module.render(root, r)) || null;
  } catch (err) {
    root.append(notice('error', `This page could not be shown: ${err.message}`));
  }
  if (seq !== renderSeq) { if (cleanup) cleanup(); cleanup = null; return; }
  // Move focus to the page heading after a navigation by the user (not on the first load).
  if (navigated) {
    const heading = root.querySelector('h1');
    if (heading) heading.focus({preventScroll: false});
  }
}

let navigated = false;

function setUpKeyDialog() {
  const dialog = /** @type {HTMLDialogElement} */ (document.getElementById('key-dialog'));
  const input = /** @type {HTMLInputElement} */ (document.getElementById('key-input'));
  const reason = /** @type {HTMLElement} */ (document.getElementById('key-dialog-reason'));
  const defaultReason = reason.textContent;
  /** @type {((key: string | null) => void) | null} */
  let resolver = null;

  /** @param {string | null} message @returns {Promise<string | null>} */
  const open = (message) => new Promise((resolve) => {
    resolver = resolve;
    reason.textContent = message ? `The server says: ${message}. ${defaultReason}` : defaultReason;
    input.value = getKey();
    if (!dialog.open) dialog.showModal();
    input.focus();
  });
  dialog.addEventListener('close', () => {
    const action = dialog.returnValue;
    let key = null;
    if (action === 'save' && input.value.trim()) { key = input.value.trim(); setKey(key); }
    if (action === 'forget') setKey('');
    updateKeyButton();
    if (resolver) { resolver(key); resolver = null; } else if (key || action === 'forget') route();
  });
  document.getElementById('key-button')?.addEventListener('click', () => open(null));
  onKeyNeeded(open);
}

function updateKeyButton() {
  const button = /** @type {HTMLElement} */ (document.getElementById('key-button'));
  button.textContent = getKey() ? 'API key ✓' : 'API key';
  button.setAttribute('aria-label', getKey() ? 'API key (set)' : 'API key (not set)');
}

function start() {
  setUpKeyDialog();
  updateKeyButton();
  document.querySelector('[data-skip]')?.addEventListener('click', (e) => {
    e.preventDefault();
    document.getElementById('main')?.focus();
  });
  window.addEventListener('hashchange', () => { navigated = true; route(); });
  if (!location.hash.startsWith('#/')) history.replaceState(null, '', `#/${DEFAULT}`);
  route();
}

start();
