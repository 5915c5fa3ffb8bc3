// @ts-check
// Training curves: several series over steps, drawn by uPlot (vendored in ../vendor/, loaded by
// index.html as a plain script, so there is still no build step). Around the canvas this module
// keeps what a canvas cannot say: a legend with each series' last value, a hover read-out, and the
// same numbers as a text description and a data table, for screen readers and keyboards.

import {h, clear, fmtNum} from './dom.js';

/** @typedef {[number, number]} Point [step, value] */
/** @typedef {{name: string, key: string, points: Point[]}} Series `key` picks the colour class (style.css). */
/** @typedef {{el: HTMLElement, update: (series: Series[], opts?: {xMax?: number}) => void, destroy: () => void}} Chart */

const ASPECT = 260 / 560;  // height per width, as the console's charts always were
const MIN_HEIGHT = 180;
const MAX_HEIGHT = 300;
const FONT = '12px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';
const LABEL_FONT = `600 ${FONT}`;
// Whole steps only on the x axis: 1, 2, 5, 10, 20, 50, ...
const STEP_INCRS = Array.from({length: 10}, (_, e) => [1, 2, 5].map((m) => m * 10 ** e)).flat();

/** The vendored uPlot: its script defines this global before the console's modules run. */
function uPlotClass() {
  return /** @type {typeof import('uplot')} */ (/** @type {any} */ (window).uPlot);
}

/** A y tick's label: exponent notation for tiny values (learning rates), else as many decimals as it has. */
function tickLabel(/** @type {number} */ value, /** @type {number} */ incr) {
  if (incr < 1e-3 && value !== 0) return Number(value.toPrecision(3)).toExponential();
  return String(Number(value.toPrecision(10)));
}

/** The y scale: the data's range padded by 6% (a flat line gets room too), within `bounds` if given. */
function yRange(/** @type {number} */ lo, /** @type {number} */ hi, /** @type {[number, number] | null} */ bounds) {
  if (hi - lo < 1e-9) { lo -= Math.abs(lo) * 0.05 || 0.5; hi += Math.abs(hi) * 0.05 || 0.5; }
  const pad = (hi - lo) * 0.06;
  lo -= pad;
  hi += pad;
  if (bounds) { lo = Math.max(lo, bounds[0]); hi = Math.min(hi, bounds[1]); }  // e.g. accuracy stays in [0, 1]
  return /** @type {[number, number]} */ ([lo, hi]);
}

/** uPlot's data: one x array (every step of any series, sorted) and per series its value there or null. */
function align(/** @type {Series[]} */ series) {
  const steps = [...new Set(series.flatMap((s) => s.points.map((p) => p[0])))].sort((a, b) => a - b);
  const values = series.map((s) => {
    const at = new Map(s.points);
    return steps.map((x) => (at.has(x) ? at.get(x) : null));
  });
  return /** @type {import('uplot').AlignedData} */ ([steps, ...values]);
}

/** The point of `points` nearest to `step`. */
function nearest(/** @type {Point[]} */ points, /** @type {number} */ step) {
  let best = null;
  for (const p of points) if (!best || Math.abs(p[0] - step) < Math.abs(best[0] - step)) best = p;
  return best;
}

/**
 * A chart of series over steps; update(series, {xMax}) redraws it, destroy() lets it go.
 * @param {{title: string, id: string, yLabel?: string, xLabel?: string, bounds?: [number, number] | null}} spec
 * @returns {Chart}
 */
export function createChart({title, id, yLabel = '', xLabel = 'step', bounds = null}) {
  const readout = h('div', {class: 'readout', 'aria-hidden': 'true'});
  const area = h('div', {class: 'chart-area', role: 'img', 'aria-labelledby': `${id}-title ${id}-desc`});
  const desc = h('p', {id: `${id}-desc`, class: 'visually-hidden'});
  const legend = h('ul', {class: 'legend'});
  const tableBody = h('tbody');
  const tableHead = h('tr');
  const el = h('figure', {class: 'chart', id, 'data-chart': title},
    h('figcaption', {id: `${id}-title`}, title),
    area, legend, desc,
    h('details', {class: 'chart-data'}, h('summary', {}, `${title}: data table`),
      h('div', {class: 'table-wrap'}, h('table', {}, h('thead', {}, tableHead), tableBody))));

  /** @type {import('uplot') | null} */
  let plot = null;
  let drawnKeys = '';              // the series the plot was built for: another set builds a new one
  /** @type {Series[]} */
  let shown = [];
  let xRange = /** @type {[number, number]} */ ([0, 1]);
  let last = {series: /** @type {Series[]} */ ([]), xMax: /** @type {number | undefined} */ (undefined)};

  const sizeFor = (/** @type {number} */ width) => ({width, height: Math.round(Math.min(MAX_HEIGHT, Math.max(MIN_HEIGHT, width * ASPECT)))});

  function showReadout(/** @type {import('uplot')} */ u) {
    const idx = u.cursor.idx;
    if (idx === null || idx === undefined) { readout.classList.remove('shown'); return; }
    const step = /** @type {number} */ (u.data[0][idx]);
    readout.textContent = shown.map((s) => {
      const p = nearest(s.points, step);
      return p ? `${s.name}: ${fmtNum(p[1])} (step ${p[0]})` : '';
    }).filter(Boolean).join(' · ');
    readout.classList.add('shown');
  }

  // What the canvas holds, for the tests and anyone inspecting the page: set once uPlot has drawn.
  function markDrawn(/** @type {import('uplot')} */ u) {
    legend.querySelectorAll('li').forEach((li, i) => {
      const values = /** @type {ArrayLike<number | null | undefined>} */ (u.data[i + 1]);
      li.dataset.points = String(Array.from(values).filter((v) => v !== null && v !== undefined).length);
    });
  }

  function build(/** @type {Series[]} */ series) {
    const style = getComputedStyle(el);
    const muted = style.getPropertyValue('--muted').trim() || '#5b6470';
    const line = style.getPropertyValue('--line').trim() || '#d9dee5';
    const colours = [...legend.children].map((li) => getComputedStyle(li).getPropertyValue('--c').trim() || muted);
    const axis = {stroke: muted, font: FONT, labelFont: LABEL_FONT, ticks: {stroke: line, width: 1}};
    const measure = /** @type {CanvasRenderingContext2D} */ (document.createElement('canvas').getContext('2d'));
    measure.font = FONT;  // for the width of the y axis' tick labels
    /** @type {import('uplot').Options} */
    const options = {
      ...sizeFor(area.clientWidth || 560),
      legend: {show: false},  // the legend below is text, with each series' last value
      cursor: {y: false, drag: {x: false, y: false}},  // a read-out, no zoom: the axes stay put while it trains
      scales: {
        x: {time: false, range: () => xRange},
        y: {range: (_u, lo, hi) => yRange(lo, hi, bounds)},
      },
      axes: [
        {...axis, label: xLabel, labelSize: 18, size: 30, incrs: STEP_INCRS, grid: {stroke: line, width: 1, dash: [2, 4]}},
        {...axis, label: yLabel || undefined, labelSize: 20, grid: {stroke: line, width: 1},
          values: (_u, splits, _axis, _space, incr) => splits.map((v) => tickLabel(v, incr)),
          // Wide enough for the longest tick label (a learning rate is longer than a loss).
          size: (_u, values) => (values ? Math.ceil(Math.max(0, ...values.map((v) => measure.measureText(v).width))) + 18 : 50)},
      ],
      series: [{label: xLabel}, ...series.map((s, i) => ({
        label: s.name, stroke: colours[i], width: 2.2, spanGaps: true,  // validation runs are every few steps
        points: {size: 5, fill: colours[i], stroke: colours[i]},
      }))],
      hooks: {setCursor: [showReadout], draw: [markDrawn]},
    };
    return new (uPlotClass())(options, align(series), area);
  }

  /** @param {Series[]} series @param {{xMax?: number}} [opts] xMax: where the x axis ends (the job's total steps) */
  function update(series, {xMax} = {}) {
    last = {series, xMax};
    series = series.filter((s) => s.points.length);
    shown = series;
    const all = series.flatMap((s) => s.points);
    if (!all.length) {
      if (plot) { plot.destroy(); plot = null; drawnKeys = ''; }
      readout.classList.remove('shown');
      clear(area, h('p', {class: 'chart-empty'}, 'No data yet'), readout);
      clear(legend);
      desc.textContent = `${title}: no data yet.`;
      clear(tableHead);
      clear(tableBody);
      return;
    }
    const xs = all.map((p) => p[0]);
    const x0 = Math.min(0, ...xs);
    xRange = [x0, Math.max(xMax || 0, ...xs, x0 + 1)];

    clear(legend, series.map((s) => {
      const end = s.points[s.points.length - 1];
      return h('li', {class: `series-${s.key}`, 'data-series': s.key}, h('span', {class: 'swatch', 'aria-hidden': 'true'}),
        `${s.name} `, h('span', {class: 'legend-last'}, fmtNum(end[1])));
    }));
    const keys = series.map((s) => s.key).join(' ');
    if (plot && keys === drawnKeys) {
      plot.setData(align(series));
    } else {
      if (plot) plot.destroy();
      clear(area, readout);
      plot = build(series);
      drawnKeys = keys;
    }
    desc.textContent = `${title}, ${series.map((s) => {
      const end = s.points[s.points.length - 1];
      return `${s.name}: ${fmtNum(end[1])} at step ${end[0]} (${s.points.length} points)`;
    }).join('; ')}.`;
    renderTable(series);
  }

  function renderTable(/** @type {Series[]} */ series) {
    const steps = [...new Set(series.flatMap((s) => s.points.map((p) => p[0])))].sort((a, b) => a - b);
    const byStep = series.map((s) => new Map(s.points));
    clear(tableHead, h('th', {scope: 'col'}, 'step'), series.map((s) => h('th', {scope: 'col'}, s.name)));
    clear(tableBody, steps.map((step) => h('tr', {}, h('th', {scope: 'row'}, String(step)),
      byStep.map((m) => h('td', {}, m.has(step) ? fmtNum(m.get(step)) : '')))));
  }

  // The canvas has a width in pixels: follow the page's layout (a window resized, a phone turned).
  const resized = new ResizeObserver(([entry]) => {
    const width = Math.floor(entry.contentRect.width);
    if (plot && width > 0 && width !== plot.width) plot.setSize(sizeFor(width));
  });
  resized.observe(area);
  // The colours are painted into the canvas: a switch to dark mode (or back) paints them again.
  const scheme = matchMedia('(prefers-color-scheme: dark)');
  const repaint = () => { drawnKeys = ''; update(last.series, {xMax: last.xMax}); };
  scheme.addEventListener('change', repaint);

  function destroy() {
    resized.disconnect();
    scheme.removeEventListener('change', repaint);
    if (plot) plot.destroy();
    plot = null;
  }

  update([]);
  return {el, update, destroy};
}
