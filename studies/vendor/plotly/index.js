// The trace types studies/charts/ draws, and nothing else. Keep this list in
// step with the charts: a trace type missing here draws an empty chart.
// parcoords is the strict flavour: its WebGL programs come precompiled, so it
// needs no eval and the pages' Content-Security-Policy can stay without
// 'unsafe-eval'.
var Plotly = require('plotly.js/lib/core');

Plotly.register([
    require('plotly.js/lib/scatter'),
    require('plotly.js/lib/bar'),
    require('plotly.js/lib/contour'),
    require('plotly.js/lib/heatmap'),
    require('plotly.js/src/traces/parcoords/strict'),
]);

module.exports = Plotly;
