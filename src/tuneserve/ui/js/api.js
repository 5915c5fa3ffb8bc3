// @ts-check
// The console's only way to the server: tuneserve's public HTTP API, with the user's key when keys are on.
//
// - A 401 asks for a key once (one dialog for all requests waiting), stores it in localStorage, retries.
// - Errors come back as ApiError with OpenAI's error fields (message, code, param) for the page to show.

const KEY_STORAGE = 'tuneserve.apiKey';

/** An error answer of the API (or status 0: the server could not be reached). */
class ApiError extends Error {
  /**
   * @param {string} message
   * @param {number} status
   * @param {{code?: string | null, param?: string | null}} [fields] OpenAI's error fields
   */
  constructor(message, status, {code = null, param = null} = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.param = param;
  }
}

/** @returns {string} */
export function getKey() {
  try { return localStorage.getItem(KEY_STORAGE) || ''; } catch { return ''; }
}

/** @param {string} key an empty key forgets it */
export function setKey(key) {
  try {
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
  } catch { /* storage disabled: the key lives for this page only */ }
  memoryKey = key || '';
}

let memoryKey = '';
const currentKey = () => getKey() || memoryKey;

// The shell registers how to ask for a key (a dialog); requests share one pending prompt.
/** @typedef {(message: string | null) => Promise<string | null> | string | null} KeyPrompt Resolves to a key, or null if none was given. */
/** @type {KeyPrompt} */
let keyPrompt = () => null;
/** @type {Promise<string | null> | null} */
let pendingPrompt = null;

/** @param {KeyPrompt} fn */
export function onKeyNeeded(fn) { keyPrompt = fn; }

/** @param {string} message */
async function askForKey(message) {
  if (!pendingPrompt) {
    pendingPrompt = Promise.resolve(keyPrompt(message)).finally(() => { pendingPrompt = null; });
  }
  const key = await pendingPrompt;
  if (key) setKey(key);
  return key;
}

/** @param {Record<string, string>} [extra] @returns {Record<string, string>} */
function authHeaders(extra = {}) {
  const key = currentKey();
  return key ? {...extra, Authorization: `Bearer ${key}`} : extra;
}

/** @param {Response} response */
async function errorFrom(response) {
  let body = null;
  try { body = await response.json(); } catch { /* not JSON: the status line will do */ }
  const error = (body && body.error) || {};  // OpenAI's envelope: {error: {message, type, param, code}}
  return new ApiError(error.message || `${response.status} ${response.statusText}`, response.status,
    {code: error.code || null, param: error.param || null});
}

/**
 * fetch() an API path. opts: method, json (a body to send as JSON), body, signal, raw (return the Response).
 * Throws ApiError for any non-2xx answer, and for a network failure (status 0).
 * @param {string} path
 * @param {{method?: string, json?: unknown, body?: BodyInit, signal?: AbortSignal, raw?: boolean, headers?: Record<string, string>}} [opts]
 * @returns {Promise<any>} the parsed JSON (null for 204), or the Response when raw
 */
export async function api(path, opts = {}) {
  const {method = opts.json !== undefined ? 'POST' : 'GET', json, body, signal, raw = false, headers = {}} = opts;
  for (let attempt = 0; ; attempt++) {
    let response;
    try {
      response = await fetch(path, {
        method, signal,
        headers: authHeaders(json !== undefined ? {'Content-Type': 'application/json', ...headers} : headers),
        body: json !== undefined ? JSON.stringify(json) : body,
      });
    } catch (err) {
      if (err.name === 'AbortError') throw err;
      throw new ApiError(`The server cannot be reached (${err.message})`, 0);
    }
    if (response.status === 401 && attempt < 3) {
      const error = await errorFrom(response);
      if (await askForKey(error.message)) continue;
      throw error;
    }
    if (!response.ok) throw await errorFrom(response);
    return raw ? response : response.status === 204 ? null : response.json();
  }
}

/** Every page of a list endpoint, following OpenAI's cursor (`after` = the last id, while has_more). */
/**
 * @param {string} path
 * @param {{limit?: number, max?: number}} [opts]
 * @returns {Promise<any[]>}
 */
export async function listAll(path, {limit = 100, max = 2000} = {}) {
  /** @type {any[]} */
  const items = [];
  /** @type {string | null} */
  let after = null;
  for (;;) {
    const sep = path.includes('?') ? '&' : '?';
    const page = await api(`${path}${sep}limit=${limit}${after ? `&after=${encodeURIComponent(after)}` : ''}`);
    items.push(...page.data);
    if (!page.has_more || !page.data.length || items.length >= max) return items;
    after = page.data[page.data.length - 1].id;
  }
}

/**
 * Upload with progress (fetch cannot report upload progress): resolves to the file object.
 * @param {string} path
 * @param {FormData} formData
 * @param {(share: number) => void} [onProgress] the share sent, 0 to 1
 * @returns {Promise<any>}
 */
export function upload(path, formData, onProgress) {
  /** @returns {Promise<any>} */
  const send = () => new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', path);
    const key = currentKey();
    if (key) xhr.setRequestHeader('Authorization', `Bearer ${key}`);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable && onProgress) onProgress(e.loaded / e.total); };
    xhr.onerror = () => reject(new ApiError('The server cannot be reached', 0));
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch { /* keep null */ }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else {
        const e = (body && body.error) || {};
        reject(new ApiError(e.message || `${xhr.status} ${xhr.statusText}`, xhr.status, {code: e.code, param: e.param}));
      }
    };
    xhr.send(formData);
  });
  return send().catch(async (err) => {
    if (err.status === 401 && await askForKey(err.message)) return send();
    throw err;
  });
}

/**
 * Download an API resource as a file (with the key, which a plain link could not send).
 * @param {string} path
 * @param {string} filename used when the answer names none
 * @param {AbortSignal} [signal]
 * @returns {Promise<{size: number, name: string}>} the size in bytes and the name it was saved under
 */
export async function download(path, filename, signal) {
  const response = await api(path, {raw: true, signal});
  const blob = await response.blob();
  const disposition = response.headers.get('Content-Disposition') || '';
  const match = /filename="?([^";]+)"?/.exec(disposition);
  const url = URL.createObjectURL(blob);
  const a = Object.assign(document.createElement('a'), {href: url, download: match ? match[1] : filename});
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  return {size: blob.size, name: a.download};
}

/**
 * POST a streamed chat completion; yields each SSE chunk (parsed JSON) until [DONE].
 * An error before the stream starts throws ApiError, like any request.
 * @param {Record<string, unknown>} body the request, less `stream`
 * @param {AbortSignal} [signal]
 * @returns {AsyncGenerator<any>}
 */
export async function* streamChat(body, signal) {
  const response = await api('/v1/chat/completions', {json: {...body, stream: true}, signal, raw: true});
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    let cut;
    while ((cut = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split('\n')) {
        if (!line.startsWith('data:')) continue;
        const data = line.slice(5).trim();
        if (data === '[DONE]') return;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new ApiError(chunk.error.message || 'stream error', 500, chunk.error);
        yield chunk;
      }
    }
  }
}
