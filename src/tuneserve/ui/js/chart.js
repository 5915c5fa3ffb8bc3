// A small SVG line chart for training curves: several series over steps, axes with round ticks,
// a legend, a hover read-out, and the same numbers as a table for screen readers and keyboards.

import {h, svg, clear, fmtNum} from './dom.js';

const W = 560;
const H = 260;
const M = {top: 12, right: 16, bottom: 34, left: 56};

/** Round tick values covering [lo, hi], about `count` of them, and their labels (as many decimals as the step needs). */
function ticks(lo, hi, count = 5) {
  if (!(hi > lo)) return [[lo, fmtNum(lo, 3)]];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const decimals = Math.max(0, Math.ceil(-Math.log10(step) - 1e-9) + (String(step / mag).includes('.') ? 1 : 0));
  const small = Math.max(Math.abs(lo), Math.abs(hi)) < 1e-3;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    const value = Number(v.toPrecision(12));
    out.push([value, small && value !== 0 ? Number(value.toPrecision(3)).toExponential() : String(Number(value.toFixed(Math.min(decimals, 8))))]);
  }
  return out;
}

/**
 * createChart({title, yLabel, xLabel, id, bounds: [min, max] | null}) -> {el, update(series, {xMax})}
 * series: [{name, key, points: [[step, value], ...]}]; `key` picks the colour class.
 */
export function createChart({title, yLabel = '', xLabel = 'step', id, bounds = null}) {
  const plot = svg('svg', {viewBox: `0 0 ${W} ${H}`, role: 'img', class: 'chart-svg', 'aria-labelledby': `${id}-title ${id}-desc`});
  const desc = h('p', {id: `${id}-desc`, class: 'visually-hidden'});
  const legend = h('ul', {class: 'legend'});
  const readout = h('div', {class: 'readout', 'aria-hidden': 'true'});
  const tableBody = h('tbody');
  const tableHead = h('tr');
  const el = h('figure', {class: 'chart', id, 'data-chart': title},
    h('figcaption', {id: `${id}-title`}, title),
    h('div', {class: 'chart-area'}, plot, readout),
    legend, desc,
    h('details', {class: 'chart-data'}, h('summary', {}, `${title}: data table`),
      h('div', {class: 'table-wrap'}, h('table', {}, h('thead', {}, tableHead), tableBody))));
  let state = {series: [], x: null, y: null};

  function update(series, {xMax} = {}) {
    series = series.filter((s) => s.points.length);
    state.series = series;
    clear(plot);
    clear(legend);
    const all = series.flatMap((s) => s.points);
    if (!all.length) {
      plot.append(svg('text', {x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'chart-empty'}, 'No data yet'));
      desc.textContent = `${title}: no data yet.`;
      clear(tableHead);
      clear(tableBody);
      return;
    }
    const xs = all.map((p) => p[0]);
    const ys = all.map((p) => p[1]);
    const x0 = Math.min(0, ...xs);
    const x1 = Math.max(xMax || 0, ...xs, x0 + 1);
    let y0 = Math.min(...ys);
    let y1 = Math.max(...ys);
    if (y1 - y0 < 1e-9) { y0 -= Math.abs(y0) * 0.05 || 0.5; y1 += Math.abs(y1) * 0.05 || 0.5; }
    const pad = (y1 - y0) * 0.06;
    y0 -= pad; y1 += pad;
    if (bounds) { y0 = Math.max(y0, bounds[0]); y1 = Math.min(y1, bounds[1]); }  // e.g. accuracy stays in [0, 1]
    const X = (v) => M.left + ((v - x0) / (x1 - x0)) * (W - M.left - M.right);
    const Y = (v) => H - M.bottom - ((v - y0) / (y1 - y0)) * (H - M.top - M.bottom);
    state = {series, X, Y, x0, x1};

    const grid = svg('g', {class: 'grid'});
    for (const [t, label] of ticks(y0, y1, 4)) {
      grid.append(svg('line', {x1: M.left, x2: W - M.right, y1: Y(t), y2: Y(t)}));
      grid.append(svg('text', {x: M.left - 6, y: Y(t) + 4, 'text-anchor': 'end', class: 'tick'}, label));
    }
    for (const t of ticks(x0, x1, 6).map(([v]) => v).filter((v) => Number.isInteger(v))) {
      grid.append(svg('line', {x1: X(t), x2: X(t), y1: M.top, y2: H - M.bottom, class: 'xgrid'}));
      grid.append(svg('text', {x: X(t), y: H - M.bottom + 16, 'text-anchor': 'middle', class: 'tick'}, String(t)));
    }
    grid.append(svg('text', {x: (W + M.left) / 2, y: H - 4, 'text-anchor': 'middle', class: 'axis-label'}, xLabel));
    if (yLabel) {
      grid.append(svg('text', {x: 12, y: (H - M.bottom) / 2, transform: `rotate(-90 12 ${(H - M.bottom) / 2})`,
        'text-anchor': 'middle', class: 'axis-label'}, yLabel));
    }
    plot.append(grid);

    for (const s of series) {
      const pts = [...s.points].sort((a, b) => a[0] - b[0]);
      const d = pts.map(([x, y], i) => `${i ? 'L' : 'M'}${X(x).toFixed(1)},${Y(y).toFixed(1)}`).join(' ');
      const g = svg('g', {class: `series series-${s.key}`, 'data-series': s.key, 'data-points': pts.length});
      g.append(svg('path', {d, class: 'line'}));
      if (pts.length <= 60) {
        for (const [x, y] of pts) g.append(svg('circle', {cx: X(x), cy: Y(y), r: pts.length === 1 ? 4 : 2.5}));
      }
      plot.append(g);
      const last = pts[pts.length - 1];
      legend.append(h('li', {class: `series-${s.key}`}, h('span', {class: 'swatch', 'aria-hidden': 'true'}),
        `${s.name} `, h('span', {class: 'legend-last'}, fmtNum(last[1]))));
    }
    plot.append(svg('line', {class: 'cursor', x1: -10, x2: -10, y1: M.top, y2: H - M.bottom}));

    desc.textContent = `${title}, ${series.map((s) => {
      const last = s.points[s.points.length - 1];
      return `${s.name}: ${fmtNum(last[1])} at step ${last[0]} (${s.points.length} points)`;
    }).join('; ')}.`;
    renderTable(series);
  }

  function renderTable(series) {
    const steps = [...new Set(series.flatMap((s) => s.points.map((p) => p[0])))].sort((a, b) => a - b);
    const byStep = series.map((s) => new Map(s.points.map((p) => [p[0], p[1]])));
    clear(tableHead, h('th', {scope: 'col'}, 'step'), series.map((s) => h('th', {scope: 'col'}, s.name)));
    clear(tableBody, steps.map((step) => h('tr', {}, h('th', {scope: 'row'}, String(step)),
      byStep.map((m) => h('td', {}, m.has(step) ? fmtNum(m.get(step)) : '')))));
  }

  // Hover read-out: the values of each series at the nearest step.
  plot.addEventListener('pointermove', (e) => {
    if (!state.series.length || !state.X) return;
    const box = plot.getBoundingClientRect();
    const vx = ((e.clientX - box.left) / box.width) * W;
    const step = state.x0 + ((vx - M.left) / (W - M.left - M.right)) * (state.x1 - state.x0);
    const lines = [];
    let nearestX = null;
    for (const s of state.series) {
      let best = null;
      for (const p of s.points) if (!best || Math.abs(p[0] - step) < Math.abs(best[0] - step)) best = p;
      if (best) { lines.push(`${s.name}: ${fmtNum(best[1])} (step ${best[0]})`); nearestX ??= best[0]; }
    }
    const cursor = plot.querySelector('.cursor');
    if (cursor && nearestX !== null) { cursor.setAttribute('x1', state.X(nearestX)); cursor.setAttribute('x2', state.X(nearestX)); }
    readout.textContent = lines.join(' · ');
    readout.classList.add('shown');
  });
  plot.addEventListener('pointerleave', () => {
    readout.classList.remove('shown');
    const cursor = plot.querySelector('.cursor');
    if (cursor) { cursor.setAttribute('x1', -10); cursor.setAttribute('x2', -10); }
  });

  update([]);
  return {el, update};
}
