// Charts whose JSON is embedded in the page (a trial's curve, the comparison).
(function () {
  "use strict";
  document.querySelectorAll('script[type="application/json"][id$="-data"]').forEach((script) => {
    const id = script.id.replace(/-data$/, "");
    const el = document.getElementById(id);
    if (!el) return;
    const body = JSON.parse(script.textContent);
    const note = document.getElementById(id + "-note");
    if (note) note.textContent = body.note || "";
    if (body.empty) {
      const box = document.createElement("div");
      box.className = "chart-empty";
      box.textContent = body.empty;
      el.appendChild(box);
      return;
    }
    const layout = Object.assign({}, body.figure.layout, { autosize: true });
    Plotly.newPlot(el, body.figure.data, layout, { displaylogo: false, responsive: true });
  });
})();
